"""Sphinx configuration of the airflow-provider-crun documentation.

Build: ``.venv/bin/sphinx-build -E -W --keep-going -b html docs docs/_build/html`` (``make docs``).
``-E`` re-reads every page, so a warning is never hidden by a cached environment, and ``-W``
makes every warning fail the build: among them a ``:ref:`` in a package docstring (for example
``.. seealso:: :ref:`howto/operator:CrunDetectFacesOperator```) whose label no page defines.
No network access: intersphinx is off, and every page is generated from this repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

# autodoc imports the package, which imports Airflow; keep Airflow's config and logs out of the
# user's AIRFLOW_HOME and inside the (git-ignored) build folder.
os.environ["AIRFLOW_HOME"] = str(DOCS / "_build" / "airflow-home")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_crun import __version__  # noqa: E402

project = "airflow-provider-crun"
author = "airflow-provider-crun maintainers"
copyright = "the airflow-provider-crun maintainers, Apache License 2.0"
version = release = __version__

# No sphinx.ext.intersphinx: the build must not touch the network. Docstrings are Sphinx style
# (``:param name:``), so napoleon is not needed either.
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
# `single backticks` in a docstring read as code, as in Markdown.
default_role = "literal"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = False
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}

html_theme = "furo"
html_title = f"airflow-provider-crun {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": True,
    "source_repository": "https://github.com/airflow-provider-crun/airflow-provider-crun/",
    "source_branch": "main",
    "source_directory": "docs/",
}
