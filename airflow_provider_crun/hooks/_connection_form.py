"""
The Crun connection form for Airflow 3.1, derived from the declarative form in ``get_provider_info``.

Airflow 3.2+ reads ``conn-fields`` and ``ui-field-behaviour`` from the provider info and never calls
the hook's form methods while those are present. Airflow 3.1 ignores both keys and reads only
``get_connection_form_widgets()`` / ``get_ui_field_behaviour()`` on the hook class. These two
functions translate the one declarative definition into what 3.1 expects, so the labels,
placeholders, hidden fields and extra fields are written once.

``wtforms`` and ``flask_appbuilder`` are imported inside the function: Airflow 3.1's api-server
patches (or stubs, when they are not installed) exactly those import paths while it collects the
forms, and a worker never pays for them.
"""

from __future__ import annotations

from typing import Any

# Airflow 3.1's ProvidersManager drops the whole hook (the connection type disappears) if a widget
# is not one of IntegerField, PasswordField, StringField or BooleanField, so a JSON-schema
# "number" becomes a StringField; the hook parses it.


def _connection_type() -> dict[str, Any]:
    from airflow_provider_crun.get_provider_info import HOOK_CLASS, get_provider_info

    for connection in get_provider_info()["connection-types"]:
        if connection["hook-class-name"] == HOOK_CLASS:
            return dict(connection)
    raise LookupError(f"get_provider_info() declares no connection type for {HOOK_CLASS}")


def _types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type", "string")
    return {declared} if isinstance(declared, str) else set(declared)


def _fab_widgets() -> tuple[Any, Any]:
    """FAB's text and password widgets, or ``None`` (wtforms' defaults) when FAB is missing."""
    try:
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    except ImportError:
        return None, None
    return BS3TextFieldWidget(), BS3PasswordFieldWidget()


def connection_form_widgets() -> dict[str, Any]:
    """The ``conn-fields`` of the provider info as wtforms fields (``get_connection_form_widgets``)."""
    from wtforms import BooleanField, IntegerField, PasswordField, StringField
    from wtforms.validators import Optional, any_of

    text_widget, password_widget = _fab_widgets()
    widgets: dict[str, Any] = {}
    for name, spec in _connection_type().get("conn-fields", {}).items():
        schema = spec.get("schema", {})
        types = _types(schema)
        validators = [Optional()] if "null" in types else []
        if "enum" in schema:
            validators.append(any_of([value for value in schema["enum"] if value is not None]))
        kwargs: dict[str, Any] = {"label": spec.get("label", name), "validators": validators}
        if spec.get("description"):
            kwargs["description"] = spec["description"]
        default = schema.get("default")
        if "boolean" in types:
            widgets[name] = BooleanField(default=default, **kwargs)
        elif schema.get("format") == "password":
            widgets[name] = PasswordField(default=default, widget=password_widget, **kwargs)
        elif "integer" in types:
            widgets[name] = IntegerField(default=default, widget=text_widget, **kwargs)
        else:  # string, number: text the hook parses, so the default is text too
            text_default = None if default is None else str(default)
            widgets[name] = StringField(default=text_default, widget=text_widget, **kwargs)
    return widgets


def ui_field_behaviour() -> dict[str, Any]:
    """The ``ui-field-behaviour`` of the provider info in the hook method's shape."""
    behaviour = _connection_type().get("ui-field-behaviour", {})
    return {
        "hidden_fields": list(behaviour.get("hidden-fields", [])),
        "relabeling": dict(behaviour.get("relabeling", {})),
        "placeholders": dict(behaviour.get("placeholders", {})),
    }
