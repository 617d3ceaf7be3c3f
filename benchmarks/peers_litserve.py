"""The LitServe peer of `make bench-peers`: one .mar's handler under LitServe 0.2, batching on.

python -m benchmarks.peers_litserve --mar model_store/mutag_gcn.mar --port 8000
    [--batch-size 16] [--batch-timeout-ms 1]

Run by the KServe venv's interpreter (requirements/peers.txt adds litserve there). The .mar is
loaded as TorchServe's worker loads it (serve/inprocess.py) and LitServe's own batcher hands its
`predict` lists of parsed JSON bodies, which go through the handler's `handle` as one batch: the
same model and the same handler code as under TorchServe and KServe, so what differs is the
server. `POST /predict` takes the same JSON body as `/predictions/<model>`; a refused request
gets the handler's status and JSON error.
"""

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import HTTPException

from serve.inprocess import handle, load_service, unpack

JSON = {"Content-Type": "application/json"}


class HandlerAPI(ls.LitAPI):
    """LitServe's API around the handler: decode = the parsed body, predict = `handle`."""

    def __init__(self, mar: Path, name: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.mar, self.name = mar, name

    def setup(self, device: str) -> None:
        """Unpacks and loads the .mar in LitServe's inference worker."""
        workdir = Path(tempfile.mkdtemp(prefix="litserve-mar-"))
        self.service = load_service(unpack(self.mar, workdir), self.name)

    # No annotation on `request`: LitServe routes by it, and without one it parses the JSON body.
    def decode_request(self, request, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        return request

    def predict(self, x: Any, **kwargs: Any) -> Any:
        bodies = x if self.max_batch_size > 1 else [x]
        answers = handle(self.service, [{"body": b} for b in bodies], [JSON] * len(bodies))
        return answers if self.max_batch_size > 1 else answers[0]

    def encode_response(self, output: Any, **kwargs: Any) -> Any:
        status, text, _ = output
        if status != 200:
            raise HTTPException(status_code=status, detail=json.loads(text))
        return json.loads(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mar", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout-ms", type=float, default=1.0)
    args = parser.parse_args()
    api = HandlerAPI(
        args.mar,
        args.mar.stem,
        max_batch_size=args.batch_size,
        batch_timeout=args.batch_timeout_ms / 1000,
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
