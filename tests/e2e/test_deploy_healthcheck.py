"""docker/healthcheck.py against the real torchserve of the e2e session (token auth on)."""

import pytest

from serve.server import not_ready
from tests.unit.deploy.helpers import ROOT, load_module

pytestmark = pytest.mark.e2e
healthcheck = load_module(ROOT / "docker" / "healthcheck.py")
MODELS = ["cora_gcn", "cora_gat", "mutag_gcn"]


def runtime(server, models=MODELS, **changes):
    """What docker/entrypoint.py writes to runtime.json, for the e2e server."""
    return {
        "inference": server.inference,
        "management": server.management,
        "models": models,
        "token_auth": True,
        "key_file": str(server.key_file),
        **changes,
    }


def test_healthy_when_every_model_has_its_workers_ready(server):
    assert healthcheck.problems(runtime(server)) == []


def test_a_model_that_is_not_loaded_is_unhealthy(server):
    found = healthcheck.problems(runtime(server, MODELS + ["not_loaded"]))
    assert found == ["not_loaded: describe answered 404"]


def test_without_tokens_torchserve_refuses_the_ping(server):
    (found,) = healthcheck.problems(runtime(server, token_auth=False))
    assert found.startswith("/ping answered 400")


def test_serve_status_applies_the_container_s_readiness_rule(server):
    assert not_ready(server, MODELS) == [] == healthcheck.problems(runtime(server))
    assert not_ready(server, MODELS + ["not_loaded"]) == ["not_loaded: describe answered 404"]
