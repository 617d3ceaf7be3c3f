"""GPU profile: served throughput of BERT and the image models with CUDA workers, next to the
in-process throughput of the same scripted model at the same batch size.

One script does the whole run on the device machine (no data, no checkpoints, no network):
1. builds each model with random weights and exports it ON the GPU (a BERT traced on CPU
   keeps its attention bias on the CPU and cannot run on CUDA): the `imdb_bert` architecture
   from artifacts/imdb_bert/hf_config.json traced in fp32 and in bf16; the flowers ViT from
   configs/model/flowers_vit.yaml and a ViT-S/16 at 224 px (the issue's reference), both the
   repo's ImageClassifier (resize and normalise inside the scripted graph, Kornia parts
   traced as train/image_models.for_export does);
2. packs each with torch-model-archiver and the repo's handlers (text: handlers/
   text_classifier.py; images: a subclass of handlers/image_classifier.py whose warm-up puts
   its photo on the worker's device);
3. in-process: loads each .mar as a TorchServe worker does (ModelLoaderFactory, gpu_id 0) and
   times `model(*inputs)` at batch B on inputs already collated and on the GPU (the model's
   limit), and `handler.forward(items)` (collate, copies, model, respond);
4. served: starts TorchServe with number_of_gpu=1 (token auth off: loopback on a sealed
   machine), batchSize B, and measures requests/s with many keep-alive clients in several
   processes, each request one review (text/plain) or one JPEG photo (image/jpeg).

Payloads are synthetic: reviews of 300 words drawn from the tokenizer's vocabulary (all cut to
256 tokens, the model's max_length, so every batch is (B, 256)), and 500x375 JPEGs of smooth
random colour fields.

Usage: python -m benchmarks.gpu_profile --work /tmp/gp --out benchmarks/results/gpu.json
       [--batch 128] [--seconds 10] [--models imdb_bert imdb_bert_bf16 flowers_vit vit_s16]
       [--users 256 1024] [--text-workers 6] [--image-workers 12] [--worker-threads 1] [--ping]
The commands behind benchmarks/results/gpu.json, and how to carry Java and the wheels to a
machine without them, are in benchmarks/results/gpu.md.
"""

import argparse
import copy
import http.client as httpclient
import io
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
REVIEW_WORDS = 300
PHOTO_SIZE = (500, 375)

GPU_IMAGE_HANDLER = '''"""image_classifier.py, warm-up photo on the worker's device (GPU run)."""

import torch
from image_classifier import ImageClassifierHandler
from json_batch_handler import JsonBatchHandler


class GpuImageClassifierHandler(ImageClassifierHandler):
    def initialize(self, context):
        JsonBatchHandler.initialize(self, context)
        self.labels = self.meta["labels"]
        photo = torch.zeros(3, 192, 256, dtype=torch.uint8, device=self.device)
        with torch.inference_mode():
            for _ in range(2):
                self.model([photo])
                self.model([photo, photo[:, :, :192]])
'''


class SequenceClassifier(nn.Module):
    """(input_ids, attention_mask) -> logits: train/imdb.py's wrapper, without its hydra import."""

    def __init__(self, hf_config: dict[str, Any]) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForSequenceClassification

        drop = {"transformers_version", "_name_or_path", "architectures", "dtype"}
        config = AutoConfig.for_model(**{k: v for k, v in hf_config.items() if k not in drop})
        config._attn_implementation = "sdpa"
        self.model = AutoModelForSequenceClassification.from_config(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def export_bert(out: Path, device: torch.device, dtype: torch.dtype, name: str, art: Path) -> Path:
    """Random-weight imdb_bert architecture (`art`: hf_config.json, meta.json, tokenizer/),
    traced on `device` in `dtype`; the tokenizer files beside it."""
    hf = json.loads((art / "hf_config.json").read_text())
    torch.manual_seed(0)
    net = SequenceClassifier(hf).to(device=device, dtype=dtype).eval()
    ids = torch.randint(1000, 30000, (2, 256), device=device)
    mask = torch.ones_like(ids)
    mask[1, 100:] = 0  # trace on a padded batch, as train/imdb.py does
    with torch.no_grad():
        traced = torch.jit.trace(net, (ids, mask), check_trace=False)
        out.mkdir(parents=True, exist_ok=True)
        traced.save(str(out / "model.pt"))
        reloaded = torch.jit.load(str(out / "model.pt"), map_location=device)
        for b, t in ((2, 256), (5, 77), (1, 9)):
            x = torch.randint(1000, 30000, (b, t), device=device)
            m = torch.ones_like(x)
            tol = 1e-3 if dtype == torch.float32 else 5e-2
            torch.testing.assert_close(reloaded(x, m), net(x, m), atol=tol, rtol=tol)
    for f in (art / "tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    meta = json.loads((art / "meta.json").read_text())
    meta.update(name=name, dtype=str(dtype).removeprefix("torch."))
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


def export_image(out: Path, device: torch.device, name: str, size: int, net_cfg: dict) -> Path:
    """Random-weight ImageClassifier (Kornia preprocessing inside), scripted on `device`."""
    from train.image_models import ImageClassifier, KorniaViT

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    torch.manual_seed(0)
    net = KorniaViT(in_dim=3, num_classes=5, **net_cfg)
    model = ImageClassifier(net, size, mean, std).to(device).eval()
    # train/image_models.for_export, with the example on `device` instead of the CPU.
    exported = copy.deepcopy(model)
    example = torch.rand(1, 3, 97, 131, device=device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        exported.preprocess = torch.jit.trace(exported.preprocess, example)
        exported.net = torch.jit.trace(exported.net, torch.zeros(2, 3, size, size, device=device))
        scripted = torch.jit.script(exported)
        out.mkdir(parents=True, exist_ok=True)
        scripted.save(str(out / "model.pt"))
        reloaded = torch.jit.load(str(out / "model.pt"), map_location=device)
        photos = [torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, device=device)] * 2
        for inputs in (photos, [photos[0], photos[0][:, :200, :321]]):
            torch.testing.assert_close(reloaded(inputs), model(inputs), atol=1e-3, rtol=1e-3)
    meta = {
        "name": name,
        "task": "image_classification",
        "labels": ["daisy", "dandelion", "roses", "sunflowers", "tulips"],
        "input_size": size,
        "mean": mean,
        "std": std,
        "decode": {"draft": 256},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


MODELS: dict[str, dict[str, Any]] = {
    "imdb_bert": {"kind": "text", "dtype": torch.float32, "workers": 4},
    "imdb_bert_bf16": {"kind": "text", "dtype": torch.bfloat16, "workers": 4},
    "flowers_vit": {
        "kind": "image",
        "size": 64,
        "workers": 8,
        # configs/model/flowers_vit.yaml
        "net": {
            "image_size": 64,
            "embed_dim": 128,
            "depth": 4,
            "num_heads": 4,
            "stem_widths": [32, 64, 128],
            "patch_size": 8,
            "dropout": 0.1,
        },
    },
    "vit_s16": {
        "kind": "image",
        "size": 224,
        "workers": 8,
        "net": {
            "image_size": 224,
            "embed_dim": 384,
            "depth": 12,
            "num_heads": 6,
            "stem_widths": None,
            "patch_size": 16,
            "dropout": 0.1,
        },
    },
}


def archive(name: str, art: Path, spec: dict, store: Path, batch: int, work: Path) -> Path:
    """torch-model-archiver over the artifact folder, the handler and a GPU model-config."""
    src = "imdb_bert" if spec["kind"] == "text" else "flowers_vit"
    cfg = yaml.safe_load((ROOT / "model_archives" / src / "model-config.yaml").read_text())
    cfg.update(
        minWorkers=spec["workers"],
        maxWorkers=spec["workers"],
        batchSize=batch,
        maxBatchDelay=spec.get("delay_ms", 5),
        responseTimeout=120,
        deviceType="gpu" if torch.cuda.is_available() else "cpu",
    )
    cfg_file = work / f"{name}-config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    extra = [HANDLERS / "json_batch_handler.py"]
    if spec["kind"] == "text":
        handler = HANDLERS / "text_classifier.py"
        extra += [HANDLERS / "text_request.py"]
    else:
        handler = work / "gpu_image_classifier.py"
        handler.write_text(GPU_IMAGE_HANDLER)
        extra += [HANDLERS / "image_classifier.py", HANDLERS / "image_request.py"]
    extra += [p for p in art.iterdir() if p.name != "model.pt"]
    cmd = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", name, "--version", "1.0",
        "--serialized-file", str(art / "model.pt"),
        "--handler", str(handler),
        "--extra-files", ",".join(str(p) for p in extra),
        "--config-file", str(cfg_file),
        "--export-path", str(store), "--force",
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return store / f"{name}.mar"


def reviews(tokenizer_dir: Path, n: int, seed: int = 0) -> list[bytes]:
    """n reviews of REVIEW_WORDS whole words from the vocabulary (all longer than 256 tokens)."""
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]
    words = [w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2]
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=REVIEW_WORDS)).encode() for _ in range(n)]


def photos(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs of PHOTO_SIZE: smooth random colour fields with a little noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        big = np.asarray(small.resize(PHOTO_SIZE, Image.BILINEAR), dtype=np.int16)
        big = np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def payloads(spec: dict, art: Path) -> tuple[list[bytes], str]:
    if spec["kind"] == "text":
        return reviews(art, 64), "text/plain"
    return photos(32), "image/jpeg"


def load_service(mar: Path, workdir: Path, gpu_id: int | None, batch: int) -> Any:
    """benchmarks.latency.load_service (a .mar loaded as a TorchServe worker does), imported
    here so that this module loads without torchserve."""
    from benchmarks.latency import load_service as load

    return load(mar, workdir, gpu_id, batch)


def per_second(fn, n_items: int, device: torch.device, seconds: float) -> dict[str, float]:
    """Items/s of fn() over about `seconds` (after warm-up), synchronising the device."""
    for _ in range(3):
        fn()
    sync(device)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    p50 = statistics.median(times)
    return {"p50_ms": round(p50 * 1000, 3), "per_s": round(n_items / p50, 1), "iters": len(times)}


def in_process(name, spec, mar, work, device, batch, seconds) -> dict[str, Any]:
    """Model-only and handler-forward throughput at `batch`, and model latency at batch 1."""
    from ts.context import RequestProcessor

    gpu_id = 0 if device.type == "cuda" else None
    service = load_service(mar, work / "inproc", gpu_id, batch)
    handler, ctx = service._entry_point.__self__, service.context
    bodies, ctype = payloads(spec, work / "art" / name)
    rows = [{"body": bodies[i % len(bodies)]} for i in range(batch)]
    ctx.request_processor = [RequestProcessor({"Content-Type": ctype}) for _ in rows]
    handler.context = ctx  # as BaseHandler.handle sets it for each batch
    parsed = handler.preprocess(rows)
    assert not parsed["errors"], parsed["errors"]
    items = [it for _, it in parsed["good"]]
    from json_batch_handler import to_device

    ctx_exec = torch.jit.optimized_execution(spec["kind"] != "text")  # as the handlers run
    res: dict[str, Any] = {"handler_device": str(handler.device)}
    with torch.inference_mode(), ctx_exec:
        for b in sorted({1, batch}):
            inputs = to_device(handler.collate(items[:b]), handler.device)
            if spec["kind"] == "text":
                res[f"input_shape_batch{b}"] = list(inputs[0].shape)
            res[f"model_batch{b}"] = per_second(
                lambda inputs=inputs: handler.model(*inputs), b, device, seconds
            )
        res[f"forward_batch{batch}"] = per_second(
            lambda: handler.forward(items), batch, device, seconds
        )
        # The worker's CPU work per batch before the forward: decode or validate each request.
        res[f"preprocess_batch{batch}"] = per_second(
            lambda: handler.preprocess(rows), batch, device, seconds
        )
        res["example_response"] = handler.forward(items[:2])[0]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


# --- served -------------------------------------------------------------------------------


def client_proc(port, path, bodies, ctype, threads, seconds, warmup, queue) -> None:
    """`threads` keep-alive connections posting round-robin bodies; reports counts/latencies."""
    stop_at = time.perf_counter() + warmup + seconds
    t_start = time.perf_counter() + warmup
    lock = threading.Lock()
    lat: list[float] = []
    counts = {"ok": 0, "err": 0, "codes": {}}

    def run(k: int) -> None:
        conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=120)
        i = k
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                break
            body = bodies[i % len(bodies)]
            i += 7
            try:
                if body is None:  # the client and frontend ceiling: GET /ping, no worker
                    conn.request("GET", path)
                else:
                    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
                resp = conn.getresponse()
                resp.read()
                code = resp.status
            except (OSError, httpclient.HTTPException):
                code = -1
                conn.close()
                conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=120)
            end = time.perf_counter()
            if now >= t_start and end <= stop_at:
                with lock:
                    if code == 200:
                        counts["ok"] += 1
                        lat.append(end - now)
                    else:
                        counts["err"] += 1
                        counts["codes"][code] = counts["codes"].get(code, 0) + 1

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    queue.put({"ok": counts["ok"], "err": counts["err"], "codes": counts["codes"], "lat": lat})


def served(port, name, spec, work, users, procs, seconds, warmup) -> dict[str, Any]:
    """Requests/s of one model over HTTP; name "ping" measures GET /ping instead."""
    bodies, ctype = payloads(spec, work / "art" / name) if spec else ([None], "")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    path = f"/predictions/{name}" if spec else "/ping"
    per = [users // procs + (1 if i < users % procs else 0) for i in range(procs)]
    ps = [
        ctx.Process(
            target=client_proc,
            args=(port, path, bodies, ctype, n, seconds, warmup, queue),
        )
        for n in per
        if n
    ]
    for p in ps:
        p.start()
    results = [queue.get(timeout=warmup + seconds + 300) for _ in ps]
    for p in ps:
        p.join()
    lat = sorted(x for r in results for x in r["lat"])
    ok = sum(r["ok"] for r in results)
    codes: dict[str, int] = {}
    for r in results:
        for c, n in r["codes"].items():
            codes[str(c)] = codes.get(str(c), 0) + n

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else float("nan")

    return {
        "users": users,
        "client_processes": len(ps),
        "seconds": seconds,
        "ok": ok,
        "errors": sum(r["err"] for r in results),
        "error_codes": codes,
        "rps": round(ok / seconds, 1),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    }


def batch_sizes(metrics_url: str) -> dict[str, float]:
    """Prometheus counters that tell how full the batches were (ts_inference_requests_total)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ts_inference_requests_total") or line.startswith("ts_queue_latency"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def start_torchserve(
    work: Path, store: Path, models: list[str], gpus: int, threads: int | None
) -> tuple:
    """TorchServe in the foreground of its own process group; returns (proc, ports).

    `threads` caps each worker's CPU thread pools (OpenMP/MKL for torch, rayon for the
    tokenizer): many workers with a pool of every core each spin against one another.
    """
    ports = {k: free_port() for k in ("inference", "management", "metrics", "grpc", "grpc_m")}
    cfg = work / "config.properties"
    cfg.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{ports['inference']}",
                f"management_address=http://127.0.0.1:{ports['management']}",
                f"metrics_address=http://127.0.0.1:{ports['metrics']}",
                "grpc_inference_address=127.0.0.1",
                "grpc_management_address=127.0.0.1",
                f"grpc_inference_port={ports['grpc']}",
                f"grpc_management_port={ports['grpc_m']}",
                "metrics_mode=prometheus",
                # Loopback only, on a sealed machine with no other users: tokens off.
                "disable_token_authorization=true",
                "enable_model_api=false",
                f"number_of_gpu={gpus}",
                "job_queue_size=2000",
                "number_of_netty_threads=8",
                "netty_client_threads=8",
                "default_response_timeout=120",
                "max_request_size=10485760",
            ]
        )
        + "\n"
    )
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs)}
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"):
            env[var] = str(threads)
    cmd = [
        sys.executable, "-c", "from ts.model_server import start; start()",
        "--start", "--foreground", "--ncs", "--disable-token-auth",
        "--ts-config", str(cfg), "--model-store", str(store),
        "--models", *[f"{m}={m}.mar" for m in models],
    ]  # fmt: skip
    out = open(logs / "torchserve.out", "wb")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=out, start_new_session=True)
    return proc, ports


def wait_ready(ports: dict, models: list[str], proc, timeout: float) -> float:
    t0 = time.perf_counter()
    pending = list(models)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"torchserve exited with {proc.returncode}")
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"not READY after {timeout}s: {pending}")
        for m in list(pending):
            try:
                url = f"http://127.0.0.1:{ports['management']}/models/{m}"
                with urllib.request.urlopen(url, timeout=5) as r:
                    workers = json.loads(r.read())[0].get("workers", [])
                if workers and all(w.get("status") == "READY" for w in workers):
                    pending.remove(m)
            except OSError:
                pass
        time.sleep(0.5)
    return time.perf_counter() - t0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_info(device: torch.device) -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)  # fmt: skip
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        import ts

        info["torchserve"] = ts.__version__
    except (ImportError, AttributeError):
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    info["java"] = (java.stderr or java.stdout).splitlines()[0] if java.returncode == 0 else None
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--inproc-seconds", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--users", type=int, nargs="+", default=[512])
    ap.add_argument("--client-procs", type=int, default=6)
    ap.add_argument("--text-workers", type=int, default=None, help="workers per BERT model")
    ap.add_argument("--image-workers", type=int, default=None, help="workers per image model")
    ap.add_argument(
        "--worker-threads",
        type=int,
        default=None,
        help="OMP/MKL/rayon threads per TorchServe worker (unset: every core, the default)",
    )
    ap.add_argument("--skip-served", action="store_true")
    ap.add_argument("--ping", action="store_true", help="also GET /ping: the client ceiling")
    ap.add_argument(
        "--bert-artifact",
        type=Path,
        default=ROOT / "artifacts" / "imdb_bert",
        help="folder with hf_config.json, meta.json and tokenizer/ (no weights are read)",
    )
    args = ap.parse_args(argv)

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HANDLERS))
    store = work / "store"
    store.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.gpu_profile " + " ".join(sys.argv[1:]),
        "device": device_info(device),
        "batch": args.batch,
        "worker_threads": args.worker_threads,
        "models": {},
    }

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    for name in args.models:
        spec = dict(MODELS[name])
        workers = args.text_workers if spec["kind"] == "text" else args.image_workers
        spec["workers"] = workers or spec["workers"]
        t0 = time.perf_counter()
        art = work / "art" / name
        if spec["kind"] == "text":
            export_bert(art, device, spec["dtype"], name, args.bert_artifact)
        else:
            export_image(art, device, name, spec["size"], spec["net"])
        mar = archive(name, art, spec, store, args.batch, work)
        entry: dict[str, Any] = {
            "workers": spec["workers"],
            "export_and_archive_s": round(time.perf_counter() - t0, 1),
            "mar_mb": round(mar.stat().st_size / 2**20, 1),
        }
        entry["in_process"] = in_process(
            name, spec, mar, work, device, args.batch, args.inproc_seconds
        )
        report["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
        save()
    if args.skip_served:
        return
    gpus = 1 if device.type == "cuda" else 0
    proc, ports = start_torchserve(work, store, args.models, gpus, args.worker_threads)
    try:
        report["ready_s"] = round(wait_ready(ports, args.models, proc, 300), 1)
        print("READY in", report["ready_s"], "s", flush=True)
        metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
        if args.ping:
            for users in args.users:
                r = served(ports["inference"], "ping", None, work, users, args.client_procs,
                           args.seconds, args.warmup)  # fmt: skip
                report.setdefault("ping", []).append(r)
                print("ping", json.dumps(r), flush=True)
        for name in args.models:
            spec = MODELS[name]
            entry = report["models"][name]
            runs = []
            for users in args.users:
                before = batch_sizes(metrics_url)
                r = served(ports["inference"], name, spec, work, users, args.client_procs,
                           args.seconds, args.warmup)  # fmt: skip
                after = batch_sizes(metrics_url)
                r["server_counters_delta"] = {
                    k: v - before.get(k, 0) for k, v in after.items() if name in k
                }
                runs.append(r)
                print(name, json.dumps(r), flush=True)
            entry["served"] = runs
            best = max(runs, key=lambda r: r["rps"])
            limit = entry["in_process"][f"model_batch{args.batch}"]["per_s"]
            fwd = entry["in_process"][f"forward_batch{args.batch}"]["per_s"]
            entry["served_best_rps"] = best["rps"]
            entry["ratio_to_model"] = round(best["rps"] / limit, 3)
            entry["ratio_to_handler_forward"] = round(best["rps"] / fwd, 3)
            entry["goal_0_5_met"] = entry["ratio_to_model"] >= 0.5
            save()
    finally:
        stop_process_group(proc)
        save()


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM to torchserve's process group (frontend and workers), SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
