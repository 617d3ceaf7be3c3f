"""The online loop against the real torchserve: register, set-default and retire through the
management API while clients keep calling, with zero failed requests."""

import json
import shutil
import threading
import time
import urllib.error
import urllib.request

import pytest

from online import loop
from online.__main__ import load_config
from online.lineage import Lineage
from serve.client import ManagementClient, token
from serve.server import start
from tests.conftest import mirror
from tests.unit.online.test_loop import online_overrides
from train.qm9.requests import to_request
from train.qm9.run import load_splits

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A torchserve with an empty model store: the loop registers every version itself."""
    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    if shutil.which("java") is None:
        pytest.fail("java is not installed: run scripts/ensure_java.sh")
    store = tmp_path_factory.mktemp("online_store")
    workdir = tmp_path_factory.mktemp("online_ts")
    # No model to wait for: start returns once the management API answers.
    srv = start(store, workdir, [], artifacts=workdir)
    yield srv, store
    srv.stop()


class Clients:
    """Threads that POST real molecules until stopped; every answer is kept."""

    def __init__(self, srv, molecules, threads=3, max_seconds=240):
        self.srv, self.molecules = srv, molecules
        self.results: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, i):
        tok = token("inference", self.srv.key_file)
        k = i
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            body = json.dumps(to_request(self.molecules[k % len(self.molecules)])).encode()
            req = urllib.request.Request(
                f"{self.srv.inference}/predictions/qm9_et",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {tok}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    json.loads(resp.read())
                    got = (resp.status, resp.headers.get("X-Model-Version", ""))
            except urllib.error.HTTPError as e:
                got = (e.code, e.read().decode(errors="replace")[:200])
            except OSError as e:
                got = (0, str(e))
            with self.lock:
                self.results.append(got)
            k += len(self.threads)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def test_hot_swap_under_load_fails_no_request(server, tmp_path):
    srv, store = server
    cfg = load_config(
        [
            *online_overrides(tmp_path),
            f"online.serve.management={srv.management}",
            f"online.serve.key_file={srv.key_file}",
            f"online.serve.model_store={store}",
            f"online.serve.inference={srv.inference}",
        ]
    )
    client = ManagementClient(srv.management, srv.key_file)
    loop.init(cfg)
    first = loop.step(cfg)["record"]
    assert first["promoted"] and client.versions("qm9_et") == {"online-1": True}
    _, _, test_set = load_splits(load_config(online_overrides(tmp_path)))

    with Clients(srv, test_set) as clients:
        while len(clients.results) < 5:  # traffic is flowing before the swap starts
            time.sleep(0.2)
        loop.arrive(cfg)
        loop.arrive(cfg)
        result = loop.step(cfg)
        swapped_at = len(clients.results)
        while len(clients.results) < swapped_at + 10:
            time.sleep(0.2)

    failed = [r for r in clients.results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(clients.results)} requests failed: {failed[:5]}"
    served = [v for _, v in clients.results]
    assert served[0] == "online-1" and served[-1] == "online-2", set(served)
    # Once the new version answered, the old one never did again.
    assert "online-1" not in served[served.index("online-2") + 5 :]
    print(
        f"\nswap: {len(served)} requests, {served.count('online-1')} by v1, "
        f"{served.count('online-2')} by v2, 0 failed"
    )

    record = result["record"]
    assert record["promoted"] and record["parent_version"] == 1 and record["data_version"] == 3
    assert record["swap"]["before"] == {"online-1": True}
    assert record["swap"]["drained"] == {"online-1": 200}
    assert record["swap"]["after"] == {"online-2": True}
    assert client.versions("qm9_et") == {"online-2": True}
    assert sorted(p.name for p in store.glob("*.mar")) == ["qm9_et.online-2.mar"]
    events = [e["event"] for e in Lineage(cfg.online.workdir).read_events()]
    assert events.count("swap") == 2
