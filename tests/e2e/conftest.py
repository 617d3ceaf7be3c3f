"""Starts the real torchserve binary on free ports with .mar files built from tiny training runs."""

import shutil
from pathlib import Path

import pytest

from scripts.build_mar import build
from scripts.tsctl import Server, http, start_server, stop_server
from tests.conftest import mirror

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def graph_store(tiny_artifacts, tmp_path_factory) -> Path:
    """The .mar files of the graph models, built with the real torch-model-archiver."""
    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    store = tmp_path_factory.mktemp("model_store")
    for name in ("cora_gcn", "cora_gat", "mutag_gcn"):
        build(name, tiny_artifacts, store)
    return store


@pytest.fixture(scope="session")
def server(graph_store, tiny_artifacts, tmp_path_factory):
    """One torchserve for the e2e session, stopped (and checked to stop) at the end."""
    if shutil.which("java") is None:
        pytest.fail("java is not installed: run scripts/ensure_java.sh")
    workdir = tmp_path_factory.mktemp("torchserve")
    srv = start_server(graph_store, workdir, tiny_artifacts, ["cora_gcn", "cora_gat", "mutag_gcn"])
    yield srv
    stop_server(srv)


__all__ = ["Server", "http", "start_server", "stop_server"]  # for the other families' e2e tests
