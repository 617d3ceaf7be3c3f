"""Every served model logs, per request, the signals its reference profile holds: the same
statistics, an embedding of the same width, and its prediction; never the request body."""

import json

import pytest

from monitor.drift import DriftDetector
from monitor.reference import Reference, to_arrays
from monitor.tail import Tail
from serve.server import model_names

pytestmark = pytest.mark.e2e
REQUESTS = 24  # the image and BERT models log a quarter of their items (model-config.yaml)


def test_every_model_logs_what_its_reference_holds(
    every_model_server, every_model_store, examples_dir
):
    index = json.loads((examples_dir / "index.json").read_text())
    payload = every_model_server.log_dir.parent / "payload_log"
    tails = {name: Tail(payload / name) for name in model_names(every_model_store)}
    client = every_model_server.client()
    served = {name: client.describe(name)["modelVersion"] for name in tails}
    for tail in tails.values():
        tail.read()  # what other tests of the session sent
    for name in tails:
        entry = index[name]
        body = (examples_dir / entry["file"]).read_bytes()
        for _ in range(REQUESTS):
            status, answer, _ = every_model_server.predict(name, body, entry["content_type"])
            assert status == 200, answer
    for name, tail in tails.items():
        records = tail.read()
        assert records, f"{name} logged none of {REQUESTS} requests"
        assert len(records) <= REQUESTS
        for r in records:
            assert set(r) == {"time", "model", "version", "stats", "embedding", "prediction"}
            assert r["model"] == name and r["version"] == served[name]
        ref = Reference.load(every_model_store / f"{name}.mar")
        window = to_arrays(records)
        assert set(window) == set(ref.signals), name
        for signal in ref.signals:
            assert window[signal].shape[1:] == ref.samples[signal].shape[1:], (name, signal)
        # One example sent again and again is nothing like the training sample.
        tested = DriftDetector(ref, min_samples=1, n_perm=100).check(records)
        assert {s.name for s in tested} == set(ref.signals)
