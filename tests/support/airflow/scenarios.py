"""
What the end-to-end suite deploys: emulator backends, the swap DAGs, and the fault matrix.

Every scenario that counts requests gets its own emulator process behind its own ``crun``
connection, so two runs in flight never share counters. The connections are environment
variables of the Airflow components, so every backend must be known before Airflow starts; this
module is that list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_crun.testing.emulator import FaultRule

# Recognisable, so the secret audit can grep for it.
API_KEY = "crun-e2e-SECRET-key-2f9c1a"
WRONG_KEY = "crun-e2e-WRONG-key-9b3d70"
SECRETS = (API_KEY, WRONG_KEY)

# Default connection extras: a generous request timeout, a few retries of transient failures.
CONN_EXTRA: Mapping[str, Any] = {"timeout": 10, "max_retries": 4}


@dataclass(frozen=True)
class Backend:
    """
    One emulator process and the ``crun`` connection pointing at it.

    :param conn_id: The Airflow connection id (``AIRFLOW_CONN_<CONN_ID>``).
    :param args: Extra emulator CLI arguments (delays, credits).
    :param conn_key: The API key the connection sends (the emulator accepts only :data:`API_KEY`).
    :param conn_extra: The connection's extras.
    """

    conn_id: str
    args: tuple[str, ...] = ()
    conn_key: str = API_KEY
    conn_extra: Mapping[str, Any] = field(default_factory=lambda: dict(CONN_EXTRA))


@dataclass(frozen=True)
class SwapDag:
    """
    A DAG of ``tests/e2e/dags/e2e_crun_swap_dags.py``: detect -> swap (stores the result) -> report.

    :param swap_input: ``detection`` (the detect task's XCom), ``detect_id`` (templated
        ``detect_id`` and ``image_url``, so a mismatch reaches Crun) or ``expired_detection``
        (the detect task's XCom with ``expires_at`` replaced by ``params.expires_at``).
    """

    dag_id: str
    conn_id: str
    deferrable: bool
    retries: int = 2
    retry_delay: int = 3
    swap_input: str = "detection"

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "conn_id": self.conn_id,
            "deferrable": self.deferrable,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "swap_input": self.swap_input,
        }


# ---------------------------------------------------------------------------------------------
# Fixed backends and DAGs

# Enough credits for the 200-image load run on top of the happy paths.
DEFAULT = Backend("crun_default", args=("--credits", "100000"))
# Long task delays: the swaps stay deferred (or blocked) long enough to kill something under them.
RESTART = Backend("crun_restart", args=("--task-delays", "6,14"))
CRASH = Backend("crun_crash", args=("--task-delays", "4,16"))

BLOCKING_HAPPY = SwapDag("e2e_crun_multi_face_swap_blocking", DEFAULT.conn_id, deferrable=False)
RESTART_DAG = SwapDag("e2e_crun_triggerer_restart", RESTART.conn_id, deferrable=True)
# retries=1 with a short delay: the crashed try is retried at once, and the retry must reattach.
CRASH_DAG = SwapDag("e2e_crun_worker_crash", CRASH.conn_id, deferrable=False, retries=1, retry_delay=2)

# Durability (issue 14). A worker crash whose retry starts after the detection looks expired: the
# retry_delay leaves time to age the detection's XCom between the kill and the retry.
EXPIRED_RETRY = Backend("crun_expired_retry", args=("--task-delays", "4,16"))
EXPIRED_RETRY_DAG = SwapDag(
    "e2e_crun_retry_after_detection_expiry",
    EXPIRED_RETRY.conn_id,
    deferrable=False,
    retries=1,
    retry_delay=10,
)
# A fresh try given an expired detection: refused before any request.
EXPIRED_FRESH = Backend("crun_expired_fresh")
EXPIRED_FRESH_DAG = SwapDag(
    "e2e_crun_fresh_try_expired_detection",
    EXPIRED_FRESH.conn_id,
    deferrable=False,
    swap_input="expired_detection",
)
# A permanent error answered to a trigger's poll: the swap stays deferred long enough to set it live.
TRIGGER_422 = Backend("crun_trigger_422", args=("--task-delays", "3,40"))
TRIGGER_422_DAG = SwapDag("e2e_crun_trigger_poll_422", TRIGGER_422.conn_id, deferrable=True, retries=2)

# The secret audit's own activity: a deferrable run that succeeds, and one sending the wrong key.
AUDIT = Backend("crun_audit", args=("--task-delays", "1,2"))
AUDIT_WRONG_KEY = Backend("crun_audit_wrong_key", conn_key=WRONG_KEY)
AUDIT_DAG = SwapDag("e2e_crun_audit_happy", AUDIT.conn_id, deferrable=True)
AUDIT_WRONG_KEY_DAG = SwapDag("e2e_crun_audit_wrong_key", AUDIT_WRONG_KEY.conn_id, deferrable=True)


# ---------------------------------------------------------------------------------------------
# The fault matrix

READ_ENDPOINTS = ("detect-face-result", "TaskInfo")
CREATION_ENDPOINTS = ("detect-face-image", "CreateTask")
# Creation calls rejected before anything was created: the hook may re-send these.
REJECTION_KINDS = ("429", "455", "body_error")


#: About 5 % of a batch's requests fail, all transiently: rejections of the creation calls (nothing
#: is created, so re-sending is safe) and 500s, malformed bodies and dropped connections on reads.
TRANSIENT_FAULT_MIX: tuple[FaultRule, ...] = (
    FaultRule("detect-face-image", "429", probability=0.03, retry_after=1),
    FaultRule("detect-face-image", "455", probability=0.02),
    FaultRule("CreateTask", "429", probability=0.03, retry_after=1),
    FaultRule("CreateTask", "455", probability=0.02),
    *(
        FaultRule(endpoint, kind, probability=probability)
        for endpoint in ("detect-face-result", "TaskInfo")
        for kind, probability in (("500", 0.02), ("malformed", 0.015), ("drop", 0.015))
    ),
)


def rules(endpoints: tuple[str, ...], kind: str, times: int, **options: Any) -> tuple[FaultRule, ...]:
    """The same fault on several endpoints, the first ``times`` requests of each."""
    return tuple(FaultRule(endpoint=endpoint, kind=kind, times=times, **options) for endpoint in endpoints)


@dataclass(frozen=True)
class FaultCase:
    """
    One run of the swap flow against its own emulator with faults injected.

    :param id: Readable id (pytest id, DAG id and connection id derive from it).
    :param faults: Fault rules set on the emulator before the run.
    :param deferrable: Wait in the triggerer (async reads) or on the worker (sync reads).
    :param failed_task: ``None`` if the run must succeed, else the task that must fail on its
        first try although retries are configured.
    :param message: Text the failed task's log must contain (Crun's or the operator's message).
    :param create_requests: ``CreateTask`` requests that got past the 429/455 rejections.
    :param tasks_created: Tasks the emulator created (and billed).
    :param detections_created: Detections the emulator created (and billed).
    :param requests: Exact request counts of some endpoints, faulted requests included: a
        permanent error is sent once, neither the hook nor an Airflow retry sends it again.
    """

    id: str
    faults: tuple[FaultRule, ...] = ()
    deferrable: bool = True
    failed_task: str | None = None
    message: str | None = None
    create_requests: int = 1
    tasks_created: int = 1
    detections_created: int = 1
    requests: Mapping[str, int] = field(default_factory=dict)
    swap_input: str = "detection"
    # Tasks take 3 s: the trigger fires well after the deferring worker exited (apache/airflow#72716).
    emulator_args: tuple[str, ...] = ("--task-delays", "1,2")
    conn_key: str = API_KEY
    conn_extra: Mapping[str, Any] = field(default_factory=lambda: dict(CONN_EXTRA))
    conf: Mapping[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.id.replace("-", "_")

    @property
    def backend(self) -> Backend:
        return Backend(f"crun_fault_{self.slug}", self.emulator_args, self.conn_key, self.conn_extra)

    @property
    def dag(self) -> SwapDag:
        return SwapDag(
            f"e2e_crun_fault_{self.slug}",
            self.backend.conn_id,
            deferrable=self.deferrable,
            swap_input=self.swap_input,
        )


def _transient_read_cases() -> list[FaultCase]:
    # A slow answer is not an error, so nothing re-reads it: it fires once per endpoint.
    kinds: dict[str, tuple[int, dict[str, Any]]] = {
        "429": (2, {"retry_after": 1}),
        "455": (2, {}),
        "500": (2, {}),
        "malformed": (2, {}),
        "slow": (1, {"delay": 2}),
        "drop": (2, {}),
    }
    return [
        FaultCase(
            f"reads-{kind}-{mode}",
            rules(READ_ENDPOINTS, kind, times, **options),
            deferrable=mode == "deferrable",
        )
        for kind, (times, options) in kinds.items()
        for mode in ("deferrable", "blocking")
    ]


TWO_FACES = "http://127.0.0.1/media/input/pair.png?faces=2"
NEW_FACE = "http://127.0.0.1/media/input/new-face.png?faces=1"
# The operator's message when a creation call failed after it may have created the job.
UNKNOWN_CREATION = "may have reached Crun"

#: The batch example's bound on Crun jobs of each kind in flight, in this suite (its default is 16).
BATCH_CONCURRENCY = 8

FAULT_CASES: tuple[FaultCase, ...] = (
    *_transient_read_cases(),
    # Rejections of creation calls: nothing was created, so the hook re-sends them.
    FaultCase(
        "create-429",
        rules(CREATION_ENDPOINTS, "429", 2, retry_after=1),
        requests={"detect-face-image": 3, "CreateTask": 3},
    ),
    FaultCase(
        "create-455", rules(CREATION_ENDPOINTS, "455", 2), requests={"detect-face-image": 3, "CreateTask": 3}
    ),
    FaultCase(
        "create-body-429", rules(("CreateTask",), "body_error", 2, code=429), requests={"CreateTask": 3}
    ),
    FaultCase(
        "create-slow",
        rules(CREATION_ENDPOINTS, "slow", 1, delay=2),
        requests={"detect-face-image": 1, "CreateTask": 1},
    ),
    # The creation may have reached Crun: never re-sent, and the task must not be retried either,
    # or a second (billed) task is created.
    FaultCase(
        "create-500",
        rules(("CreateTask",), "500", 1),
        failed_task="swap_faces",
        message=UNKNOWN_CREATION,
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "create-malformed",
        rules(("CreateTask",), "malformed", 1),
        failed_task="swap_faces",
        message=UNKNOWN_CREATION,
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "create-drop",
        rules(("CreateTask",), "drop", 1),
        failed_task="swap_faces",
        message=UNKNOWN_CREATION,
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "create-timeout",
        rules(("CreateTask",), "slow", 1, delay=6),
        failed_task="swap_faces",
        message=UNKNOWN_CREATION,
        conn_extra={"timeout": 2, "max_retries": 4},
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "detect-500",
        rules(("detect-face-image",), "500", 1),
        failed_task="detect_faces",
        message=UNKNOWN_CREATION,
        create_requests=0,
        tasks_created=0,
        requests={"detect-face-image": 1, "CreateTask": 0},
    ),
    # Permanent errors: Crun's message in the log, no retry, no credit wasted.
    FaultCase(
        "auth-401",
        failed_task="detect_faces",
        message="API key missing or invalid",
        conn_key=WRONG_KEY,
        create_requests=0,
        tasks_created=0,
        detections_created=0,
        requests={"detect-face-image": 1, "CreateTask": 0},
    ),
    FaultCase(
        "credits-402",
        failed_task="swap_faces",
        message="insufficient credits",
        # One credit: the detection (1 credit) goes through, the swap (6 credits) is refused.
        emulator_args=("--task-delays", "1,2", "--credits", "1"),
        tasks_created=0,
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "crun-422-image-url",
        failed_task="swap_faces",
        message="image_url does not match the detected image",
        swap_input="detect_id",
        tasks_created=0,
        conf={
            "image_url": TWO_FACES,
            "swap_image_url": "http://127.0.0.1/media/input/another-photo.png?faces=2",
            "faces": {"0": NEW_FACE, "1": NEW_FACE},
        },
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "crun-422-unknown-face",
        failed_task="swap_faces",
        message="face 7 not found in detection",
        swap_input="detect_id",
        tasks_created=0,
        conf={"image_url": TWO_FACES, "faces": {"0": NEW_FACE, "1": NEW_FACE, "7": NEW_FACE}},
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "task-fail-deferrable",
        rules(("CreateTask",), "task_fail", 1),
        failed_task="swap_faces",
        message="generation failed",
        requests={"CreateTask": 1},
    ),
    FaultCase(
        "task-fail-blocking",
        rules(("CreateTask",), "task_fail", 1),
        deferrable=False,
        failed_task="swap_faces",
        message="generation failed",
        requests={"CreateTask": 1},
    ),
    # Refused by the operator before any request: the run never reaches CreateTask.
    FaultCase(
        "input-unknown-face",
        failed_task="swap_faces",
        message="Face id 9 in faces was not detected",
        create_requests=0,
        tasks_created=0,
        conf={"faces": {"9": NEW_FACE}},
        requests={"CreateTask": 0},
    ),
)

BACKENDS: tuple[Backend, ...] = (
    DEFAULT,
    RESTART,
    CRASH,
    EXPIRED_RETRY,
    EXPIRED_FRESH,
    TRIGGER_422,
    AUDIT,
    AUDIT_WRONG_KEY,
    *(case.backend for case in FAULT_CASES),
)
SWAP_DAGS: tuple[SwapDag, ...] = (
    BLOCKING_HAPPY,
    RESTART_DAG,
    CRASH_DAG,
    EXPIRED_RETRY_DAG,
    EXPIRED_FRESH_DAG,
    TRIGGER_422_DAG,
    AUDIT_DAG,
    AUDIT_WRONG_KEY_DAG,
    *(case.dag for case in FAULT_CASES),
)
EXAMPLE_DAGS = (
    "example_crun_multi_face_swap",
    "example_crun_use_swapped_image",
    "example_crun_batch_face_swap",
    "example_crun_task_sensor",
)
