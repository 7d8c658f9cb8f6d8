"""What the storage tests store, and how they look at what was stored."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_crun.storage import StoredMedia, store_results

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
TASK = "task_12345678"


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones included, sorted."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def store_into(out: Path, urls: list[str], **kwargs: object) -> list[StoredMedia]:
    """``store_results`` for ``TASK`` into ``file://<out>/``, 10 s per request."""
    kwargs.setdefault("timeout", 10)
    return store_results(urls, crun_task_id=TASK, destination=f"file://{out}/", **kwargs)  # type: ignore[arg-type]
