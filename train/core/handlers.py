"""The handlers' plain request helpers, for training: each exists once, in handlers/.

TorchServe imports a .mar's files flat (`from request_error import RequestError`), so handlers/
stays a folder of top-level modules and is no package. This is the one place in train/ that puts
it on sys.path; training imports the shared helpers from here. None of them imports `ts`, so
training never needs the serving stack, and handlers/ never imports train/.
"""

import sys
from pathlib import Path

HANDLERS = Path(__file__).resolve().parents[2] / "handlers"
if str(HANDLERS) not in sys.path:
    sys.path.append(str(HANDLERS))

from image_request import decode_image, image_stats, to_rgb  # noqa: E402
from request_error import RequestError  # noqa: E402
from text_request import clean_text, head_tail, text_stats, tokenize_cut  # noqa: E402

from graph_request import graph_stats  # noqa: E402
from molecule_request import WARMUP_POS, WARMUP_Z, molecule_stats  # noqa: E402

__all__ = [
    "HANDLERS",
    "WARMUP_POS",
    "WARMUP_Z",
    "RequestError",
    "clean_text",
    "decode_image",
    "graph_stats",
    "head_tail",
    "image_stats",
    "molecule_stats",
    "text_stats",
    "to_rgb",
    "tokenize_cut",
]
