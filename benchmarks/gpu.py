"""GPU profile: served throughput of BERT and the image models with CUDA workers, next to the
in-process throughput of the same scripted model at the same batch size.

One script does the whole run on the device machine (no data, no checkpoints, no network):
1. builds each model with random weights from the project's own classes and exports it ON the
   GPU (a model traced on the CPU keeps CPU tensors in its graph and cannot run on CUDA): the
   `imdb_bert` architecture (train/imdb.py's SequenceClassifier, from the artifact's
   hf_config.json) traced in fp32 and in bf16; the flowers ViT of configs/model/flowers_vit.yaml
   and a ViT-S/16 at 224 px (the issue's reference), both train/image_models' ImageClassifier
   made scriptable by its for_export;
2. packs each with serve.archive.build_mar and the registered model's handler and files;
3. in-process: loads each .mar as a TorchServe worker does (gpu_id 0) and times
   `model(*inputs)` at batch B on inputs already collated and on the GPU (the model's limit),
   and `handler.forward(items)` (collate, copies, model, respond);
4. served: serve.server.start with number_of_gpu=1 (token auth off: loopback on a sealed
   machine) and batchSize B; many keep-alive clients in several processes post one review
   (text/plain) or one JPEG photo (image/jpeg) per request.

Payloads are synthetic: reviews of 300 vocabulary words (all cut to 256 tokens, so every batch
is (B, 256)), and 500x375 JPEGs of smooth random colour fields. The device needs the training
requirements too (the classes come from train/). Commands: benchmarks/results/gpu.md.
Usage: python -m benchmarks.gpu --work /tmp/gp [--out benchmarks/results/gpu.json]
       [--batch 128] [--seconds 10] [--models imdb_bert imdb_bert_bf16 flowers_vit vit_s16]
       [--users 256 1024] [--text-workers 6] [--image-workers 12] [--worker-threads 1] [--ping]
"""

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.clients import many_processes
from benchmarks.common import RESULTS, handler_of, load_service, machine, rate, timed
from benchmarks.gpu_models import (
    MODELS,
    export_bert,
    export_image,
    is_text,
    model_config,
    payloads,
    sync,
)
from serve.archive import build_mar
from serve.config import ROOT
from serve.metrics import scrape, series
from serve.server import start
from train.core.registry import spec

# What the GPU server changes against a CPU one; serve.server.start adds free ports.
SERVER_PROPERTIES = """metrics_mode=prometheus
grpc_inference_address=127.0.0.1
grpc_management_address=127.0.0.1
enable_model_api=false
job_queue_size=2000
number_of_netty_threads=8
netty_client_threads=8
default_response_timeout=120
max_request_size=10485760
"""


def in_process(name, mar, work, device, batch, seconds) -> dict[str, Any]:
    """Model-only and handler-forward throughput at `batch`, and model latency at batch 1."""
    from ts.context import RequestProcessor

    from json_batch_handler import to_device

    gpu_id = 0 if device.type == "cuda" else None
    handler, ctx = handler_of(load_service(mar, work / "inproc", gpu_id, batch))
    bodies, ctype = payloads(name, work / "art" / name)
    rows = [{"body": bodies[i % len(bodies)]} for i in range(batch)]
    ctx.request_processor = [RequestProcessor({"Content-Type": ctype}) for _ in rows]
    handler.context = ctx  # as BaseHandler.handle sets it for each batch
    parsed = handler.preprocess(rows)
    assert not parsed["errors"], parsed["errors"]
    items = [it for _, it in parsed["good"]]

    def per_second(fn, n: int) -> dict[str, float]:
        times = timed(fn, seconds, min_iters=5, warmup=3, sync=lambda: sync(device))
        return {**rate(times, n), "iters": len(times)}

    res: dict[str, Any] = {"handler_device": str(handler.device)}
    with torch.inference_mode(), torch.jit.optimized_execution(not is_text(name)):
        for b in sorted({1, batch}):
            inputs = to_device(handler.collate(items[:b]), handler.device)
            if is_text(name):
                res[f"input_shape_batch{b}"] = list(inputs[0].shape)
            res[f"model_batch{b}"] = per_second(lambda x=inputs: handler.model(*x), b)
        res[f"forward_batch{batch}"] = per_second(lambda: handler.forward(items), batch)
        # The worker's CPU work per batch before the forward: decode or validate each request.
        res[f"preprocess_batch{batch}"] = per_second(lambda: handler.preprocess(rows), batch)
        res["example_response"] = handler.forward(items[:2])[0]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def device_info(device: torch.device) -> dict[str, Any]:
    info = {**machine("transformers", "torchserve"), "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1))
        info["cuda"] = torch.version.cuda
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    info["java"] = (java.stderr or java.stdout).splitlines()[0] if java.returncode == 0 else None
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--inproc-seconds", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--users", type=int, nargs="+", default=[512])
    ap.add_argument("--client-procs", type=int, default=6)
    ap.add_argument("--text-workers", type=int, default=None, help="workers per BERT model")
    ap.add_argument("--image-workers", type=int, default=None, help="workers per image model")
    ap.add_argument(
        "--worker-threads", type=int, default=None, help="OMP/MKL/rayon threads per worker"
    )
    ap.add_argument("--skip-served", action="store_true")
    ap.add_argument("--ping", action="store_true", help="also GET /ping: the client ceiling")
    ap.add_argument(
        "--bert-artifact",
        type=Path,
        default=ROOT / "artifacts" / "imdb_bert",
        help="hf_config.json, meta.json and tokenizer/ (no weights are read)",
    )
    args = ap.parse_args(argv)

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    work = args.work.resolve()
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)  # the server loads every .mar of the store
    store.mkdir(parents=True)
    sys.path.insert(0, str(ROOT / "handlers"))
    report: dict[str, Any] = {
        "command": "python -m benchmarks.gpu " + " ".join(sys.argv[1:]),
        "device": device_info(device),
        "batch": args.batch,
        "worker_threads": args.worker_threads,
        "models": {},
    }

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    for name in args.models:
        workers = (args.text_workers if is_text(name) else args.image_workers) or MODELS[name][
            "workers"
        ]
        t0 = time.perf_counter()
        art = work / "art" / name
        if is_text(name):
            export_bert(art, device, MODELS[name]["dtype"], args.bert_artifact)
        else:
            export_image(art, device, MODELS[name].get("net"))
        config = model_config(name, workers, args.batch, device.type == "cuda", work)
        served_as = spec(MODELS[name]["served_as"])
        mar = build_mar(name, work / "art", store, model=served_as, config_file=config)
        entry: dict[str, Any] = {
            "workers": workers,
            "export_and_archive_s": round(time.perf_counter() - t0, 1),
            "mar_mb": round(mar.stat().st_size / 2**20, 1),
        }
        entry["in_process"] = in_process(name, mar, work, device, args.batch, args.inproc_seconds)
        report["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
        save()
    if not args.skip_served:
        served(args, report, work, store, device, save)


def served(args, report, work, store, device, save) -> None:
    """Every model over HTTP at each user count, with the batch counters of /metrics."""
    props = work / "gpu.properties"
    props.write_text(SERVER_PROPERTIES + f"number_of_gpu={int(device.type == 'cuda')}\n")
    # Many workers with thread pools of every core spin against one another.
    env = {v: str(args.worker_threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
           "RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS")} if args.worker_threads else {}  # fmt: skip
    t0 = time.perf_counter()
    server = start(store, work / "ts", args.models, config=props, env=env, token_auth=False,
                   timeout=300)  # fmt: skip
    try:
        report["ready_s"] = round(time.perf_counter() - t0, 1)
        print("READY in", report["ready_s"], "s", flush=True)
        runs = {"ping": [None]} if args.ping else {}
        for name, (bodies, ctype) in {
            **runs,
            **{n: payloads(n, work / "art" / n) for n in args.models},
        }.items():
            path = "/ping" if bodies == [None] else f"/predictions/{name}"
            results = []
            for users in args.users:
                before = series(scrape(server.metrics), "ts_inference_requests", "ts_queue_latency")
                r = many_processes(server.inference, path, bodies, ctype, users,
                                   args.client_procs, args.seconds, args.warmup)  # fmt: skip
                after = series(scrape(server.metrics), "ts_inference_requests", "ts_queue_latency")
                if name != "ping":
                    r["server_counters_delta"] = {
                        k: v - before.get(k, 0) for k, v in after.items() if name in k
                    }
                results.append(r)
                print(name, json.dumps(r), flush=True)
            if name == "ping":
                report["ping"] = results
                continue
            entry = report["models"][name]
            entry["served"] = results
            best = max(results, key=lambda r: r["rps"])
            limit = entry["in_process"][f"model_batch{args.batch}"]["per_s"]
            fwd = entry["in_process"][f"forward_batch{args.batch}"]["per_s"]
            entry["served_best_rps"] = best["rps"]
            entry["ratio_to_model"] = round(best["rps"] / limit, 3)
            entry["ratio_to_handler_forward"] = round(best["rps"] / fwd, 3)
            entry["goal_0_5_met"] = entry["ratio_to_model"] >= 0.5
            save()
    finally:
        server.stop()
        save()


if __name__ == "__main__":
    main()
