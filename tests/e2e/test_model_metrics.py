"""The real torchserve exports the handlers' model metrics on its metrics API (:8082/metrics):
each value read back equals what the requests sent and the answers said."""

import time
from collections import Counter

import pytest

from serve.archive import model_version
from serve.metrics import Sample, scrape
from tests.conftest import mirror
from train.graph.data import load_tu
from train.graph.requests import mutag_request

pytestmark = pytest.mark.e2e
MODEL = "mutag_gcn"


def values(samples: list[Sample], name: str, **labels: str) -> dict[tuple, float]:
    """{(label values other than model/version/host): value} of one metric for MODEL."""
    out = {}
    for s in samples:
        if s.name == name and s.labels.get("ModelName") == MODEL:
            assert "ModelVersion" in s.labels and "Hostname" in s.labels
            if all(s.labels.get(k) == v for k, v in labels.items()):
                rest = {k: v for k, v in s.labels.items() if k not in ("ModelName", "ModelVersion")}
                out[tuple(v for k, v in sorted(rest.items()) if k not in ("Hostname", *labels))] = (
                    s.value
                )
    return out


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(values(samples, name, **labels).values())


def settled(server, check, timeout: float = 20):
    """Scrapes until `check(samples)` holds: the frontend reads the worker's metric lines from
    its log stream, a moment after the answer went out."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server.metrics)
        try:
            check(samples)
            return samples
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_builds_version_is_served_and_labels_the_metrics(server, tiny_artifacts, data_root):
    """The .mar's version (the git commit and the weights' hash: serve.archive.model_version),
    not 1.0, is the one the management API shows and the ModelVersion of every metric."""
    version = server.client().describe(MODEL)["modelVersion"]
    assert version == model_version(tiny_artifacts / MODEL) and version != "1.0"
    status, body, _ = server.predict(MODEL, mutag_request(load_tu("MUTAG", data_root, mirror())[0]))
    assert status == 200, body

    def labelled(samples):
        # The handler's metrics (and TorchServe's per-model ones) carry ModelVersion.
        ours = [s for s in samples if s.labels.get("ModelName") == MODEL]
        labelled = {s.labels["ModelVersion"] for s in ours if "ModelVersion" in s.labels}
        assert labelled == {version}, {s.name for s in ours}

    settled(server, labelled)


def test_mutag_metrics_equal_the_requests_and_answers(server, data_root):
    molecules = [load_tu("MUTAG", data_root, mirror())[i] for i in range(0, 40, 4)]
    before = scrape(server.metrics)
    answers = []
    for g in molecules:
        status, body, _ = server.predict(MODEL, mutag_request(g))
        assert status == 200, body
        answers.append(body)
    bad = {**mutag_request(molecules[0]), "atoms": ["C", "Xe"]}
    for _ in range(3):
        assert server.predict(MODEL, bad)[0] == 400
    labels = Counter(a["label"] for a in answers)
    top1 = sum(a["probabilities"][a["label"]] for a in answers)

    def grew(name: str, by: float, **labels: str) -> None:
        after = total(samples, name, **labels) - total(before, name, **labels)
        assert after == pytest.approx(by, abs=1e-4), (name, labels, after, by)

    def check(now: list[Sample]) -> None:
        nonlocal samples
        samples = now
        grew("bundle_inputs_total", len(molecules))
        grew("bundle_input_nodes_total", sum(g.num_nodes for g in molecules))
        grew("bundle_input_edges_total", sum(g.num_edges for g in molecules))
        for label, n in labels.items():
            grew("bundle_predictions_total", n, Label=label)
        grew("bundle_top1_probability_count", len(molecules))
        grew("bundle_top1_probability_sum", top1)
        grew("bundle_request_errors_total", 3, Field="atoms", Code="400")

    samples: list[Sample] = []
    settled(server, check)
    # Every top-1 probability of two classes is at least 0.5: nothing in the buckets below it.
    low = values(samples, "bundle_top1_probability_bucket", le="0.25")
    assert sum(low.values()) == total(before, "bundle_top1_probability_bucket", le="0.25")
