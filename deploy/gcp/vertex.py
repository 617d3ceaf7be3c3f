"""Uploads the serving image to Vertex AI, one Model per served model, and deploys each to an
endpoint of the same name.

Usage:
  python -m deploy.gcp.vertex --project P --region R --image URI [--models a,b] [--dry-run]

Each Vertex Model runs the same image with MODELS=<name>, so a deployment loads only its own
model. Vertex AI sends health checks to GET /ping and predictions to
POST /predictions/<name> on AIP_HTTP_PORT (8080), with the body {"instances": [...],
"parameters": {...}}; every handler answers that envelope with {"predictions": [...]}.
Needs google-cloud-aiplatform, which is not in requirements/ (pip install
google-cloud-aiplatform==2.7.0); --dry-run prints the specs without it.
"""

import argparse
import json
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
PORT = 8080
HEALTH_ROUTE = "/ping"


def served_models() -> list[str]:
    """Every model under model_archives/: the names `make archive` builds .mar files for."""
    return sorted(p.parent.name for p in (ROOT / "model_archives").glob("*/archive.yaml"))


def serving_container(name: str, image: str) -> dict[str, Any]:
    """aiplatform.Model.upload's container arguments for one model of the image."""
    return {
        "serving_container_image_uri": image,
        "serving_container_predict_route": f"/predictions/{name}",
        "serving_container_health_route": HEALTH_ROUTE,
        "serving_container_ports": [PORT],
        # Startup: the container's own health check, which waits for every worker READY.
        "serving_container_startup_probe_exec": ["python", "/opt/serve/healthcheck.py"],
        "serving_container_startup_probe_period_seconds": 10,
        "serving_container_startup_probe_timeout_seconds": 10,
        "serving_container_environment_variables": {
            "MODELS": name,
            # Vertex AI authenticates callers with IAM; TorchServe's tokens differ per replica.
            "TOKEN_AUTH": "off",
        },
    }


def deployment(machine_type: str, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    """Model.deploy's arguments: CPU machines, a warm replica, autoscaling on CPU."""
    return {
        "machine_type": machine_type,
        "min_replica_count": min_replicas,
        "max_replica_count": max_replicas,
        "autoscaling_target_cpu_utilization": 70,
        "traffic_percentage": 100,
    }


def deploy(
    project: str,
    region: str,
    image: str,
    models: list[str],
    machine_type: str = "n1-standard-4",
    min_replicas: int = 1,
    max_replicas: int = 3,
) -> dict[str, str]:
    """Uploads and deploys each model; returns {model: endpoint resource name}."""
    from google.cloud import aiplatform

    aiplatform.init(project=project, location=region)
    endpoints = {}
    for name in models:
        model = aiplatform.Model.upload(display_name=name, **serving_container(name, image))
        found = aiplatform.Endpoint.list(filter=f'display_name="{name}"')
        endpoint = found[0] if found else aiplatform.Endpoint.create(display_name=name)
        model.deploy(endpoint=endpoint, **deployment(machine_type, min_replicas, max_replicas))
        endpoints[name] = endpoint.resource_name
    return endpoints


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--image", required=True, help="the serving image in Artifact Registry")
    parser.add_argument("--models", help="comma-separated (default: every served model)")
    parser.add_argument("--machine-type", default="n1-standard-4")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="print the specs only")
    args = parser.parse_args(argv)
    models = args.models.split(",") if args.models else served_models()
    unknown = sorted(set(models) - set(served_models()))
    if unknown:
        parser.error(f"unknown models {unknown}; served: {served_models()}")
    if args.dry_run:
        spec = {
            name: {
                "upload": serving_container(name, args.image),
                "deploy": deployment(args.machine_type, args.min_replicas, args.max_replicas),
            }
            for name in models
        }
        print(json.dumps(spec, indent=2))
        return
    for name, endpoint in deploy(
        args.project,
        args.region,
        args.image,
        models,
        args.machine_type,
        args.min_replicas,
        args.max_replicas,
    ).items():
        print(f"{name}: {endpoint}")


if __name__ == "__main__":
    main()
