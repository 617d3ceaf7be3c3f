"""No request can fail its batch: pathological bodies get their own precise 400, and a forward
pass that one input breaks is retried request by request (issue 13's 503s for whole batches)."""

import json
import subprocess
import sys

import pytest
import torch
from request_error import RequestError
from ts.context import RequestProcessor

from json_batch_handler import loads
from tests.unit.conftest import call
from tests.unit.graph import test_handlers as graph

GOOD_NODE = graph.GOOD_NODE
GOOD = json.dumps(GOOD_NODE).encode()
node_handler = graph.node_handler  # the Cora handler fixture, on a small GCN


def node(x: str) -> bytes:
    """A node request whose feature matrix is the given JSON text."""
    return b'{"x": ' + x.encode() + b', "edge_index": [[0], [0]]}'


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "body", "nested too deeply"),
        (node("[[" + "9" * 5_000 + ", 0, 0, 0, 0]]"), "body", "integer of 5000 digits"),
        (node("[[1e999, 0, 0, 0, 0]]"), "x", "x[0][0] = inf is not finite"),
        (node("[[NaN, 0, 0, 0, 0]]"), "x", "x[0][0] = nan is not finite"),
        (node("[[-Infinity, 0, 0, 0, 0]]"), "x", "x[0][0] = -inf is not finite"),
        (
            node("[[1, 0, 0, 0, 0]]")[:-1] + b', "nodes": [18446744073709551616]}',
            "nodes",
            "out of range",
        ),
        (
            b'{"x": [[1, 0, 0, 0, 0]], "edge_index": [[0], [99999999999999999999]]}',
            "edge_index",
            "edge_index[1][0] = 99999999999999999999 is out of range",
        ),
        (
            b'{"x": [[1, 0, 0, 0, 0]], "x": [[1, 0, 0, 0, 0]], "edge_index": [[0], [0]]}',
            "x",
            "duplicate key 'x'",
        ),
        (node("[[1, 0, 0, 0, 0]]") + b"\x00", "body", "malformed JSON"),
        (
            b'{"x": [[1, 0, 0, 0, 0]], "edge_index": [[0], [0]], "nodes": [[0]]}',
            "nodes",
            "is not an integer",
        ),
        ('{"x": 1}'.encode("utf-16"), "body", "not valid UTF-8"),
        (b"", "body", "empty request body"),
    ],
)
def test_pathological_bodies_get_their_own_400_and_spare_the_batch(node_handler, body, field, says):
    handler, ctx = node_handler
    (good1, good1_body), (status, err), (good2, good2_body) = call(handler, ctx, [GOOD, body, GOOD])
    assert (status, err["field"]) == (400, field)
    assert says in err["error"]
    assert good1 == good2 == 200 and good1_body == good2_body
    assert good1_body["predictions"][0]["node"] == 0


def test_a_utf8_byte_order_mark_is_ignored(node_handler):
    handler, ctx = node_handler
    [(plain, a), (bom, b)] = call(handler, ctx, [GOOD, b"\xef\xbb\xbf" + GOOD])
    assert plain == bom == 200 and a == b


def test_loads_names_what_the_standard_parser_would_raise_bare():
    assert loads('{"a": [1, -2.5e3, 9223372036854775807, "s\\u0000"]}') == {
        "a": [1, -2500.0, 2**63 - 1, "s\x00"]
    }
    assert loads("-" + "9" * 4300) == -int("9" * 4300)
    with pytest.raises(RequestError, match="4301 digits"):
        loads("-" + "9" * 4301)
    with pytest.raises(RequestError, match="duplicate key 'a'"):
        loads('{"b": {"a": 1, "a": 1}}')


def test_an_unnamed_parse_failure_is_that_requests_400(node_handler, monkeypatch):
    handler, ctx = node_handler
    real = handler.parse

    def parse(payload):
        if payload.get("boom"):
            raise KeyError("a cause nobody named yet")
        return real(payload)

    monkeypatch.setattr(handler, "parse", parse)
    out = call(handler, ctx, [GOOD, json.dumps({"boom": 1}).encode(), GOOD])
    assert [s for s, _ in out] == [200, 400, 200]
    assert out[1][1] == {"code": 400, "field": "body", "error": "body: could not be read: KeyError"}


def test_a_forward_that_one_input_breaks_fails_only_that_request(node_handler):
    handler, ctx = node_handler
    model = handler.model
    poison = {**GOOD_NODE, "x": [[7, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]}

    def fragile(x, edge_index):
        # After row normalisation only the poison request has a row [1, 0, 0, 0, 0].
        if bool((x[:, 0] == 1.0).any()):
            raise RuntimeError("an input the model cannot take")
        return model(x, edge_index)

    handler.model = fragile
    out = call(handler, ctx, [GOOD, json.dumps(poison).encode(), GOOD])
    assert [s for s, _ in out] == [200, 500, 200]
    assert out[1][1]["field"] == "model"
    assert out[0][1] == out[2][1] and out[0][1]["predictions"][0]["node"] == 0
    # Alone, the poison request fails too, with the same JSON error and no exception.
    [(status, err)] = call(handler, ctx, [json.dumps(poison).encode()])
    assert status == 500 and err["code"] == 500
    handler.model = model
    assert torch.is_tensor(model(torch.ones(1, 5), torch.zeros(2, 0, dtype=torch.long)))


def test_forward_alone_runs_each_request_by_itself(node_handler):
    handler, ctx = node_handler
    model, sizes = handler.model, []

    def counting(x, edge_index):
        sizes.append(x.size(0))
        return model(x, edge_index)

    handler.model = counting
    handler.config["forward_alone"] = True
    small = {"x": [[1, 0, 0, 0, 0]], "edge_index": [[0], [0]]}
    out = call(handler, ctx, [GOOD, json.dumps(small).encode(), b"{}", GOOD])
    assert [s for s, _ in out] == [200, 200, 400, 200]
    assert sizes == [3, 1, 3]  # three forwards, one per good request, in order
    assert out[0][1] == out[3][1]


def test_a_forward_out_of_memory_is_that_requests_413(node_handler):
    handler, ctx = node_handler
    model = handler.model

    def greedy(x, edge_index):
        if x.size(0) % 3:  # the one-node request, alone (1) or in the batch (3 + 1 + 3)
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")
        return model(x, edge_index)

    handler.model = greedy
    small = {"x": [[1, 0, 0, 0, 0]], "edge_index": [[0], [0]]}
    out = call(handler, ctx, [GOOD, json.dumps(small).encode(), GOOD])
    assert [s for s, _ in out] == [200, 413, 200]
    assert "more memory than" in out[1][1]["error"]


def test_limit_memory_makes_a_too_large_allocation_fail_and_the_process_live():
    # In a child process: the cap stays there. 256 MiB of headroom, then a 1 GiB tensor.
    code = (
        "import sys, torch; sys.path.insert(0, 'handlers')\n"
        "from json_batch_handler import JsonBatchHandler\n"
        "JsonBatchHandler.limit_memory(256)\n"
        "try:\n    torch.ones(2**28)\n"
        "except RuntimeError as e:\n    print('refused', 'alloc' in str(e))\n"
        "print('alive', float(torch.ones(1000).sum()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "True", "alive", "1000.0"]


def test_responses_are_compact_json_bytes_with_the_answers_of_json_dumps(node_handler):
    handler, ctx = node_handler
    [(_, answer)] = call(handler, ctx, [GOOD])
    ctx.request_processor = [RequestProcessor({"Content-Type": "application/json"})] * 2
    raw = handler.handle([{"body": GOOD}, {"body": b"{"}], ctx)
    assert all(isinstance(body, bytes) for body in raw)  # sent as they are by the worker
    assert json.loads(raw[0]) == answer
    assert raw[0] == json.dumps(answer, separators=(",", ":")).encode()
    assert json.loads(raw[1])["field"] == "body"
