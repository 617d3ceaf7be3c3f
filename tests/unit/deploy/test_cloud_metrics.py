"""How the metrics reach Cloud Monitoring (docs/deploy.md): GKE's PodMonitoring and Cloud Run's
Managed Service for Prometheus sidecar scrape the port and path TorchServe's metrics API uses."""

import json

from tests.unit.deploy.helpers import DEPLOY, container_spec, docs, entrypoint, env_of

ep = entrypoint()


def test_gke_pod_monitoring_scrapes_the_deployments_metrics_port():
    (pm,) = docs(DEPLOY / "k8s" / "gke" / "podmonitoring.yaml")
    deployment = next(
        d for d in docs(DEPLOY / "k8s" / "gke" / "deployment.yaml") if d["kind"] == "Deployment"
    )
    assert pm["apiVersion"] == "monitoring.googleapis.com/v1" and pm["kind"] == "PodMonitoring"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    c = container_spec(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    (endpoint,) = pm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    # The named port is the one the entrypoint opens to the pod network (METRICS_PORT).
    assert ports[endpoint["port"]] == ep.metrics_port(env_of(c))


def test_cloud_run_sidecar_scrapes_torchserves_loopback_metrics():
    (svc,) = docs(DEPLOY / "gcp" / "cloudrun-service.yaml")
    template = svc["spec"]["template"]
    serving, collector = (container_spec(svc, n) for n in ("torchserve", "collector"))
    image = collector["image"]
    assert "/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:" in image and not image.endswith(
        ":latest"
    )
    # The ingress container is the only one with a port; the collector starts after it.
    assert "ports" not in collector
    deps = json.loads(
        template["metadata"]["annotations"]["run.googleapis.com/container-dependencies"]
    )
    assert deps == {"collector": ["torchserve"]}
    # Its config: the secret mounted where the sidecar reads /etc/rungmp/config.yaml.
    (mount,) = collector["volumeMounts"]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert mount["mountPath"].rstrip("/") == "/etc/rungmp"
    assert [i["path"] for i in volume["secret"]["items"]] == ["config.yaml"]
    (rm,) = docs(DEPLOY / "gcp" / "run-monitoring.yaml")
    assert rm["kind"] == "RunMonitoring"
    (endpoint,) = rm["spec"]["endpoints"]
    # Without METRICS_PORT the entrypoint keeps the metrics API on the shared loopback.
    assert ep.metrics_port(env_of(serving)) is None
    assert endpoint == {**endpoint, "port": ep.private_ports({})["metrics"], "path": "/metrics"}
