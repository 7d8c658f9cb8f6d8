"""
The OpenLineage pieces: dataset names, the run facets and their published JSON schemas.

A facet's ``_schemaURL`` must point at a schema file shipped in the package, at a ``$defs``
entry that describes every field the facet serializes, and the serialized facet must validate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import resources
from typing import Any
from urllib.parse import urldefrag

import attrs
import jsonschema
import pytest
from openlineage.client.serde import Serde

from airflow_provider_crun import __version__
from airflow_provider_crun.openlineage import facets
from airflow_provider_crun.openlineage.facets import (
    CrunDetectionRunFacet,
    CrunTaskRunFacet,
    detection_lineage,
    task_lineage,
)
from tests.support.crun_answers import DETECT_ID, DETECT_TASK_ID, FACE_0, FACE_1, IMAGE, NEW_FACE, TASK_ID

MULTI = "image-face-swap-multi"

DATASETS = {
    "https: host, path without its slash": (
        "https://cdn.example.com/r/a.png",
        ("https://cdn.example.com", "r/a.png"),
    ),
    "http with a port, query dropped": (
        "http://127.0.0.1:8089/media/input/group.png?faces=3",
        ("http://127.0.0.1:8089", "media/input/group.png"),
    ),
    "credentials never reach the namespace": (
        "https://user:secret@cdn.example.com/a.png?sig=abc",
        ("https://cdn.example.com", "a.png"),
    ),
    "s3: the bucket is the namespace": ("s3://bucket/crun/task_0.png", ("s3://bucket", "crun/task_0.png")),
    "gs: the bucket is the namespace": ("gs://bucket/task_0.png", ("gs://bucket", "task_0.png")),
    "file URI: namespace file, absolute path": (
        "file:///data/out/task_0.png",
        ("file", "/data/out/task_0.png"),
    ),
    "plain absolute path": ("/data/out/task_0.png", ("file", "/data/out/task_0.png")),
}


@pytest.mark.parametrize(("uri", "dataset"), list(DATASETS.values()), ids=list(DATASETS))
def test_task_lineage_dataset_namespace_and_name(uri: str, dataset: tuple[str, str]) -> None:
    lineage = task_lineage(inputs=[uri], outputs=[uri], crun_task_id=TASK_ID, model=MULTI, credits=6)

    assert [(d.namespace, d.name) for d in lineage.inputs] == [dataset]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [dataset]


def test_task_lineage_lists_a_repeated_input_once() -> None:
    lineage = task_lineage(
        inputs=[IMAGE, NEW_FACE, IMAGE], outputs=[], crun_task_id=None, model=MULTI, credits=None
    )

    assert [d.name for d in lineage.inputs] == ["group.png", "new-face.jpg"]


def test_detection_lineage_reads_the_image_and_writes_the_face_crops() -> None:
    lineage = detection_lineage(
        image_url=IMAGE,
        face_links=[FACE_0, FACE_1],
        detect_task_id=DETECT_TASK_ID,
        detect_id=DETECT_ID,
        face_count=2,
    )

    assert [(d.namespace, d.name) for d in lineage.inputs] == [("https://example.com", "group.png")]
    assert [d.name for d in lineage.outputs] == ["detected-face-0.jpg", "detected-face-1.jpg"]
    facet = lineage.run_facets[facets.DETECTION_FACET_KEY]
    assert (facet.detect_task_id, facet.detect_id, facet.face_count) == (DETECT_TASK_ID, DETECT_ID, 2)


def test_detection_lineage_without_an_image_has_no_input() -> None:
    lineage = detection_lineage(
        image_url=None, face_links=[], detect_task_id=None, detect_id=None, face_count=None
    )

    assert lineage.inputs == []
    assert lineage.outputs == []


# --------------------------------------------------------------------------------------------
# The facets' schemas

FACETS = {
    "task, succeeded": CrunTaskRunFacet(crun_task_id=TASK_ID, model=MULTI, credits=6),
    "task, failed before creating": CrunTaskRunFacet(model=MULTI),
    "detection, succeeded": CrunDetectionRunFacet(
        detect_task_id=DETECT_TASK_ID, detect_id=DETECT_ID, face_count=3
    ),
    "detection, failed": CrunDetectionRunFacet(detect_task_id=DETECT_TASK_ID),
}


def shipped_schema(facet: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema file a facet's ``_schemaURL`` names, read from the package, and its ``$defs`` entry."""
    url, fragment = urldefrag(facet._schemaURL)
    file_name = url.rsplit("/", 1)[-1]
    schema = json.loads(resources.files("airflow_provider_crun.openlineage").joinpath(file_name).read_text())
    assert schema["$id"] == url
    assert fragment.startswith("/$defs/")
    return schema, schema["$defs"][fragment.removeprefix("/$defs/")]


@pytest.mark.parametrize("facet", list(FACETS.values()), ids=list(FACETS))
def test_the_schema_url_points_at_this_versions_shipped_schema(facet: Any) -> None:
    name = type(facet).__name__

    assert facet._schemaURL == (
        "https://raw.githubusercontent.com/airflow-provider-crun/airflow-provider-crun/"
        f"v{__version__}/airflow_provider_crun/openlineage/{name}.json#/$defs/{name}"
    )
    schema, definition = shipped_schema(facet)
    assert list(schema["$defs"]) == [name]
    assert definition["allOf"][0] == {
        "$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet"
    }


@pytest.mark.parametrize("facet", list(FACETS.values()), ids=list(FACETS))
def test_the_serialized_facet_validates_against_its_schema(facet: Any) -> None:
    _, definition = shipped_schema(facet)
    own = definition["allOf"][1]
    serialized = json.loads(Serde.to_json(facet))

    jsonschema.validate(serialized, own)
    fields = {field.name for field in attrs.fields(type(facet)) if not field.name.startswith("_")}
    assert set(own["properties"]) == fields
    assert serialized["_schemaURL"] == facet._schemaURL


def test_a_schema_rejects_a_wrong_type() -> None:
    _, definition = shipped_schema(CrunDetectionRunFacet())

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"face_count": "three"}, definition["allOf"][1])


def test_the_openlineage_provider_is_imported_only_when_lineage_is_asked_for() -> None:
    """Importing the operators loads no OpenLineage code (Airflow's provider discovery aside)."""
    script = textwrap.dedent(
        """
        import json
        import sys

        def loaded():
            prefixes = ("openlineage", "airflow.providers.openlineage.", "airflow_provider_crun.openlineage")
            return sorted(m for m in sys.modules if m.startswith(prefixes))

        import airflow_provider_crun.operators.crun
        print("CRUN-MODULES " + json.dumps(loaded()), flush=True)
        from airflow_provider_crun.openlineage.facets import task_lineage
        task_lineage(inputs=[], outputs=[], crun_task_id=None, model="m", credits=None)
        print("CRUN-MODULES " + json.dumps(loaded()), flush=True)
        """
    )

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    # Plugins and providers may print to stdout in the child (Airflow 3.2 does); read only our lines.
    marked = [
        line.removeprefix("CRUN-MODULES ")
        for line in done.stdout.splitlines()
        if line.startswith("CRUN-MODULES ")
    ]
    after_import, after_lineage = (json.loads(line) for line in marked)
    # Airflow's provider discovery may read the provider's metadata; nothing else is loaded.
    assert set(after_import) <= {"airflow.providers.openlineage.get_provider_info"}
    assert "airflow.providers.openlineage.extractors" in after_lineage
