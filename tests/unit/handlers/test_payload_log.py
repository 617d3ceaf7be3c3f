"""The payload log in-process: what a record holds, sampling, rotation, and that it never fails
a request; and the monitor's tail reading it across rotations."""

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from graph_classifier import GraphClassifierHandler
from node_classifier import NodeClassifierHandler

from graph_request import graph_stats
from monitor.tail import Tail
from tests.unit.conftest import call, make_context, make_model_dir
from tests.unit.graph.test_handlers import ATOMS, BONDS, GOOD_MOL, GOOD_NODE, LABELS
from train.graph.models import GCN, GraphGCN


def logged(handler) -> list[dict]:
    """The handler's records, once its writer thread has written every queued batch."""
    handler.payload_log.flush()
    return lines(handler.payload_log.folder)


def lines(folder: Path) -> list[dict]:
    return [
        json.loads(ln) for f in sorted(folder.glob("*.jsonl*")) for ln in f.read_text().splitlines()
    ]


def node_handler(tmp_path, monkeypatch, **cfg):
    monkeypatch.setenv("BUNDLE_PAYLOAD_DIR", str(tmp_path / "payload"))
    torch.manual_seed(0)
    meta = {"feature_dim": 5, "normalize": "row_sum", "labels": LABELS}
    model_dir = make_model_dir(tmp_path / "cora", GCN(5, 4, 3, 0.5), meta)
    handler = NodeClassifierHandler()
    ctx = make_context(model_dir, "cora_gcn", {"max_nodes": 10, "max_edges": 20, **cfg})
    handler.initialize(ctx)
    return handler, ctx


@pytest.fixture
def graph_handler(tmp_path, monkeypatch):
    monkeypatch.setenv("BUNDLE_PAYLOAD_DIR", str(tmp_path / "payload"))
    torch.manual_seed(0)
    meta = {"feature_dim": 7, "normalize": "none", "labels": ["neg", "pos"]}
    meta |= {"atom_labels": ATOMS, "edge_labels": BONDS}
    model_dir = make_model_dir(tmp_path / "mutag", GraphGCN(7, 8, 2, 2, 0.1), meta)
    handler = GraphClassifierHandler()
    ctx = make_context(model_dir, "mutag_gcn", {"max_nodes": 6, "max_edges": 12})
    handler.initialize(ctx)
    return handler, ctx


def test_a_node_record_holds_stats_embedding_and_labels_not_the_payload(tmp_path, monkeypatch):
    handler, ctx = node_handler(tmp_path, monkeypatch)
    request = {**GOOD_NODE, "nodes": [2, 0]}
    [(status, body)] = call(handler, ctx, [request])
    assert status == 200
    assert handler.payload_log.folder == tmp_path / "payload" / "cora_gcn"
    [record] = logged(handler)  # warm-up batches are not logged
    assert set(record) == {"time", "model", "version", "stats", "embedding", "prediction"}
    x = torch.tensor(GOOD_NODE["x"], dtype=torch.float)
    x = x / x.sum(-1, keepdim=True)
    edge_index = torch.tensor(GOOD_NODE["edge_index"])
    assert record["stats"] == pytest.approx(graph_stats(x, edge_index))
    assert record["stats"]["nodes"] == 3 and record["stats"]["degree"] == pytest.approx(4 / 3)
    embedding = handler.model.embed(x, edge_index)[[2, 0]].mean(0)
    assert record["embedding"] == pytest.approx(embedding.tolist(), abs=1e-4)
    assert record["prediction"] == [LABELS.index(p["label"]) for p in body["predictions"]]


def test_only_good_requests_are_logged_one_record_each(graph_handler):
    handler, ctx = graph_handler
    bad = {**GOOD_MOL, "atoms": ["Xe", "C", "O"]}
    out = call(handler, ctx, [GOOD_MOL, bad, {"instances": [GOOD_MOL, GOOD_MOL]}])
    assert [s for s, _ in out] == [200, 400, 200]
    records = logged(handler)
    assert len(records) == 3 and {r["model"] for r in records} == {"mutag_gcn"}
    assert records[0]["prediction"] == ["neg", "pos"].index(out[0][1]["label"])
    assert len(records[0]["embedding"]) == 16  # sum and mean readouts of 8 channels


def test_sampling_rate_zero_logs_nothing(tmp_path, monkeypatch):
    handler, ctx = node_handler(tmp_path, monkeypatch, payload_log_rate=0.0)
    assert call(handler, ctx, [GOOD_NODE])[0][0] == 200
    assert handler.payload_log is None and not (tmp_path / "payload").exists()


def test_rotation_keeps_the_log_bounded_and_the_tail_loses_nothing(tmp_path, monkeypatch):
    cfg = {"payload_log_max_bytes": 1500, "payload_log_backups": 1}
    handler, ctx = node_handler(tmp_path, monkeypatch, **cfg)
    tail, read = Tail(handler.payload_log.folder), 0
    for _ in range(40):
        call(handler, ctx, [GOOD_NODE])
        handler.payload_log.flush()
        read += len(tail.read())
    files = list(handler.payload_log.folder.glob("*.jsonl*"))
    assert len(files) == 2  # the live file and one backup
    assert all(f.stat().st_size <= 1500 for f in files)
    assert read == 40  # every record, though the files rotated under the reader


def test_a_failing_record_never_fails_the_request(graph_handler, monkeypatch):
    handler, ctx = graph_handler

    def broken(item):
        raise RuntimeError("boom")

    monkeypatch.setattr(handler, "drift_stats", broken)
    out = call(handler, ctx, [GOOD_MOL, GOOD_MOL])
    assert [s for s, _ in out] == [200, 200] and "label" in out[0][1]
    assert logged(handler) == [] and handler.payload_log.dropped == 1


def test_a_full_queue_skips_batches_instead_of_waiting(graph_handler):
    handler, ctx = graph_handler
    plog, gate = handler.payload_log, threading.Event()
    plog.queue.maxsize = 1
    real = plog.write
    plog.write = lambda *job: gate.wait(30) and real(*job)  # a writer that is slow, for now
    try:
        started = time.monotonic()
        out = [call(handler, ctx, [GOOD_MOL])[0][0] for _ in range(4)]
        assert out == [200] * 4 and time.monotonic() - started < 10  # nobody waited
        assert plog.skipped >= 2  # one batch in the writer, one queued, the others skipped
    finally:
        gate.set()
    assert 1 <= len(logged(handler)) <= 2


def test_an_unwritable_folder_turns_the_log_off(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BUNDLE_PAYLOAD_DIR", str(blocker))
    torch.manual_seed(0)
    meta = {"feature_dim": 5, "normalize": "row_sum", "labels": LABELS}
    handler = NodeClassifierHandler()
    ctx = make_context(make_model_dir(tmp_path / "m", GCN(5, 4, 3, 0.5), meta), "cora_gcn")
    handler.initialize(ctx)
    assert handler.payload_log is None and call(handler, ctx, [GOOD_NODE])[0][0] == 200
