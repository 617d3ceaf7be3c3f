"""deploy/gcp/: every spec parses, and its ports, routes, names and images match the bundle."""

import json
import re
import subprocess
import sys

import pytest

from deploy.gcp import gcs, vertex
from tests.unit.deploy.helpers import (
    DEPLOY,
    PLACEHOLDER,
    ROOT,
    container_spec,
    docs,
    entrypoint,
    env_of,
    fake_store,
    max_batch_size,
    max_response_timeout,
    properties,
    served_models,
)

ep = entrypoint()
GCP = DEPLOY / "gcp"
# Cloud Build's own variables ($PROJECT_ID, ...) that a build may use without declaring them.
BUILT_INS = {"PROJECT_ID", "PROJECT_NUMBER", "LOCATION", "BUILD_ID", "COMMIT_SHA", "SHORT_SHA"}
BUILT_INS |= {"REVISION_ID", "BRANCH_NAME", "TAG_NAME", "REPO_NAME", "TRIGGER_NAME"}


def dockerfile_stages() -> set[str]:
    text = (ROOT / "Dockerfile").read_text()
    return set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def cloudbuild():
    (build,) = docs(GCP / "cloudbuild.yaml")
    return build


@pytest.fixture(scope="module")
def service():
    (svc,) = docs(GCP / "cloudrun-service.yaml")
    return svc


def test_every_yaml_under_deploy_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        parsed = docs(path)
        assert parsed and all(isinstance(d, dict) for d in parsed), path


def test_cloudbuild_uses_only_declared_substitutions(cloudbuild):
    text = (GCP / "cloudbuild.yaml").read_text()
    declared = set(cloudbuild["substitutions"])
    assert all(name.startswith("_") for name in declared)
    # $$ is Cloud Build's escape for a literal $ (shell variables in step scripts).
    used = set(PLACEHOLDER.findall(text.replace("$$", ""))) | set(
        re.findall(r"(?<!\$)\$([A-Z_][A-Z0-9_]*)", text.replace("$$", ""))
    )
    assert used - declared - BUILT_INS == set()
    assert cloudbuild["options"]["dynamicSubstitutions"] is True
    assert cloudbuild["substitutions"]["_TAG"] == "${SHORT_SHA}"
    # No project, bucket or registry hard-coded: they all come from substitutions.
    for ref in re.findall(r"[\w.-]+-docker\.pkg\.dev/[^\s\"']+", text):
        assert ref.startswith("${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/"), ref
    for ref in re.findall(r"gs://[^\s\"']+", text):
        assert ref.startswith("gs://${_BUCKET}/"), ref


def test_cloudbuild_tests_archives_builds_pushes_and_deploys(cloudbuild):
    steps = {s["id"]: s for s in cloudbuild["steps"]}
    assert list(steps) == [
        "train-image",
        "inputs",
        "test",
        "archive",
        "serve-image",
        "push",
        "deploy",
    ]
    script = {k: " ".join(map(str, s.get("args", []))) for k, s in steps.items()}
    assert "--target=train" in script["train-image"] and "--target=serve" in script["serve-image"]
    for built in ("train-image", "serve-image"):  # the Dockerfile's RUN --mount needs BuildKit
        assert steps[built]["env"] == ["DOCKER_BUILDKIT=1"], built
    assert {"train", "serve"} <= dockerfile_stages()
    assert "python -m pytest" in script["test"] and "DATA_MIRROR=" in script["test"]
    # Every model under model_archives/ is archived: the step lists the folder, not names.
    assert "python -m serve build $$(ls model_archives)" in script["archive"]
    assert "deploy.gcp.gcs push-models gs://${_BUCKET}/models/${_TAG}" in script["archive"]
    assert "gcloud run services replace" in script["deploy"]
    assert "deploy/gcp/cloudrun-service.yaml" in script["deploy"]
    image = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/torchserve-bundle:${_TAG}"
    assert f"--tag={image}" in script["serve-image"]
    assert steps["deploy"]["env"] == [f"IMAGE={image}"]
    assert image in cloudbuild["images"]
    # The deploy step fills exactly the placeholders the service spec has.
    (names,) = re.findall(r"envsubst '([^']*)'", script["deploy"])
    in_spec = PLACEHOLDER.findall((GCP / "cloudrun-service.yaml").read_text())
    assert set(PLACEHOLDER.findall(names.replace("$$", "$"))) == set(in_spec) == {"IMAGE"}


def test_cloud_run_port_and_probes_are_the_entrypoint_s(service, tmp_path):
    c = container_spec(service, "torchserve")
    (port,) = c["ports"]
    assert port["name"] == "http1"
    assert port["containerPort"] == ep.inference_port({}) == 8080
    env = env_of(c)
    probes = ep.probe_port(env)
    assert c["startupProbe"]["httpGet"] == {"path": "/ready", "port": probes}
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": probes}
    # Drain and stop end before Cloud Run's SIGKILL, 10 s after SIGTERM.
    assert ep.DRAIN_TIMEOUT_S + ep.STOP_GRACE_S < 10
    assert "PORT" not in env  # Cloud Run sets it from containerPort
    assert env["TOKEN_AUTH"] == "off"
    # What the entrypoint makes of Cloud Run's environment.
    store = fake_store(tmp_path, served_models())
    props = ep.render_config(
        (ROOT / "config.properties").read_text(),
        {**env, "PORT": str(port["containerPort"])},
        store,
    )
    assert f"inference_address=http://0.0.0.0:{port['containerPort']}" in props
    assert "disable_token_authorization=true" in props


def test_cloud_run_scaling_matches_the_batching_settings(service):
    spec = service["spec"]["template"]["spec"]
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    # A full batch of the largest model can form on one instance, and Cloud Run never sends
    # more than TorchServe's job queue of one model takes.
    assert max_batch_size() <= spec["containerConcurrency"] <= int(properties()["job_queue_size"])
    assert spec["timeoutSeconds"] >= max_response_timeout()
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1
    limits = container_spec(service, "torchserve")["resources"]["limits"]
    assert float(limits["cpu"]) >= 1 and limits["memory"].endswith("Gi")


def test_cloud_run_memory_covers_the_measured_container_with_headroom(service):
    """The limit comes from `make bench-memory`: the serving container's peak working set
    with every model loaded, under load, plus the headroom that the results file names."""
    measured = json.loads((ROOT / "benchmarks/results/container_memory.json").read_text())
    limit_gib = float(container_spec(service, "torchserve")["resources"]["limits"]["memory"][:-2])
    assert sorted(measured["models"]) == sorted(served_models())
    assert measured["headroom"] >= 1.2
    assert limit_gib * 1024 >= measured["peak_working_set_mib"] * measured["headroom"]
    memory = measured["recommended_cloud_run_memory"]
    assert f"memory: {memory}" in (GCP / "cloudrun-service.yaml").read_text()
    assert f"{measured['peak_working_set_mib']:,.0f} MiB" in (ROOT / "docs/deploy.md").read_text()


@pytest.mark.parametrize("name", served_models())
def test_vertex_container_routes_reach_the_model(name, tmp_path):
    spec = vertex.serving_container(name, "REGION-docker.pkg.dev/p/r/torchserve-bundle:t")
    assert spec["serving_container_predict_route"] == f"/predictions/{name}"
    assert spec["serving_container_health_route"] == "/ping"
    (port,) = spec["serving_container_ports"]
    # Vertex AI passes the first port as AIP_HTTP_PORT and the routes as AIP_*_ROUTE.
    env = {
        **spec["serving_container_environment_variables"],
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": spec["serving_container_health_route"],
        "AIP_PREDICT_ROUTE": spec["serving_container_predict_route"],
        "MODEL_STORE": str(fake_store(tmp_path / "store", served_models())),
        "BASE_CONFIG": str(ROOT / "config.properties"),
        "RUN_DIR": str(tmp_path / "run"),
    }
    run_dir, models, _ = ep.prepare(env)
    runtime = json.loads((run_dir / "runtime.json").read_text())
    assert models == [name] and runtime["inference"] == f"http://127.0.0.1:{port}"
    assert runtime["token_auth"] is False
    assert spec["serving_container_startup_probe_exec"] == ["python", "/opt/serve/healthcheck.py"]


def test_vertex_script_defaults_to_every_model_and_rejects_unknown_ones():
    cmd = [sys.executable, "-m", "deploy.gcp.vertex", "--project=p", "--region=r", "--image=i"]
    run = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(json.loads(run.stdout)) == served_models()
    run = subprocess.run([*cmd, "--models=nope", "--dry-run"], cwd=ROOT, capture_output=True)
    assert run.returncode == 2 and b"unknown models" in run.stderr


def test_vertex_training_job_runs_the_training_image_cloudbuild_pushes(cloudbuild):
    (job,) = docs(GCP / "vertex-training-job.yaml")
    (pool,) = job["workerPoolSpecs"]
    container = pool["containerSpec"]
    train_tag = next(
        a for a in cloudbuild["steps"][0]["args"] if str(a).startswith("--tag=")
    ).removeprefix("--tag=")
    # Same image: Cloud Build's substitutions are plain variables for envsubst here.
    as_envsubst = train_tag.replace("${_", "${")
    assert container["imageUri"] == as_envsubst
    env = env_of(container)
    assert env["EXPERIMENT"] == "${EXPERIMENT}"
    assert env["DATA_URI"].startswith("gs://${BUCKET}/")
    assert env["ARTIFACTS_URI"] == "gs://${BUCKET}/artifacts"
    # The job pushes its run to the DVC remote that cloudbuild.yaml's archive step pulls from;
    # a model without artifacts there stops the build with the job to run.
    assert env["DVC_REMOTE"] == "gs://${BUCKET}/dvc"
    archive = next(s for s in cloudbuild["steps"] if s["id"] == "archive")
    step = str(archive["args"])
    assert "dvc remote add --local --default --force gcs gs://${_BUCKET}/dvc" in step
    assert "python -m train.store pull $$m" in step
    assert "deploy/gcp/vertex-training-job.yaml" in step and "gcloud ai custom-jobs create" in step
    assert env["MODEL_STORE_URI"] == "gs://${BUCKET}/models/${TAG}"
    script = (ROOT / "docker" / "train-entrypoint.sh").read_text()
    assert 'python -m train.store push "$EXPERIMENT"' in script
    names = ("EXPERIMENT", "DATA_URI", "ARTIFACTS_URI", "MODEL_STORE_URI", "AIP_MODEL_DIR")
    for name in (*names, "DVC_REMOTE"):
        assert f"${{{name}" in script or f"${name}" in script, name


@pytest.mark.parametrize("name", served_models())
def test_each_served_model_trains_from_an_experiment_the_job_can_name(name):
    import yaml

    experiment = yaml.safe_load((ROOT / "model_archives" / name / "archive.yaml").read_text())
    assert (ROOT / "configs" / "experiment" / f"{experiment['experiment']}.yaml").is_file()


def test_kserve_config_keeps_the_bundle_settings():
    text = gcs.kserve_config((ROOT / "config.properties").read_text())
    assert "model_store=/mnt/models/model-store" in text
    assert text.count("model_store=") == 1
