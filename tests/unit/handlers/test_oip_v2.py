"""oip_v2 decoding without a server: each v2 body becomes the native payload, or a 400 naming
the tensor at fault (wrong datatype or shape, missing, lying about its shape, bad binary)."""

import base64
import json
import struct

import msgspec
import oip_v2
import pytest
from request_error import RequestError

import contract
from tests.unit.conftest import JSON, call
from tests.unit.graph import test_handlers as graph

node_handler = graph.node_handler  # the Cora handler fixture, on a small GCN
META = {"feature_dim": 3, "labels": ["a", "b"]}
NODE = "NodeClassifierHandler"


def t(name, datatype, shape, data=None, **params):
    out = {"name": name, "datatype": datatype, "shape": shape}
    if data is not None:
        out["data"] = data
    if params:
        out["parameters"] = params
    return out


GOOD = [
    t("x", "FP32", [2, 3], [1, 0, 0, 0, 1, 0]),
    t("edge_index", "INT64", [2, 1], [0, 1]),
]


def test_graph_tensors_become_the_native_payload_flat_or_nested():
    flat = oip_v2.decode(NODE, {"inputs": GOOD, "id": "r1"}, META)
    nested = oip_v2.decode(
        NODE,
        {"inputs": [t("x", "FP32", [2, 3], [[1, 0, 0], [0, 1, 0]]), GOOD[1]]},
        META,
    )
    assert (
        flat.payload
        == nested.payload
        == {
            "x": [[1, 0, 0], [0, 1, 0]],
            "edge_index": [[0], [1]],
        }
    )
    assert flat.id == "r1"


def test_binary_tensors_decode_like_json():
    x = struct.pack("<6f", 1, 0, 0, 0, 1, 0)
    ei = struct.pack("<2q", 0, 1)
    head = {
        "inputs": [
            t("x", "FP32", [2, 3], binary_data_size=len(x)),
            t("edge_index", "INT64", [2, 1], binary_data_size=len(ei)),
        ]
    }
    head_bytes = json.dumps(head).encode()
    body, raw = oip_v2.split_binary(head_bytes + x + ei, str(len(head_bytes)), 1 << 20)
    call = oip_v2.decode(NODE, body, META, raw)
    assert call.payload == {"x": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "edge_index": [[0], [1]]}


def test_binary_bytes_are_length_prefixed_and_images_go_to_base64():
    photo = b"\xff\xd8 not really a jpeg"
    raw = struct.pack("<I", len(photo)) + photo
    body = {"inputs": [t("image", "BYTES", [1], binary_data_size=len(raw))]}
    call = oip_v2.decode("ImageClassifierHandler", body, META, raw)
    assert base64.b64decode(call.payload["b64"]) == photo
    assert call.payload["topk"] == 2  # every class, for the probabilities tensor


def test_molecule_and_text_payloads_and_asking_for_forces():
    mol = {
        "inputs": [t("z", "INT64", [2], [1, 1]), t("pos", "FP32", [2, 3], [0, 0, 0, 0, 0, 0.74])],
        "outputs": [{"name": "energy"}, {"name": "forces"}],
    }
    call = oip_v2.decode("MoleculeEnergyHandler", mol, META)
    assert call.payload == {"z": [1, 1], "pos": [[0, 0, 0], [0, 0, 0.74]], "forces": True}
    text = oip_v2.decode(
        "TextClassifierHandler", {"inputs": [t("text", "BYTES", [1], ["hi"])]}, META
    )
    assert text.payload == {"text": "hi"}


@pytest.mark.parametrize(
    ("inputs", "field", "says"),
    [
        ([t("x", "FP64", [2, 3], [0] * 6), GOOD[1]], "x", "datatype 'FP64', expected FP32"),
        ([t("x", "FP32", [2, 4], [0] * 8), GOOD[1]], "x", "shape [2, 4], expected [N, 3]"),
        ([t("x", "FP32", [6], [0] * 6), GOOD[1]], "x", "expected [N, 3]"),
        ([GOOD[0]], "edge_index", "missing input tensor"),
        ([t("x", "FP32", [2, 3], [0] * 5), GOOD[1]], "x", "data has 5 elements; shape [2, 3]"),
        ([t("x", "FP32", [3, 3], [0] * 6), GOOD[1]], "x", "says 9"),
        ([t("x", "FP32", [2, 3], [0, 0, "a", 0, 0, 0]), GOOD[1]], "x", "data[2] = 'a' is not FP32"),
        ([GOOD[0], t("edge_index", "INT64", [2, 1], [0.5, 1])], "edge_index", "is not INT64"),
        ([GOOD[0], t("edge_index", "INT64", [2, 1])], "edge_index", "has no `data`"),
        ([*GOOD, t("y", "FP32", [1], [0])], "y", "unknown input tensor"),
        ([*GOOD, GOOD[0]], "x", "sent twice"),
        ([GOOD[0], t("edge_index", "INT64", [2, -1], [0, 1])], "edge_index", "non-negative"),
        ([], "inputs", "non-empty list"),
        ([{"datatype": "FP32"}], "inputs[0]", "string `name`"),
    ],
)
def test_bad_tensors_get_a_400_naming_the_tensor(inputs, field, says):
    with pytest.raises(RequestError) as e:
        oip_v2.decode(NODE, {"inputs": inputs}, META)
    assert (e.value.code, e.value.field) == (400, field)
    assert says in e.value.problem


def test_graph_classification_needs_exactly_one_of_x_or_atoms():
    both = {"inputs": [*GOOD, t("atoms", "BYTES", [2], ["C", "N"])]}
    with pytest.raises(RequestError, match="exactly one of the tensors x or atoms"):
        oip_v2.decode("GraphClassifierHandler", both, META)


@pytest.mark.parametrize(
    ("raw", "size", "says"),
    [
        (struct.pack("<5f", *[0] * 5), 20, "20 bytes of binary data; shape and FP32 say 24"),
        (struct.pack("<6f", *[0] * 6), 28, "exceeds the 24 bytes left"),
        (struct.pack("<7f", *[0] * 7), 24, "4 bytes after the binary tensors"),
    ],
)
def test_binary_data_that_lies_about_its_size_is_refused(raw, size, says):
    head = {"inputs": [t("x", "FP32", [2, 3], binary_data_size=size), GOOD[1]]}
    with pytest.raises(RequestError, match=says):
        oip_v2.decode(NODE, head, META, raw)


def test_binary_bytes_element_running_past_its_data_is_refused():
    raw = struct.pack("<I", 99) + b"short"
    body = {"inputs": [t("text", "BYTES", [1], binary_data_size=len(raw))]}
    with pytest.raises(RequestError, match="runs past its data"):
        oip_v2.decode("TextClassifierHandler", body, META, raw)


@pytest.mark.parametrize("header", ["abc", "0", "999"])
def test_a_bad_header_length_is_a_400(header):
    with pytest.raises(RequestError) as e:
        oip_v2.split_binary(b'{"inputs": []}', header, 1 << 20)
    assert e.value.field == oip_v2.HEADER


def test_an_oversized_binary_body_is_a_413():
    with pytest.raises(RequestError) as e:
        oip_v2.split_binary(b"x" * 100, "10", 50)
    assert e.value.code == 413


def test_unknown_requested_output_is_refused_and_known_ones_filter():
    with pytest.raises(RequestError, match="unknown output 'energy'"):
        oip_v2.decode(NODE, {"inputs": GOOD, "outputs": [{"name": "energy"}]}, META)
    call = oip_v2.decode(NODE, {"inputs": GOOD, "outputs": [{"name": "label"}]}, META)
    native = {"predictions": [{"node": 0, "label": "a", "probabilities": {"a": 0.9, "b": 0.1}}]}
    response = oip_v2.encode(NODE, native, call, ["a", "b"], "cora_gcn", "1.0")
    assert [o["name"] for o in response["outputs"]] == ["label"]
    assert response["outputs"][0]["data"] == ["a"]


def test_encode_classifier_probabilities_in_label_order():
    call = oip_v2.Call({})
    image = {
        "label": "b",
        "probability": 0.7,
        "top_k": [{"label": "b", "probability": 0.7}, {"label": "a", "probability": 0.3}],
    }
    response = oip_v2.encode("ImageClassifierHandler", image, call, ["a", "b"], "m", "1")
    out = response["outputs"]
    assert out[0] == {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["b"]}
    assert out[1]["data"] == [0.3, 0.7] and out[1]["shape"] == [2]
    msgspec.convert(response, contract.V2InferResponse)  # the documented type (docs/openapi.json)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**response, "id": None}, contract.V2InferResponse)


def test_metadata_lists_the_declared_tensors():
    md = oip_v2.metadata(NODE, META, "cora_gcn", "1.0")
    msgspec.convert(md, contract.V2ModelMetadata)
    assert md["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 3]}
    assert [o["name"] for o in md["outputs"]] == ["node", "label", "probabilities"]
    assert md["outputs"][2]["shape"] == [-1, 2]


def test_every_handler_class_declares_its_tensors():
    assert set(oip_v2.SPECS) == {
        "NodeClassifierHandler",
        "GraphClassifierHandler",
        "MoleculeEnergyHandler",
        "TextClassifierHandler",
        "ImageClassifierHandler",
    }


@pytest.mark.parametrize(
    "module",
    [
        "node_classifier",
        "graph_classifier",
        "molecule_energy",
        "text_classifier",
        "image_classifier",
    ],
)
def test_the_handler_source_names_the_class_kind(module):
    """kind_for_source (what serve/v2_metadata.py reads from a .mar) agrees with the import."""
    import importlib

    from serve.config import ROOT

    source = (ROOT / "handlers" / f"{module}.py").read_text()
    handler = next(
        v
        for v in vars(importlib.import_module(module)).values()
        if isinstance(v, type) and v.__module__ == module and v.__name__.endswith("Handler")
    )
    assert oip_v2.kind_for_source(source) == oip_v2.kind_for(handler)
    with pytest.raises(KeyError):
        oip_v2.kind_for_source("class Other(Base):\n    pass\n")


def test_a_batch_mixing_native_v2_and_bad_v2_answers_each_alone(node_handler):
    """Through the real handler: each v2 request of a batch gets its own answer or 400."""
    native = graph.GOOD_NODE
    x = [v for row in native["x"] for v in row]
    ei = [v for row in native["edge_index"] for v in row]
    v2 = {
        "id": "a",
        "inputs": [
            t("x", "FP32", [3, 5], x),
            t("edge_index", "INT64", [2, 4], ei),
            t("nodes", "INT64", [2], [2, 0]),
        ],
    }
    bad = {"inputs": [t("x", "FP32", [3, 5], x[:-1]), t("edge_index", "INT64", [2, 4], ei)]}
    handler, ctx = node_handler
    bodies = [json.dumps(b).encode() for b in (native, v2, bad, {**native, "nodes": [2, 0]})]
    rest = [{**JSON, "Host": "127.0.0.1"}] * 4  # a REST request (gRPC jobs carry no headers)
    (s0, nat), (s1, got), (s2, err), (s3, nat_nodes) = call(handler, ctx, bodies, rest)
    assert (s0, s1, s3) == (200, 200, 200)
    assert (s2, err["field"]) == (400, "x") and "data has 14 elements" in err["error"]
    assert got["id"] == "a"
    out = {o["name"]: o for o in got["outputs"]}
    preds = nat_nodes["predictions"]
    assert out["node"]["data"] == [p["node"] for p in preds] == [2, 0]
    assert out["label"]["data"] == [p["label"] for p in preds]
    labels = out["probabilities"]["parameters"]["labels"].split(",")
    assert out["probabilities"]["data"] == [p["probabilities"][c] for p in preds for c in labels]
    assert nat["predictions"][2] == preds[0]


def test_a_binary_v2_request_through_the_handler(node_handler):
    x = [v for row in graph.GOOD_NODE["x"] for v in row]
    ei = [v for row in graph.GOOD_NODE["edge_index"] for v in row]
    xb, eb = struct.pack("<15f", *x), struct.pack("<8q", *ei)
    head = json.dumps(
        {
            "inputs": [
                t("x", "FP32", [3, 5], binary_data_size=len(xb)),
                t("edge_index", "INT64", [2, 4], binary_data_size=len(eb)),
            ]
        }
    ).encode()
    headers = [{oip_v2.HEADER: str(len(head))}, {oip_v2.HEADER: str(len(head))}, JSON]
    handler, ctx = node_handler
    bodies = [head + xb + eb, head + xb[:-4] + eb, json.dumps(graph.GOOD_NODE).encode()]
    (s0, got), (s1, err), (s2, nat) = call(handler, ctx, bodies, headers)
    assert (s0, s1, s2) == (200, 400, 200)
    # x short by 4 bytes: x takes 4 of edge_index's, which then has too few left.
    assert err["field"] == "edge_index" and "exceeds the 60 bytes left" in err["error"]
    labels = [p["label"] for p in nat["predictions"]]
    assert {o["name"]: o for o in got["outputs"]}["label"]["data"] == labels


def test_grpc_bytes_arrive_base64_and_are_decoded():
    body = {"inputs": [t("text", "BYTES", [1], [base64.b64encode("café".encode()).decode()])]}
    call = oip_v2.decode("TextClassifierHandler", body, META, base64_bytes=True)
    assert call.payload == {"text": "café"}
    body = {"inputs": [t("text", "BYTES", [1], ["not base64!"])]}
    with pytest.raises(RequestError, match="text: BYTES element is not valid base64"):
        oip_v2.decode("TextClassifierHandler", body, META, base64_bytes=True)


def test_a_grpc_error_is_a_v2_response_with_an_error_output():
    err = RequestError("x", "bad").body()
    out = oip_v2.grpc_error(err, ("cora_gcn", "1.0"))
    assert (out["id"], out["model_name"], out["model_version"]) == ("", "cora_gcn", "1.0")
    assert out["outputs"] == [
        {"name": "error", "datatype": "BYTES", "shape": [1], "data": [json.dumps(err)]}
    ]
