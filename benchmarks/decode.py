"""Image decode time, measured on its own: the part of the image models' served latency that the
in-process model figure leaves out (issue: served − in-process ≤ 3 ms plus the decode time).

Times `handlers/image_request.decode_image`, with the settings of each image model's .mar
(model-config `handler:` limits and formats, meta.json's draft size), on the `examples/` photo
and on every photo of the payload pool. Writes benchmarks/results/decode.json.
Usage: python -m benchmarks.decode [--store model_store] [--repeat 50]
"""

import argparse
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path

from benchmarks.common import RESULTS, example_index, mar_config
from serve.config import ROOT

sys.path.insert(0, str(ROOT / "handlers"))
from image_request import decode_image  # noqa: E402

POOL = ROOT / "loadtests" / "pool"


def settings(mar: Path) -> dict:
    """The decode arguments the model's handler uses, read from its .mar."""
    with zipfile.ZipFile(mar) as z:
        meta = json.loads(z.read("meta.json"))
    handler = mar_config(mar).get("handler", {})
    return {
        "max_pixels": handler.get("max_pixels", 24_000_000),
        "draft": meta["decode"]["draft"],
        "formats": handler.get("formats"),
    }


def time_ms(data: bytes, args: dict, repeat: int) -> float:
    """Median decode time in ms over `repeat` calls after two warm-up calls."""
    for _ in range(2):
        decode_image(data, args["max_pixels"], args["draft"], args["formats"])
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        decode_image(data, args["max_pixels"], args["draft"], args["formats"])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    examples = example_index()
    out = {"command": "python -m benchmarks.decode", "models": {}}
    for name, entry in sorted(examples.items()):
        if not entry["content_type"].startswith("image/"):
            continue
        dec = settings(args.store / f"{name}.mar")
        example = (ROOT / "examples" / entry["file"]).read_bytes()
        pool = sorted((POOL / name).glob("*.jpg")) if (POOL / name).is_dir() else []
        per_photo = [time_ms(p.read_bytes(), dec, max(5, args.repeat // 10)) for p in pool]
        out["models"][name] = {
            "example_bytes": len(example),
            "example_decode_ms": round(time_ms(example, dec, args.repeat), 3),
            "pool_photos": len(per_photo),
            "pool_decode_ms_median": round(statistics.median(per_photo), 3) if pool else None,
            "pool_decode_ms_max": round(max(per_photo), 3) if pool else None,
            **dec,
        }
        print(name, json.dumps(out["models"][name]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decode.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
