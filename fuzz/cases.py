"""The requests a fuzz run sends: hypothesis strategies over each model's real example.

Four families of malformed requests, drawn by hypothesis from the model's real payload:
- structural: a JSON leaf replaced by another JSON type or an extreme number, a key dropped or
  added, a list shrunk or grown, the body wrapped in another type or in `instances`;
- bytes: the real body with bytes flipped, inserted, deleted, duplicated or cut;
- content_type: a real body under a media type that does not match it;
- pathological: bodies that break naive parsers (deep nesting, huge integers, 1e999, duplicate
  keys, NUL bytes, a BOM, UTF-16, empty or boundary-less multipart, form bodies, ...).
Every tenth request is the model's known-good payload (family `good`), so that bad and good
requests share TorchServe batches.
"""

import base64
import copy
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

JSON_TYPES = ("application/json", "")


@dataclass(frozen=True)
class Case:
    """One request: the model it goes to, its body and Content-Type, and what it is."""

    model: str
    family: str
    note: str
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Seed:
    """A model's real example: its raw body and type, and the JSON object form of it."""

    model: str
    body: bytes
    content_type: str
    payload: dict[str, Any]  # the JSON request equivalent to the body
    paths: tuple[tuple[Any, ...], ...]  # every node of payload, as key/index paths

    @property
    def json_body(self) -> bytes:
        return json.dumps(self.payload).encode()


def json_payload(body: bytes, content_type: str) -> dict[str, Any]:
    """The JSON request equivalent to an example body (images as b64, text as `text`)."""
    if content_type.startswith("image/"):
        return {"b64": base64.b64encode(body).decode()}
    if content_type.startswith("text/"):
        return {"text": body.decode()}
    return json.loads(body)


def node_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every node's path; long lists contribute their first, last and two middle elements
    (Cora's 2,708-row feature list would otherwise be nearly all the paths)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from node_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        n = len(obj)
        for i in sorted({0, n // 3, 2 * n // 3, n - 1}) if n > 4 else range(n):
            if 0 <= i < n:
                yield from node_paths(obj[i], (*prefix, i))


def load_seeds(examples: Path, models: list[str]) -> list[Seed]:
    """The seeds of `models` from a `make examples` folder (examples/index.json)."""
    index = json.loads((examples / "index.json").read_text())
    seeds = []
    for name in models:
        entry = index[name]
        body = (examples / entry["file"]).read_bytes()
        payload = json_payload(body, entry["content_type"])
        seeds.append(Seed(name, body, entry["content_type"], payload, tuple(node_paths(payload))))
    return seeds


# Leaves and extreme numbers a structural mutation puts in place of a real value.
EXTREME_NUMBERS = [
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    10**300,
    -1,
    -(10**9),
    0,
    0.5,
    -0.0,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    5e-324,
]
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(EXTREME_NUMBERS)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


@st.composite
def structural(draw: st.DrawFn, s: Seed) -> Case:
    """The real payload with one structural mutation."""
    obj = copy.deepcopy(s.payload)
    op = draw(st.sampled_from(["leaf", "number", "drop", "add", "shrink", "grow", "wrap"]))
    path = draw(st.sampled_from(s.paths))
    node = _get(obj, path)
    if op == "leaf":
        obj = _set(obj, path, draw(json_values))
    elif op == "number":
        obj = _set(obj, path, draw(st.sampled_from(EXTREME_NUMBERS) | st.integers() | st.floats()))
    elif op == "drop" and isinstance(node, dict) and node:
        del node[draw(st.sampled_from(sorted(node)))]
    elif op == "add" and isinstance(node, dict):
        node[draw(st.text(max_size=10))] = draw(json_values)
    elif op == "shrink" and isinstance(node, list):
        del node[draw(st.integers(0, len(node))) :]
    elif op == "grow" and isinstance(node, list):
        extra = draw(st.lists(json_values | st.sampled_from(node or [0]), min_size=1, max_size=8))
        node.extend(extra)
    else:  # wrap (also where the op did not fit the node)
        op = "wrap"
        how = draw(st.sampled_from(["list", "string", "number", "instances", "instances-bare"]))
        obj = {
            "list": lambda o: [o],
            "string": lambda o: json.dumps(o),
            "number": lambda o: 7,
            "instances": lambda o: {"instances": [o] * draw(st.integers(0, 3))},
            "instances-bare": lambda o: {"instances": o},
        }[how](obj)
    body = json.dumps(obj).encode()  # NaN and Infinity go out as the literals clients send
    note = f"{op} at {'/'.join(map(str, path)) or '.'}"
    return Case(s.model, "structural", note, body, "application/json")


@st.composite
def corrupted(draw: st.DrawFn, s: Seed) -> Case:
    """The real body (or its JSON form) with bytes flipped, inserted, deleted or cut."""
    raw = bytearray(draw(st.sampled_from([s.body, s.json_body])))
    ctype = s.content_type if raw == s.body else "application/json"
    op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
    at = draw(st.integers(0, max(len(raw) - 1, 0)))
    if op == "flip":
        for pos in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=16)):
            raw[pos] ^= draw(st.integers(1, 255))
    elif op == "insert":
        raw[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif op == "delete":
        del raw[at : at + draw(st.integers(1, 256))]
    elif op == "truncate":
        del raw[at:]
    else:
        raw[at:at] = raw[at : at + draw(st.integers(1, 512))]
    return Case(s.model, "bytes", f"{op} at byte {at}", bytes(raw), ctype)


MEDIA_TYPES = [
    "application/json",
    "application/json; charset=utf-16",
    "text/plain",
    "text/html",
    "application/xml",
    "image/png",
    "image/jpeg",
    "application/octet-stream",
    "multipart/form-data; boundary=fuzz",
    "multipart/form-data",
    "application/x-www-form-urlencoded",
    "chemical/x-xyz",
    "application/x-ndjson",
    "x/y",
    ";;;",
]


@st.composite
def mismatched(draw: st.DrawFn, s: Seed) -> Case:
    """A real body under a Content-Type that does not describe it."""
    body = draw(st.sampled_from([s.body, s.json_body]))
    real = s.content_type if body == s.body else "application/json"
    ctype = draw(st.sampled_from([t for t in MEDIA_TYPES if t != real]))
    return Case(s.model, "content_type", f"{real} sent as {ctype}", body, ctype)


def pathological(s: Seed) -> list[Case]:
    """Fixed bodies that break naive parsers, each sent as its natural Content-Type."""
    js = s.json_body
    key = next(iter(s.payload))
    deep = 40_000
    cases = [
        ("nested 40k arrays", b"[" * deep + b"]" * deep, "application/json"),
        ("nested 40k objects", b'{"a":' * deep + b"1" + b"}" * deep, "application/json"),
        (
            f"nested 20k under {key}",
            b'{"' + key.encode() + b'": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
            "application/json",
        ),
        (
            "a 5000-digit integer",
            b'{"' + key.encode() + b'": ' + b"9" * 5000 + b"}",
            "application/json",
        ),
        (
            "an integer beyond 64 bits",
            js.replace(b"1", b"18446744073709551617", 1),
            "application/json",
        ),
        ("1e999", js.replace(b"1", b"1e999", 1), "application/json"),
        ("-1e999 as the body", b"-1e999", "application/json"),
        ("NaN", js.replace(b"1", b"NaN", 1), "application/json"),
        ("Infinity as the body", b"Infinity", "application/json"),
        ("duplicate keys", js[:-1] + b", " + js[1:], "application/json"),
        (
            "a NUL byte inside",
            js[: len(js) // 2] + b"\x00" + js[len(js) // 2 :],
            "application/json",
        ),
        ("a trailing NUL byte", js + b"\x00", "application/json"),
        ("an escaped NUL in a key", b'{"\\u0000": 1, ' + js[1:], "application/json"),
        ("a UTF-8 BOM", b"\xef\xbb\xbf" + js, "application/json"),
        ("UTF-16", js.decode().encode("utf-16"), "application/json"),
        ("UTF-32", js.decode().encode("utf-32"), "application/json; charset=utf-32"),
        ("a lone surrogate", b'{"' + key.encode() + b'": "\\ud800"}', "application/json"),
        ("empty body", b"", "application/json"),
        ("whitespace body", b" \n\t ", "application/json"),
        ("null", b"null", "application/json"),
        ("a bare string", b'"' + key.encode() + b'"', "application/json"),
        ("empty multipart", b"", "multipart/form-data; boundary=x"),
        ("boundary-less multipart", b"--x\r\n\r\ndata\r\n--x--\r\n", "multipart/form-data"),
        (
            "multipart with no file",
            b"--x\r\nContent-Disposition: form-data\r\n\r\n\r\n--x--\r\n",
            "multipart/form-data; boundary=x",
        ),
        (
            "unterminated multipart",
            b'--x\r\nContent-Disposition: form-data; name="data"\r\n\r\nab',
            "multipart/form-data; boundary=x",
        ),
        ("a form body", b"data=" + js[:200] + b"&topk=2", "application/x-www-form-urlencoded"),
        ("a form with no value", b"data", "application/x-www-form-urlencoded"),
        (
            "instances of 10k empty objects",
            b'{"instances": [' + b",".join([b"{}"] * 10_000) + b"]}",
            "application/json",
        ),
        (
            "a 100k-element list",
            b'{"' + key.encode() + b'": [' + b",".join([b"0"] * 100_000) + b"]}",
            "application/json",
        ),
        (
            "a 1 MB string",
            b'{"' + key.encode() + b'": "' + b"a" * 1_000_000 + b'"}',
            "application/json",
        ),
    ]
    return [Case(s.model, "pathological", note, body, ctype) for note, body, ctype in cases]


def generate(seeds: list[Seed], n: int, seed_value: int = 0) -> list[Case]:
    """n requests: every tenth the known-good payload of a model in turn; the others drawn by
    hypothesis (structural 45%, bytes 25%, content_type 15%) or the pathological list (15%)."""
    n_bad = n - (n + 9) // 10
    n_path = n_bad * 15 // 100
    drawn: list[Case] = []
    family = st.sampled_from(["structural"] * 9 + ["bytes"] * 5 + ["content_type"] * 3)
    by_name = {"structural": structural, "bytes": corrupted, "content_type": mismatched}

    @seed(seed_value)
    @settings(
        max_examples=n_bad - n_path,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def draw_one(data: st.DataObject) -> None:
        s = data.draw(st.sampled_from(seeds))
        drawn.append(data.draw(by_name[data.draw(family)](s)))

    draw_one()
    fixed = [c for s in seeds for c in pathological(s)]
    drawn += [fixed[i % len(fixed)] for i in range(n_path)]
    rng = random.Random(seed_value)
    rng.shuffle(drawn)
    out: list[Case] = []
    bad = iter(drawn)
    for i in range(n):
        if i % 10 == 0:
            s = seeds[(i // 10) % len(seeds)]
            out.append(Case(s.model, "good", "the real example", s.body, s.content_type))
        else:
            out.append(next(bad, None) or out[-1])
    return out
