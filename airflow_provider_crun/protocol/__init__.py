"""
Crun API semantics without any I/O, and without Airflow.

Pure functions and data in the sans-I/O style of h11, one concern per module:

* :mod:`~.errors`: the protocol's exceptions, with their ``kind`` and whether they are permanent;
* :mod:`~.calls`: the five calls as data, and the fingerprint of a creation;
* :mod:`~.settings`: the ``crun`` connection, validated;
* :mod:`~.envelope`: ``{code, message, data}`` to data or an error;
* :mod:`~.retry`: the one retry predicate and the backoff;
* :mod:`~.jobs`: a task's or detection's phase, and its typed summary;
* :mod:`~.watch`: what every waiter decides the same way;
* :mod:`~.swap`: the multi-face swap input;
* :mod:`~.resume`: resume-or-create.

The transports in :mod:`airflow_provider_crun.hooks` only move bytes and call into this package.
"""

from __future__ import annotations

from airflow_provider_crun.protocol import calls, envelope, errors, jobs, resume, retry, settings, swap, watch

__all__ = ["calls", "envelope", "errors", "jobs", "resume", "retry", "settings", "swap", "watch"]
