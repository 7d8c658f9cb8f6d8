"""Provider metadata read by Airflow's ``ProvidersManager`` through the entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_crun import __version__

HOOK_CLASS = "airflow_provider_crun.hooks.crun.CrunHook"


def get_provider_info() -> dict[str, Any]:
    """
    Return the provider's registration record.

    The connection form is declarative (``conn-fields`` / ``ui-field-behaviour``), the Airflow 3.2+
    replacement for the deprecated ``get_connection_form_widgets`` hook methods.
    """
    return {
        "package-name": "airflow-provider-crun",
        "name": "Crun",
        "description": "`Crun <https://crun.ai>`__ face detection and face swap, from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Crun",
                "external-doc-url": "https://docs.crun.ai",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Crun", "python-modules": ["airflow_provider_crun.hooks.crun"]}],
        "operators": [
            {"integration-name": "Crun", "python-modules": ["airflow_provider_crun.operators.crun"]}
        ],
        "sensors": [{"integration-name": "Crun", "python-modules": ["airflow_provider_crun.sensors.crun"]}],
        "triggers": [{"integration-name": "Crun", "python-modules": ["airflow_provider_crun.triggers.crun"]}],
        "extra-links": ["airflow_provider_crun.operators.crun.CrunResultLink"],
        "connection-types": [
            {
                "connection-type": "crun",
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Crun",
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "Timeout of one HTTP request to Crun.",
                        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": (
                            "Blocking calls: retries of a transient failure (429, 455, 5xx on reads). "
                            "Deferred waits: failed polls in a row before the trigger gives up."
                        ),
                        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 0},
                    },
                    "proxy": {
                        "label": "Proxy URL",
                        "description": (
                            "An http(s) proxy for calls to Crun. Empty: HTTPS_PROXY, HTTP_PROXY and "
                            "NO_PROXY decide, in workers and triggerer alike."
                        ),
                        "schema": {"type": ["string", "null"], "default": None},
                    },
                    "min_balance": {
                        "label": "Minimum balance (credits)",
                        "description": (
                            "Before creating a Crun job (never before reattaching to one), fail without "
                            "a retry if the balance is below this. Empty: no check."
                        ),
                        "schema": {"type": ["number", "null"], "default": None, "minimum": 0},
                    },
                    "ca_bundle": {
                        "label": "CA bundle path",
                        "description": (
                            "A CA bundle file or folder, on every worker and triggerer, that both "
                            "transports trust for Crun (e.g. behind a TLS-inspecting proxy)."
                        ),
                        "schema": {"type": ["string", "null"], "default": None},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {"host": "https://api.crun.ai", "password": "Crun API key"},
                },
            }
        ],
    }
