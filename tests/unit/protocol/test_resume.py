"""Resume or create: what a try does with a job an earlier try stored."""

from __future__ import annotations

import json

import pytest

from airflow_provider_crun.protocol import jobs, resume
from airflow_provider_crun.protocol.resume import CreationIntent, StoredJob


@pytest.mark.parametrize(
    ("read", "decision"),
    [
        (None, resume.Resume.GONE),
        (jobs.JobRead(jobs.JobPhase.SUCCEEDED, "success", result={}), resume.Resume.DONE),
        (jobs.JobRead(jobs.JobPhase.FAILED, "failed", failure="no face"), resume.Resume.FAILED),
        (jobs.JobRead(jobs.JobPhase.RUNNING, "pending"), resume.Resume.WAIT),
        (jobs.JobRead(jobs.JobPhase.UNKNOWN, "held-for-review"), resume.Resume.WAIT),
    ],
    ids=["404-gone", "succeeded-done", "failed-recreate", "running-wait", "undocumented-status-wait"],
)
def test_decide(read: jobs.JobRead | None, decision: resume.Resume) -> None:
    assert resume.decide(read) is decision


@pytest.mark.parametrize(
    ("decision", "reattaches"),
    [
        (resume.Resume.CREATE, False),
        (resume.Resume.REQUEST_CHANGED, False),
        (resume.Resume.GONE, False),
        (resume.Resume.FAILED, False),
        (resume.Resume.STALE, False),
        (resume.Resume.WAIT, True),
        (resume.Resume.DONE, True),
    ],
    ids=lambda value: str(value),
)
def test_reattaches(decision: resume.Resume, reattaches: bool) -> None:
    assert decision.reattaches is reattaches


@pytest.mark.parametrize(
    ("stored", "fingerprint", "made_for"),
    [
        (resume.StoredJob("t1", "sha256:aaa"), "sha256:aaa", True),
        (resume.StoredJob("t1", "sha256:aaa"), "sha256:bbb", False),
        (resume.StoredJob("t1", None), "sha256:bbb", True),
    ],
    ids=["same-request", "request-changed", "stored-by-a-release-without-fingerprints"],
)
def test_stored_job_made_for(stored: resume.StoredJob, fingerprint: str, made_for: bool) -> None:
    assert stored.made_for(fingerprint) is made_for


# --------------------------------------------------------------------------------------------
# CreationIntent: a creation call whose try ended before its id was stored

UNFINISHED = {
    "nothing stored, same request -> unfinished": (CreationIntent("fp"), None, "fp", True),
    "nothing stored, other request -> not this one's": (CreationIntent("fp"), None, "other", False),
    "its id was stored -> finished": (CreationIntent("fp"), StoredJob("job_new", "fp"), "fp", False),
    "meant to replace the stored job -> unfinished": (
        CreationIntent("fp", replaces="job_old"),
        StoredJob("job_old", "fp"),
        "fp",
        True,
    ),
    "meant to replace a job since replaced -> finished": (
        CreationIntent("fp", replaces="job_older"),
        StoredJob("job_old", "fp"),
        "fp",
        False,
    ),
}


@pytest.mark.parametrize(
    ("intent", "stored", "fingerprint", "unfinished"), list(UNFINISHED.values()), ids=list(UNFINISHED)
)
def test_creation_intent_unfinished(
    intent: CreationIntent, stored: StoredJob | None, fingerprint: str, unfinished: bool
) -> None:
    assert intent.unfinished(stored, fingerprint) is unfinished


@pytest.mark.parametrize(
    "value",
    [None, "fp", 3, [], {}, {"fingerprint": 1}, {"replaces": "job"}],
    ids=["none", "string", "number", "list", "empty", "fingerprint not a string", "no fingerprint"],
)
def test_creation_intent_from_anything_else_is_none(value: object) -> None:
    assert CreationIntent.from_json(value) is None


def test_creation_intent_round_trips_through_json() -> None:
    intent = CreationIntent("fp", replaces="job_old")
    assert CreationIntent.from_json(json.loads(json.dumps(intent.to_json()))) == intent
