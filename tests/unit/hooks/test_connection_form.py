"""
The Airflow 3.1 connection form (hook methods) says what the declarative 3.2+ form says, and the
hook offers it to Airflow.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest

from airflow_provider_crun.get_provider_info import get_provider_info
from airflow_provider_crun.hooks import _connection_form
from airflow_provider_crun.hooks.crun import CrunHook


def _declared() -> dict[str, Any]:
    (connection,) = get_provider_info()["connection-types"]
    return connection


class _Field:
    """Records what a wtforms field class was called with."""

    def __init__(self, label: str | None = None, validators: Any = None, **kwargs: Any) -> None:
        self.field_class = type(self)
        self.label = label
        self.validators = validators or []
        self.kwargs = kwargs


class _Optional:
    pass


@pytest.fixture
def fake_wtforms(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    """Stand-ins for wtforms and flask_appbuilder, as Airflow 3.1's api-server provides them."""
    fields = {name: type(name, (_Field,), {}) for name in ("StringField", "IntegerField", "PasswordField")}
    fields["BooleanField"] = type("BooleanField", (_Field,), {})
    wtforms = types.ModuleType("wtforms")
    vars(wtforms).update(fields)
    validators = types.ModuleType("wtforms.validators")
    validators.Optional = _Optional  # type: ignore[attr-defined]
    validators.any_of = lambda values: ("any_of", tuple(values))  # type: ignore[attr-defined]
    fab = types.ModuleType("flask_appbuilder")
    widgets = types.ModuleType("flask_appbuilder.fieldwidgets")
    widgets.BS3TextFieldWidget = type("BS3TextFieldWidget", (), {})  # type: ignore[attr-defined]
    widgets.BS3PasswordFieldWidget = type("BS3PasswordFieldWidget", (), {})  # type: ignore[attr-defined]
    for name, module in {
        "wtforms": wtforms,
        "wtforms.validators": validators,
        "flask_appbuilder": fab,
        "flask_appbuilder.fieldwidgets": widgets,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    return fields


def test_widgets_mirror_conn_fields(fake_wtforms: dict[str, type]) -> None:
    declared = _declared()["conn-fields"]
    widgets = _connection_form.connection_form_widgets()

    assert list(widgets) == list(declared)
    for name, spec in declared.items():
        widget = widgets[name]
        assert widget.label == spec["label"]
        assert widget.kwargs["description"] == spec["description"]
        assert any(isinstance(v, _Optional) for v in widget.validators) == ("null" in spec["schema"]["type"])
        assert widget.kwargs["widget"] is not None
    # Airflow 3.1 drops the whole hook for any field class but these four; a number is text.
    assert widgets["timeout"].field_class is fake_wtforms["StringField"]
    assert widgets["timeout"].kwargs["default"] == str(declared["timeout"]["schema"]["default"])
    assert widgets["max_retries"].field_class is fake_wtforms["IntegerField"]
    assert widgets["max_retries"].kwargs["default"] == declared["max_retries"]["schema"]["default"]


def test_behaviour_mirrors_ui_field_behaviour() -> None:
    declared = _declared()["ui-field-behaviour"]
    behaviour = _connection_form.ui_field_behaviour()

    assert behaviour == {
        "hidden_fields": declared["hidden-fields"],
        "relabeling": declared["relabeling"],
        "placeholders": declared["placeholders"],
    }
    schema = Path(airflow.__file__).parent / "customized_form_field_behaviours.schema.json"
    jsonschema.validate(behaviour, json.loads(schema.read_text()))


def test_widgets_need_wtforms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without wtforms the ImportError names it, which Airflow 3.1 logs as "UI widgets missing"."""
    monkeypatch.setitem(sys.modules, "wtforms", None)
    with pytest.raises(ImportError) as raised:
        _connection_form.connection_form_widgets()
    assert raised.value.name == "wtforms"


def test_the_hook_offers_the_form_to_airflow_3_1(fake_wtforms: dict[str, type]) -> None:
    """3.1's ProvidersManager reads the methods only from the hook class's own ``__dict__``."""
    assert "get_connection_form_widgets" in CrunHook.__dict__
    assert "get_ui_field_behaviour" in CrunHook.__dict__
    assert CrunHook.get_ui_field_behaviour() == _connection_form.ui_field_behaviour()
    widgets = CrunHook.get_connection_form_widgets()
    assert {name: widget.label for name, widget in widgets.items()} == {
        name: spec["label"] for name, spec in _declared()["conn-fields"].items()
    }
