"""
The lineage of a Crun job: the URLs it read in, the files it stored out, and a run facet naming it.

Each run facet's ``_schemaURL`` points at its JSON schema in this package (``<Facet>.json``), at
the release tag of this version, as the Google provider does for ``BigQueryJobRunFacet``. This
module imports the OpenLineage provider at once, so only the operators' lineage methods import it.

.. seealso:: :ref:`howto/storage`
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import attrs
from airflow.providers.common.compat.openlineage.facet import Dataset, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage

from airflow_provider_crun import __version__

#: Where the facet schemas are published: this package's folder, at this version's tag.
SCHEMA_BASE_URL = (
    "https://raw.githubusercontent.com/airflow-provider-crun/airflow-provider-crun/"
    f"v{__version__}/airflow_provider_crun/openlineage"
)
#: The run facet keys, in an event's ``run.facets``.
TASK_FACET_KEY = "crun"
DETECTION_FACET_KEY = "crun_detection"


def schema_url(facet_name: str) -> str:
    """The JSON pointer to ``facet_name``'s definition in its schema file ``<facet_name>.json``."""
    return f"{SCHEMA_BASE_URL}/{facet_name}.json#/$defs/{facet_name}"


@attrs.define
class CrunTaskRunFacet(RunFacet):
    """
    The Crun task behind a task operator's run.

    :param crun_task_id: Crun's task id; ``None`` when the run failed before creating one.
    :param model: The Crun model, e.g. ``image-face-swap-multi``.
    :param credits: What the task cost; ``None`` until it succeeded.
    """

    crun_task_id: str | None = None
    model: str | None = None
    credits: float | None = None

    @staticmethod
    def _get_schema() -> str:
        return schema_url("CrunTaskRunFacet")


@attrs.define
class CrunDetectionRunFacet(RunFacet):
    """
    The Crun face detection behind a ``CrunDetectFacesOperator`` run.

    :param detect_task_id: Crun's id of the detection job; ``None`` before one was created.
    :param detect_id: The ``detect_id`` a multi-face swap uses; ``None`` until the detection succeeded.
    :param face_count: How many faces were found; ``None`` until the detection succeeded.
    """

    detect_task_id: str | None = None
    detect_id: str | None = None
    face_count: int | None = None

    @staticmethod
    def _get_schema() -> str:
        return schema_url("CrunDetectionRunFacet")


def dataset_of(uri: str) -> tuple[str, str]:
    """
    OpenLineage's ``(namespace, name)`` for a URL or a storage URI: ``scheme://host[:port]`` (or
    ``file``) and the path. Credentials and the query string are left out.
    """
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return "file", parts.path or uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}", parts.path.lstrip("/") or "/"


def datasets(uris: Iterable[str]) -> list[Any]:
    """One ``Dataset`` per distinct URI, in order."""
    return [Dataset(*dataset_of(uri)) for uri in dict.fromkeys(uris)]


def task_lineage(
    *, inputs: Iterable[str], outputs: Iterable[str], crun_task_id: str | None, model: str, credits: Any
) -> OperatorLineage:
    """
    A task operator's lineage: the source image and the face targets in, the stored files out.

    :param inputs: The URLs of the task's ``input``, the source image first.
    :param outputs: The stored files (``stored_paths``).
    :param crun_task_id: Crun's task id, if one was created or reattached.
    :param model: The Crun model.
    :param credits: What the task cost, once it succeeded.
    """
    facet = CrunTaskRunFacet(crun_task_id=crun_task_id, model=model, credits=credits)
    return OperatorLineage(
        inputs=datasets(inputs), outputs=datasets(outputs), run_facets={TASK_FACET_KEY: facet}
    )


def detection_lineage(
    *,
    image_url: str | None,
    face_links: Iterable[str],
    detect_task_id: str | None,
    detect_id: str | None,
    face_count: int | None,
) -> OperatorLineage:
    """
    A face detection's lineage: the image in, each detected face's crop out (a multi-face swap
    reads those crops back as the targets of the faces it keeps).

    :param image_url: The image the faces were detected in; ``None`` when it is not known yet.
    :param face_links: The crops of the detected faces, in face id order.
    :param detect_task_id: Crun's id of the detection job, if one was created or reattached.
    :param detect_id: The detection's ``detect_id``, once it succeeded.
    :param face_count: How many faces were found, once it succeeded.
    """
    facet = CrunDetectionRunFacet(detect_task_id=detect_task_id, detect_id=detect_id, face_count=face_count)
    return OperatorLineage(
        inputs=datasets([image_url] if image_url else []),
        outputs=datasets(face_links),
        run_facets={DETECTION_FACET_KEY: facet},
    )
