"""`make predict`: a packaged model's answer to a request file, in this process, with no server.

python -m serve.predict NAME INPUT [--store model_store | --artifacts artifacts]
                        [--content-type TYPE]

The model is model_store/NAME.mar (or a folder holding an unpacked one), loaded as TorchServe's
worker loads it (serve/inprocess.py); with --artifacts, artifacts/NAME/ is packed first, with
the handler files its archive.yaml names, as `make archive` would pack it. The body goes through
the handler's own `handle`, so stdout is exactly the JSON the server answers to that body.
The Content-Type is --content-type, else the file's extension (.json, .txt, .jpg, .png, .xyz),
else what its bytes are. A .jsonl file holds one JSON request per line: one answer per line,
batched up to the model's batchSize as TorchServe would. A refused request prints the server's
JSON error, its status goes to stderr (`INPUT:LINE: 400 Bad Request`), and the exit code is 1.
"""

import argparse
import contextlib
import io
import json
import logging
import mimetypes
import sys
import tempfile
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional

from serve import inprocess
from serve.config import ROOT

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/jsonlines")


def sniff(body: bytes) -> str:
    """The media type of a body whose file name does not tell it: image, JSON or text.

    There is no libmagic in the venv; Pillow, which the image handler decodes with, recognises
    every image format that handler reads.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(body)) as im:
            return Image.MIME.get(im.format or "", "application/octet-stream")
    except UnidentifiedImageError:
        pass
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "application/octet-stream"
    try:
        json.loads(text)
        return "application/json"
    except ValueError:
        return "text/plain"


def content_type(path: Path, body: bytes) -> str:
    """The file's media type from its extension, else from its bytes."""
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or sniff(body)


def requests_of(path: Path, ctype: Optional[str]) -> list[tuple[str, bytes, str]]:
    """(label, body, Content-Type) of each request in the file: one, or one per JSONL line."""
    raw = path.read_bytes()
    if path.suffix.lower() in JSONL_SUFFIXES or (ctype or "").lower() in JSONL_TYPES:
        lines = raw.split(b"\n")
        return [
            (f"{path}:{n}", line.rstrip(b"\r"), "application/json")
            for n, line in enumerate(lines, 1)
            if line.strip()
        ]
    return [(str(path), raw, ctype or content_type(path, raw))]


def headers_for(body: bytes, ctype: str) -> dict[str, str]:
    """The headers an HTTP client (curl --data-binary) sends with the body.

    The handlers read them: Content-Length for the 413 before reading, and Host, which every
    HTTP/1.1 request has and TorchServe's gRPC service does not (v2 bytes are base64 there).
    """
    return {"Host": "localhost", "Content-Type": ctype, "Content-Length": str(len(body))}


def predict(
    service: Any, requests: list[tuple[str, bytes, str]], batch_size: int
) -> list[tuple[str, int, str]]:
    """(label, status, the handler's JSON text) per request, in order, `batch_size` at a time."""
    answers: list[tuple[str, int, str]] = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start : start + batch_size]
        rows = [{"body": body} for _, body, _ in chunk]
        headers = [headers_for(body, ctype) for _, body, ctype in chunk]
        for (label, _, _), (status, text, _) in zip(
            chunk, inprocess.handle(service, rows, headers)
        ):
            answers.append((label, status, text))
    return answers


def reason(status: int) -> str:
    """The status's reason phrase ("Bad Request"), or "" for a code without one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def model_dir(name: str, store: Path, artifacts: Optional[Path], workdir: Path) -> Path:
    """The unpacked .mar of `name`: from the store, or packed from artifacts/<name>/ first."""
    if artifacts is not None:
        from serve.archive import build_mar  # reads the registry (train/), not needed otherwise

        # The archiver's own lines would mix with the answers on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            mar = build_mar(name, artifacts, workdir / "store")
        return inprocess.unpack(mar, workdir)
    for found in (store / f"{name}.mar", store / name):
        if found.is_file() or (found / "MAR-INF").is_dir():
            return inprocess.unpack(found, workdir)
    raise FileNotFoundError(
        f"no {name}.mar in {store}: run `make archive` (or pass --artifacts artifacts)"
    )


def main(argv: Optional[list[str]] = None) -> int:
    """Prints the model's answer to each request of INPUT; returns 1 when any was refused."""
    parser = argparse.ArgumentParser(prog="python -m serve.predict", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("name", help="a served model (model_archives/<name>/)")
    parser.add_argument("input", type=Path, help="a request body, or a .jsonl of JSON requests")
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--artifacts", type=Path, help="pack artifacts/<name>/ instead")
    parser.add_argument("--content-type", help="the body's media type (default: from the file)")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        parser.error(f"{args.input} is not a file")
    requests = requests_of(args.input, args.content_type)
    with tempfile.TemporaryDirectory(prefix="predict-") as tmp:
        try:
            unpacked = model_dir(args.name, args.store, args.artifacts, Path(tmp))
        except (FileNotFoundError, KeyError) as e:
            print(e, file=sys.stderr)
            return 2
        # TorchServe's notices of optional runtimes it did not find (OpenVINO, TensorRT) are no
        # news here; the handlers' own warnings and errors still reach stderr.
        logging.getLogger("ts").setLevel(logging.ERROR)
        # Whatever loading prints (a library's banner) goes to stderr: stdout is the answers.
        with contextlib.redirect_stdout(sys.stderr):
            service = inprocess.load_service(unpacked, args.name)
        batch_size = int((service.context.model_yaml_config or {}).get("batchSize") or 1)
        answers = predict(service, requests, batch_size)
    refused = 0
    for label, status, text in answers:
        print(text)
        if status >= 300:
            refused += 1
            print(f"{label}: {status} {reason(status)}".rstrip(), file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
