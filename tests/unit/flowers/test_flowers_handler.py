"""Image handler in-process: every input form, colour modes, top-k, batching and bad input."""

import base64
import io
import json

import pytest
import torch
from image_classifier import ImageClassifierHandler
from image_request import decode_image
from PIL import Image
from ts.context import RequestProcessor

from tests.unit.conftest import make_context
from train.flowers.models import ImageClassifier, SmallCNN, for_export

LABELS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
JPEG = {"Content-Type": "image/jpeg"}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "multipart/form-data; boundary=x"}


def encode(im: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def photo(seed: int, size=(96, 64)) -> Image.Image:
    """A smooth random colour image (JPEG-friendly), different per seed."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (4, 6, 3), dtype=torch.uint8, generator=gen).numpy()
    return Image.fromarray(small).resize(size, Image.BILINEAR)


ROSE, TULIP = encode(photo(1)), encode(photo(2, (50, 120)))


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("flowers")
    model = ImageClassifier(SmallCNN(3, 5, [8, 16, 32]), 32, [0.5] * 3, [0.25] * 3).eval()
    torch.jit.script(for_export(model, torch.rand(1, 3, 40, 50))).save(str(path / "model.pt"))
    (path / "meta.json").write_text(json.dumps({"labels": LABELS, "decode": {"draft": 256}}))
    h = ImageClassifierHandler()
    ctx = make_context(path, "flowers_cnn", {"max_body_bytes": 200_000, "max_pixels": 1_000_000})
    h.initialize(ctx)
    return h, ctx


def run(handler, rows: list[dict], headers: list[dict]) -> list[tuple[int, dict]]:
    """One TorchServe batch of raw rows (as the worker builds them) through handle()."""
    h, ctx = handler
    ctx.request_processor = [RequestProcessor(dict(x)) for x in headers]
    ctx.request_ids = {i: f"req-{i}" for i in range(len(rows))}
    ctx.metrics.request_ids = ctx.request_ids
    out = h.handle(rows, ctx)
    assert len(out) == len(rows)
    return [(ctx.get_response_status(i)[0] or 200, json.loads(o)) for i, o in enumerate(out)]


def one(handler, row: dict, headers: dict) -> tuple[int, dict]:
    return run(handler, [row], [headers])[0]


def expected(handler, data: bytes) -> torch.Tensor:
    """The scripted model's own probabilities on the independently decoded image."""
    img = decode_image(data, 10**7, 256)
    with torch.no_grad():
        return torch.softmax(handler[0].model([img]), -1)[0]


def check(body: dict, probs: torch.Tensor, k: int) -> None:
    values, index = probs.topk(k)
    assert [t["label"] for t in body["top_k"]] == [LABELS[i] for i in index.tolist()]
    assert [t["probability"] for t in body["top_k"]] == pytest.approx(values.tolist(), abs=1e-5)
    assert (body["label"], body["probability"]) == (
        body["top_k"][0]["label"],
        body["top_k"][0]["probability"],
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


FORMS = {
    "raw-jpeg": ({"body": ROSE}, JPEG),
    "octet-stream": ({"body": bytearray(ROSE)}, {"Content-Type": "application/octet-stream"}),
    "multipart-data": ({"data": bytearray(ROSE)}, FORM),
    "multipart-other-name": ({"upload": bytearray(ROSE)}, FORM),
    "json-parsed": ({"body": {"b64": b64(ROSE)}}, JSON),
    "json-bytes": ({"body": json.dumps({"b64": b64(ROSE)}).encode()}, JSON),
    "tf-serving-style": ({"body": {"image_bytes": {"b64": b64(ROSE)}}}, JSON),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_input_form_equals_the_model_on_the_decoded_photo(handler, form):
    row, headers = FORMS[form]
    status, body = one(handler, row, headers)
    assert status == 200, body
    check(body, expected(handler, ROSE), 3)


@pytest.mark.parametrize(
    "mode", ["L", "RGBA", "P", "LA", "CMYK"], ids=["grey", "rgba", "palette", "grey-alpha", "cmyk"]
)
def test_colour_modes_are_served_as_rgb(handler, mode):
    im = photo(3).convert(mode)
    if mode == "RGBA":
        im.putalpha(Image.linear_gradient("L").resize(im.size))
    data = encode(im, "JPEG" if mode == "CMYK" else "PNG")
    status, body = one(handler, {"body": data}, {"Content-Type": "image/png"})
    assert status == 200, body
    check(body, expected(handler, data), 3)


def test_webp_and_gif_are_decoded(handler):
    for fmt in ("WEBP", "GIF"):
        data = encode(photo(4), fmt)
        status, body = one(handler, {"body": data}, {"Content-Type": f"image/{fmt.lower()}"})
        assert status == 200, (fmt, body)
        check(body, expected(handler, data), 3)


def test_topk_from_field_form_query_header_and_envelope(handler):
    probs = expected(handler, ROSE)
    cases = [
        ({"body": {"b64": b64(ROSE), "topk": 1}}, JSON, 1),
        ({"data": bytearray(ROSE), "topk": bytearray(b"5")}, FORM, 5),
        ({"body": ROSE, "topk": "2", "model_name": "flowers_cnn"}, JPEG, 2),  # /invocations
        ({"body": ROSE}, {**JPEG, "X-TopK": "4"}, 4),
        ({"body": ROSE}, {**JPEG, "X-TopK": "50"}, 5),  # clamped to the classes
    ]
    for row, headers, k in cases:
        status, body = one(handler, row, headers)
        assert status == 200, body
        check(body, probs, k)


def test_vertex_envelope_answers_predictions_in_order(handler):
    payload = {
        "instances": [{"b64": b64(ROSE)}, {"b64": b64(TULIP), "topk": 1}, {"b64": b64(ROSE)}],
        "parameters": {"topk": 2},
    }
    status, body = one(handler, {"body": payload}, JSON)
    assert status == 200
    preds = body["predictions"]
    assert [len(p["top_k"]) for p in preds] == [2, 1, 2]
    check(preds[0], expected(handler, ROSE), 2)
    check(preds[1], expected(handler, TULIP), 1)
    assert preds[2] == preds[0]


def test_batch_of_different_sizes_equals_single_requests(handler):
    rows = [{"body": ROSE}, {"body": TULIP}, {"data": bytearray(TULIP)}]
    headers = [JPEG, JPEG, FORM]
    singles = [one(handler, r, h) for r, h in zip(rows, headers)]
    batched = run(handler, rows, headers)
    for (s1, b1), (s2, b2) in zip(singles, batched):
        assert s1 == s2 == 200
        assert b1["label"] == b2["label"]
        assert b1["probability"] == pytest.approx(b2["probability"], abs=1e-5)


BIG = encode(photo(5, (1200, 1000)), "PNG")  # 1.2 MP: over max_pixels=1e6
BAD = [
    ({"body": b""}, JPEG, 400, "body"),
    ({"body": b"GIF89a but not really"}, JPEG, 400, "body"),
    ({"body": ROSE[: len(ROSE) // 2]}, JPEG, 400, "body"),  # truncated JPEG
    ({"body": {"b64": "@@not base64@@"}}, JSON, 400, "b64"),
    ({"body": {"b64": b64(b"plain text")}}, JSON, 400, "b64"),
    ({"body": {"image": 5}}, JSON, 400, "image"),
    ({"body": {"topk": 2}}, JSON, 400, "b64"),
    ({"body": BIG}, JPEG, 413, "body"),
    ({"body": b"\xff" * 200_001}, JPEG, 413, "body"),  # over max_body_bytes
    ({"body": {"b64": "A" * 300_000}}, JSON, 413, "b64"),
    ({"body": ROSE}, {"Content-Type": "text/plain"}, 400, "Content-Type"),
    ({"body": {"b64": b64(ROSE), "topk": 0}}, JSON, 400, "topk"),
    ({"body": ROSE}, {**JPEG, "X-TopK": "two"}, 400, "X-TopK"),
    ({"data": bytearray(b"2")}, FORM, 400, "data"),  # form without an image
    ({"a": bytearray(ROSE), "b": bytearray(ROSE)}, FORM, 400, "data"),
    ({"body": {"instances": [{"b64": b64(ROSE)}, {"b64": "!!"}]}}, JSON, 400, "instances[1].b64"),
    ({"body": {"instances": [{"b64": b64(ROSE)}] * 17}}, JSON, 413, "instances"),
    (
        {"body": {"instances": [{"b64": b64(ROSE)}], "parameters": {"topk": -1}}},
        JSON,
        400,
        "parameters.topk",
    ),  # noqa: E501
]


@pytest.mark.parametrize("row, headers, code, field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_fails_alone_in_its_batch(handler, row, headers, code, field):
    results = run(handler, [{"body": ROSE}, row, {"body": TULIP}], [JPEG, headers, JPEG])
    status, err = results[1]
    assert (status, err["code"], err["field"]) == (code, code, field), err
    assert err["error"].startswith(field)
    assert results[0][0] == results[2][0] == 200
    check(results[0][1], expected(handler, ROSE), 3)


def test_metrics_add_pixels_and_bytes_of_each_photo(handler, metric_lines):
    metric_lines()
    out = run(handler, [{"body": ROSE}, {"data": bytearray(TULIP)}], [JPEG, FORM])
    lines = metric_lines()
    assert [s for s, _ in out] == [200, 200]
    pixels = sum(decode_image(d, 10**7, 256).shape[1:].numel() for d in (ROSE, TULIP))
    assert [v for m, _, v, _ in lines if m == "bundle_input_pixels_total"] == [pixels]
    assert [v for m, _, v, _ in lines if m == "bundle_input_bytes_total"] == [
        len(ROSE) + len(TULIP)
    ]
    labels = {d["Label"]: v for m, _, v, d in lines if m == "bundle_predictions_total"}
    assert labels == {lab: [b["label"] for _, b in out].count(lab) for lab in labels}
    top1 = sorted(v for m, _, v, _ in lines if m == "bundle_top1_probability")
    assert top1 == pytest.approx(sorted(b["probability"] for _, b in out))
