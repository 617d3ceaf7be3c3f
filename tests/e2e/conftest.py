"""Starts the real torchserve binary on free ports with .mar files built from tiny training runs."""

import shutil
from pathlib import Path

import pytest

from scripts.build_mar import build
from scripts.tsctl import Server, http, start_server, stop_server
from tests.conftest import mirror, tiny_cfg

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


# Tiny runs of the other families: the pipeline, not the accuracy. Each trains once per session
# (tiny_run), for its family's e2e module and for the load-test smoke run over every model.
TINY_RUNS: dict[str, list[str]] = {
    # imdb_bert_int8 trains imdb_bert first (its artifact is missing), then quantizes it.
    "imdb_bert_int8": [
        "trainer.max_epochs=1",
        "data.train_samples=32",
        "data.test_samples=16",
        "data.max_length=64",
        "data.train_max_length=64",
        "data.batch_size=16",
    ],
    "qm9_et": [
        "data.limit=120",
        "trainer.max_epochs=1",
        "trainer.max_time=null",
        "model.net.embedding_dimension=16",
        "model.net.num_layers=1",
        "model.net.num_rbf=8",
        "model.net.num_heads=2",
    ],
    "flowers_vit": ["trainer.max_epochs=1", "data.max_per_class=10"],
    "flowers_cnn": ["trainer.max_epochs=1", "data.max_per_class=10"],
}
# What each tiny run leaves in the artifacts root.
PRODUCES = {"imdb_bert_int8": ("imdb_bert", "imdb_bert_int8")}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """tiny_run(experiment) -> (artifacts root, cfg): the tiny run of TINY_RUNS, trained once."""
    from hydra.utils import get_method

    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    root = tmp_path_factory.mktemp("family_artifacts")
    done: dict[str, object] = {}

    def run(experiment: str):
        if experiment not in done:
            cfg = tiny_cfg(experiment, root, *TINY_RUNS[experiment])
            get_method(cfg.runner)(cfg)
            done[experiment] = cfg
        return root, done[experiment]

    return run


@pytest.fixture(scope="session")
def every_model_store(graph_store, tiny_run, tmp_path_factory) -> Path:
    """A store with a .mar of every model in model_archives/ (graph ones from tiny_artifacts)."""
    store = tmp_path_factory.mktemp("every_model_store")
    for mar in graph_store.glob("*.mar"):
        shutil.copy(mar, store / mar.name)
    for experiment in TINY_RUNS:
        root, _ = tiny_run(experiment)
        for name in PRODUCES.get(experiment, (experiment,)):
            build(name, root, store)
    return store


__all__ = ["Server", "http", "start_server", "stop_server"]  # for the other families' e2e tests
