"""Worker faults under load (issue 13, section 2): SIGKILL a worker of each graph model while
clients send its real payload pool; TorchServe must restart it, fail only what was in flight,
and answer every later request with 200. The figures come from `make chaos`
(benchmarks/faults.py); this checks the behaviour, with generous bounds."""

import pytest

from benchmarks.faults import kill_under_load
from serve.metrics import REQUESTS, per_model, scrape
from serve.server import start
from tests.conftest import GRAPH_MODELS
from train.core.pools import write_pools

pytestmark = pytest.mark.e2e
CLIENTS = 2


@pytest.fixture(scope="module")
def server(graph_store, tiny_artifacts, tmp_path_factory):
    """A torchserve of its own: the session's server must not see these restarts (tests that
    count worker restarts in its log expect none)."""
    srv = start(graph_store, tmp_path_factory.mktemp("faults_ts"), list(GRAPH_MODELS))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def graph_pool(tmp_path_factory):
    """A small real payload pool for each graph model, written as `make pools` does."""
    out = tmp_path_factory.mktemp("fault_pool")
    write_pools(out, list(GRAPH_MODELS), size=20, seed=3)
    return out


@pytest.mark.parametrize("model", GRAPH_MODELS)
def test_killed_worker_is_restarted_and_only_in_flight_requests_fail(server, graph_pool, model):
    before = per_model(scrape(server.metrics), model).get(REQUESTS, 0)
    row = kill_under_load(
        server, model, graph_pool, clients=CLIENTS, window=8, kill_at=2, ready_timeout=90
    )
    # A new READY worker came (kill_under_load raises after ready_timeout otherwise), and
    # TorchServe's own log says the worker died and was started again.
    assert row["restart_logged"], row
    # Every client had at most one request in flight when the worker died; only those fail,
    # each with an HTTP error status (no connection dropped, none left hanging).
    assert row["failed"] <= CLIENTS, row
    assert row["connection_failures"] == 0, row
    assert row["failed_started_after_kill"] == 0, row
    assert all(int(code) >= 500 for code in row["failed_codes"]), row
    assert row["recovery_s"] < 30, row
    assert row["requests"] > 10 * CLIENTS, row
    # The frontend counted the load: the requests really reached this model.
    assert per_model(scrape(server.metrics), model).get(REQUESTS, 0) > before
