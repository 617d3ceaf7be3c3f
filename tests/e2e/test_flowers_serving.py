"""The real torchserve serving flowers_vit and flowers_cnn: every input form on real photos,
served top-k equal to the scripted model's own output, batching, and every bad input."""

import base64
import io
import json
import urllib.error
import urllib.request
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from serve.archive import build_mar
from serve.client import http, token
from serve.server import start
from tests.schemas import check_response
from train.flowers.data import ImageSet, decode_image

pytestmark = pytest.mark.e2e
MODELS = ["flowers_vit", "flowers_cnn"]


@pytest.fixture(scope="module")
def flowers(tiny_run, tmp_path_factory):
    """Tiny runs of both models on a few real photos per class, archived and served."""
    cfgs = {}
    for name in MODELS:
        art, cfgs[name] = tiny_run(name)
    store = tmp_path_factory.mktemp("flowers_store")
    for name in MODELS:
        build_mar(name, art, store)
    server = start(store, tmp_path_factory.mktemp("flowers_ts"), MODELS, artifacts=art)
    data = ImageSet(cfgs["flowers_vit"].data, cfgs["flowers_vit"].seed)
    photos = [data.paths[i].read_bytes() for i in data.split["test"]]
    yield server, photos, data.classes
    server.stop()


def post(server, name: str, body: bytes, ctype: str, path: str = "", **headers):
    """POSTs to /predictions/<name> (or `path`); returns (status, JSON body, headers)."""
    url = f"{server.inference}{path or f'/predictions/{name}'}"
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    req.add_header("Authorization", f"Bearer {token('inference', server.key_file)}")
    for key, value in headers.items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, answer, got = resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        status, answer, got = e.code, json.loads(e.read()), dict(e.headers)
    check_response(name, status, answer)  # the generated schema of the model's answers
    return status, answer, got


def multipart(**fields: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body as `curl -F name=@file` sends it."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        head = f'Content-Disposition: form-data; name="{name}"'
        if name != "topk":
            head += f'; filename="{name}.jpg"\r\nContent-Type: image/jpeg'
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


MODEL_CACHE: dict[Path, torch.jit.ScriptModule] = {}


def scripted_probs(server, name: str, data: bytes) -> torch.Tensor:
    """The exported model's own softmax on the photo, decoded by the training reader."""
    path = server.artifacts / name / "model.pt"
    if path not in MODEL_CACHE:
        MODEL_CACHE[path] = torch.jit.load(str(path)).eval()
    model = MODEL_CACHE[path]
    with torch.no_grad():
        return torch.softmax(model([decode_image(data, 24_000_000, 256)]), -1)[0]


def assert_matches(body: dict, probs: torch.Tensor, labels: list[str], k: int = 3) -> None:
    """The served top k are the model's k most probable classes, with its probabilities.

    Exact up to float noise between a batched and a single forward (2e-5), so a near-tie
    between two classes of a barely trained model cannot make the test flaky.
    """
    top = body["top_k"]
    assert len(top) == k and (body["label"], body["probability"]) == (
        top[0]["label"],
        top[0]["probability"],
    )
    served = {t["label"]: t["probability"] for t in top}
    for label, p in served.items():
        assert p == pytest.approx(float(probs[labels.index(label)]), abs=2e-5), (label, probs)
    assert [t["probability"] for t in top] == sorted(served.values(), reverse=True)
    others = [float(probs[i]) for i, label in enumerate(labels) if label not in served]
    assert all(p <= min(served.values()) + 2e-5 for p in others), (top, probs)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("name", MODELS)
def test_every_input_form_equals_the_scripted_model(flowers, name):
    server, photos, labels = flowers
    for data in photos[::5]:
        probs = scripted_probs(server, name, data)
        form, ctype = multipart(data=data)
        answers = [
            post(server, name, data, "image/jpeg"),
            post(server, name, data, "application/octet-stream"),
            post(server, name, form, ctype),
            post(server, name, json.dumps({"b64": b64(data)}).encode(), "application/json"),
        ]
        for status, body, _ in answers:
            assert status == 200, body
            assert_matches(body, probs, labels)


def test_vertex_envelope_and_topk_everywhere(flowers):
    server, photos, labels = flowers
    a, b = photos[0], photos[-1]
    pa, pb = scripted_probs(server, "flowers_vit", a), scripted_probs(server, "flowers_vit", b)
    envelope = {
        "instances": [{"b64": b64(a)}, {"b64": b64(b), "topk": 1}],
        "parameters": {"topk": 5},
    }
    status, body, _ = post(server, "flowers_vit", json.dumps(envelope).encode(), "application/json")
    assert status == 200, body
    assert_matches(body["predictions"][0], pa, labels, 5)
    assert_matches(body["predictions"][1], pb, labels, 1)

    form, ctype = multipart(data=a, topk=b"2")
    assert_matches(post(server, "flowers_vit", form, ctype)[1], pa, labels, 2)
    assert_matches(
        post(server, "flowers_vit", a, "image/jpeg", **{"X-TopK": "4"})[1], pa, labels, 4
    )
    # TorchServe forwards query parameters on /invocations (not on /predictions).
    path = "/invocations?model_name=flowers_vit&topk=5"
    status, body, _ = post(server, "flowers_vit", a, "image/jpeg", path=path)
    assert status == 200, body
    assert_matches(body, pa, labels, 5)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grey_alpha_and_palette_photos(flowers, mode):
    server, photos, labels = flowers
    with Image.open(io.BytesIO(photos[3])) as im:
        im = im.convert(mode)
        if mode == "RGBA":
            im.putalpha(Image.linear_gradient("L").resize(im.size))
        buf = io.BytesIO()
        im.save(buf, "PNG")
    data = buf.getvalue()
    status, body, _ = post(server, "flowers_vit", data, "image/png")
    assert status == 200, body
    assert_matches(body, scripted_probs(server, "flowers_vit", data), labels)


@pytest.mark.parametrize("long_side", [640, 2400])
def test_full_size_photos_are_served_like_the_model_decodes_them(flowers, long_side):
    """Uploads larger than the mirror's 256 px copies, as the original Flickr photos are:
    640 px decodes at full size, 2400 px through JPEG draft (1/4 scale or less)."""
    server, photos, labels = flowers
    for data in photos[::4]:
        with Image.open(io.BytesIO(data)) as im:
            scale = long_side / max(im.size)
            big = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=90)
        upload = buf.getvalue()
        for name in MODELS:
            status, body, _ = post(server, name, upload, "image/jpeg")
            assert status == 200, body
            assert_matches(body, scripted_probs(server, name, upload), labels)


def test_concurrent_photos_are_batched_and_each_gets_its_own_answer(flowers):
    server, photos, labels = flowers
    jobs = (photos * 4)[:24]
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda d: post(server, "flowers_cnn", d, "image/jpeg"), jobs))
    for data, (status, body, _) in zip(jobs, results):
        assert status == 200, body
        assert_matches(body, scripted_probs(server, "flowers_cnn", data), labels)
    sizes = [int(h.get("X-Batch-Size", h.get("x-batch-size", 0))) for _, _, h in results]
    assert max(sizes) > 1, f"no request was batched: {sizes}"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height with one tiny IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
        )

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def worker_pid(server, name: str) -> int:
    status, raw = http(f"{server.management}/models/{name}", token("management", server.key_file))
    assert status == 200
    [worker] = json.loads(raw)[0]["workers"]
    assert worker["status"] == "READY"
    return worker["pid"]


def bad_cases(photo: bytes) -> list[tuple[str, bytes, str, int, str]]:
    form, ctype = multipart(data=b"this is not a photo")
    return [
        ("zero-bytes", b"", "image/jpeg", 400, "body"),
        ("not-an-image", b"<html>hello</html>", "image/jpeg", 400, "body"),
        ("truncated-jpeg", photo[: len(photo) // 3], "image/jpeg", 400, "body"),
        ("bad-base64", b'{"b64": "***not base64***"}', "application/json", 400, "b64"),
        (
            "base64-of-text",
            json.dumps({"b64": b64(b"hello")}).encode(),
            "application/json",
            400,
            "b64",
        ),
        ("bomb-30MP", png_header_only(6000, 5000), "image/png", 413, "body"),
        ("over-max-body", b"\xff\xd8" + b"\0" * (9 * 1024 * 1024), "image/jpeg", 413, "body"),
        ("multipart-not-image", form, ctype, 400, "data"),
        ("wrong-type", photo, "text/plain", 400, "Content-Type"),
        (
            "bad-topk",
            json.dumps({"b64": b64(photo), "topk": "x"}).encode(),
            "application/json",
            400,
            "topk",
        ),
        ("malformed-json", b'{"b64": ', "application/json", 400, "body"),
    ]


def test_bad_input_gets_4xx_json_and_the_worker_survives(flowers):
    server, photos, labels = flowers
    good = photos[0]
    pid = worker_pid(server, "flowers_vit")
    for case, body, ctype, code, field in bad_cases(good):
        status, err, _ = post(server, "flowers_vit", body, ctype)
        assert status == code, (case, err)
        assert err["code"] == code and err["field"] == field, (case, err)
        status, ok, _ = post(server, "flowers_vit", good, "image/jpeg")
        assert status == 200 and ok["label"] in labels, case
    assert worker_pid(server, "flowers_vit") == pid  # no worker died and restarted


def test_archive_carries_the_labels_and_decode_settings(flowers):
    server, _, labels = flowers
    meta = json.loads(Path(server.artifacts / "flowers_vit" / "meta.json").read_text())
    assert meta["labels"] == labels and meta["decode"]["draft"] == 256
    assert meta["input_size"] == 64
