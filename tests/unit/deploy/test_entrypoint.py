"""docker/entrypoint.py: TorchServe's config from PORT / AIP_* / TOKEN_AUTH / MODELS."""

import json
import re
from pathlib import Path

import pytest

from serve.config import read_properties
from tests.unit.deploy.helpers import ROOT, entrypoint, fake_store, properties, served_models

ep = entrypoint()


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({}, 8080),
        ({"PORT": "9000"}, 9000),
        ({"AIP_HTTP_PORT": "7080"}, 7080),
        ({"AIP_HTTP_PORT": "7080", "PORT": "9000"}, 7080),  # Vertex AI's variable wins
    ],
)
def test_inference_port_comes_from_the_platform(env, port):
    assert ep.inference_port(env) == port


@pytest.mark.parametrize(
    "env",
    [
        {"PORT": "http"},
        {"PORT": "0"},
        {"PORT": "70000"},
        {"PORT": "8081"},  # management, on loopback inside the container
        {"AIP_HTTP_PORT": "7070"},  # gRPC
        {"PORT": "9000", "METRICS_PORT": "9000"},
    ],
)
def test_ports_that_cannot_work_stop_the_container_with_a_reason(env):
    with pytest.raises(ep.ConfigError, match="port"):
        ep.inference_port(env)


def render(env, tmp_path):
    path = tmp_path / "config.properties"
    path.write_text(ep.render_config((ROOT / "config.properties").read_text(), env, tmp_path))
    return read_properties(path)


def test_container_config_opens_only_the_inference_listener(tmp_path):
    props = render({"PORT": "9000"}, tmp_path)
    assert props["inference_address"] == "http://0.0.0.0:9000"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["model_store"] == str(tmp_path)
    assert props["disable_token_authorization"] == "false"
    # Everything else is the bundle's own setting, unchanged and not duplicated.
    changed = set(props) - set(properties())
    assert changed <= {"disable_token_authorization"}
    for key in ("max_request_size", "job_queue_size", "token_expiration_min", "metrics_mode"):
        assert props[key] == properties()[key]
    text = (tmp_path / "config.properties").read_text()
    assert len(re.findall(r"^inference_address=", text, flags=re.MULTILINE)) == 1


def test_token_auth_is_on_unless_switched_off_explicitly(tmp_path):
    assert render({}, tmp_path)["disable_token_authorization"] == "false"
    assert render({"TOKEN_AUTH": "on"}, tmp_path)["disable_token_authorization"] == "false"
    assert render({"TOKEN_AUTH": "off"}, tmp_path)["disable_token_authorization"] == "true"
    with pytest.raises(ep.ConfigError, match="TOKEN_AUTH"):
        render({"TOKEN_AUTH": "maybe"}, tmp_path)


def test_metrics_port_opens_prometheus_to_the_cluster(tmp_path):
    assert render({"METRICS_PORT": "8082"}, tmp_path)["metrics_address"] == "http://0.0.0.0:8082"


def test_models_default_to_the_whole_store_and_must_exist(tmp_path):
    store = fake_store(tmp_path / "store", ["b_model", "a_model"])
    assert ep.served_models({}, store) == ["a_model", "b_model"]
    assert ep.served_models({"MODELS": "all"}, store) == ["a_model", "b_model"]
    assert ep.served_models({"MODELS": "b_model"}, store) == ["b_model"]
    with pytest.raises(ep.ConfigError, match="c_model"):
        ep.served_models({"MODELS": "b_model,c_model"}, store)
    with pytest.raises(ep.ConfigError, match="no .mar"):
        ep.served_models({}, fake_store(tmp_path / "empty", []))


def test_vertex_routes_must_be_what_torchserve_serves():
    ep.check_vertex_routes(
        {"AIP_HEALTH_ROUTE": "/ping", "AIP_PREDICT_ROUTE": "/predictions/a"}, ["a"]
    )
    with pytest.raises(ep.ConfigError, match="AIP_HEALTH_ROUTE"):
        ep.check_vertex_routes({"AIP_HEALTH_ROUTE": "/health"}, ["a"])
    with pytest.raises(ep.ConfigError, match="AIP_PREDICT_ROUTE"):
        ep.check_vertex_routes({"AIP_PREDICT_ROUTE": "/predictions/b"}, ["a"])
    with pytest.raises(ep.ConfigError, match="AIP_PREDICT_ROUTE"):
        ep.check_vertex_routes({"AIP_PREDICT_ROUTE": "/predict"}, ["a"])


def test_prepare_writes_what_the_healthcheck_reads(tmp_path):
    models = served_models()
    store = fake_store(tmp_path / "store", models)
    env = {
        "MODEL_STORE": str(store),
        "BASE_CONFIG": str(ROOT / "config.properties"),
        "RUN_DIR": str(tmp_path / "run"),
        "PORT": "9000",
    }
    run_dir, loaded, cmd = ep.prepare(env)
    runtime = json.loads((run_dir / "runtime.json").read_text())
    assert loaded == runtime["models"] == models
    assert runtime["inference"] == "http://127.0.0.1:9000"
    assert runtime["token_auth"] is True
    assert runtime["key_file"] == str(run_dir / "key_file.json")
    assert read_properties(run_dir / "config.properties")["inference_address"].endswith(":9000")
    # torchserve loads exactly these archives, each under its own name.
    assert cmd[cmd.index("--models") + 1 :] == [f"{m}={m}.mar" for m in models]
    assert (
        "--foreground" in cmd
        and (ep.HERE / "log4j2.xml").name in cmd[cmd.index("--log-config") + 1]
    )
    assert (ep.HERE / "log4j2.xml").is_file()


def test_metrics_config_is_the_bundles_metrics_yaml_by_absolute_path(tmp_path):
    base = ROOT / "config.properties"
    assert ep.metrics_config({}, base) == str(ROOT / "metrics.yaml")
    assert ep.metrics_config({"METRICS_CONFIG": "/x/m.yaml"}, base) == "/x/m.yaml"
    # A base config without a metrics.yaml beside it (and no image): TorchServe's own file.
    fallback = ep.metrics_config({}, tmp_path / "config.properties")
    assert fallback.endswith("ts/configs/metrics.yaml") and Path(fallback).is_file()
    props = ep.render_config(base.read_text(), {"METRICS_CONFIG": "/x/m.yaml"}, tmp_path)
    assert "metrics_config=/x/m.yaml" in props.splitlines()
