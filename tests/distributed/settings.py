"""What the distributed suite deploys and runs: emulator arguments, faults, sizes, variables."""

from __future__ import annotations

import os

from tests.support.airflow.scenarios import TRANSIENT_FAULT_MIX

#: Images in the batch (one detection and one swap each); CI may run fewer, see the README.
IMAGES_ENV = "CRUN_DIST_IMAGES"
DEFAULT_IMAGES = 500
#: Set (to 1) by CI: a missing PostgreSQL, Redis or extra fails the suite instead of skipping it.
REQUIRE_ENV = "CRUN_REQUIRE_DISTRIBUTED"
#: Where the figures go (default ``.e2e-results/distributed_results.json``).
RESULTS_ENV = "CRUN_DIST_RESULTS"
#: Images of the slow-swap DAG: each makes one blocking and one deferrable swap of about two minutes.
SLOW_IMAGES = 4
#: Detections and swaps of the batch in flight at once (``max_active_tis_per_dag``).
BATCH_CONCURRENCY = 32

MAIN_CONN = "crun_default"
SLOW_CONN = "crun_slow"
# Swaps long enough to defer (a poll or two), short enough for a batch.
MAIN_ARGS = ("--credits", "10000000", "--detect-delays", "1,2", "--task-delays", "2,5")
# Long Crun tasks: the slow swaps are still running after every kill of the scenario. Results are
# served slowly (10 s per HEAD and per GET), so that storing one takes about 20 s: the worker
# kill finds deferred swaps in their resume method, next to blocking ones.
SLOW_ARGS = ("--credits", "100000", "--task-delays", "20,100", "--fault", "media:slow:delay=10")

# About 5 % of the requests fail, all transiently: the same mix as the SQLite load scenario.
FAULTS = TRANSIENT_FAULT_MIX


def batch_images() -> int:
    """``$CRUN_DIST_IMAGES``, else 500."""
    return int(os.environ.get(IMAGES_ENV, "").strip() or DEFAULT_IMAGES)


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "false", "False")
