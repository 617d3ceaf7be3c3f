"""Starts the real torchserve binary on free ports with .mar files built from tiny training runs.

Every model comes from the registry (model_archives/*/archive.yaml): its tiny run is the
spec's `tiny` overrides, trained after the models it `requires`, all into one artifacts root.
"""

import shutil
from pathlib import Path

import pytest

from serve.archive import build_mar
from serve.server import Server, model_names, start
from tests.conftest import GRAPH_MODELS, mirror, tiny_cfg
from tests.schemas import check_response
from train.core.registry import specs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session", autouse=True)
def answers_follow_the_contract():
    """Every answer of `Server.predict` in the e2e tests is checked against the model's
    generated schema (tests/schemas.py): a wrong shape fails the test that received it."""
    real = Server.predict

    def predict(self, name, *args, **kwargs):
        status, body, headers = real(self, name, *args, **kwargs)
        check_response(name, status, body)
        return status, body, headers

    patch = pytest.MonkeyPatch()
    patch.setattr(Server, "predict", predict)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def graph_store(tiny_artifacts, tmp_path_factory) -> Path:
    """The .mar files of the graph models, built with the real torch-model-archiver."""
    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    store = tmp_path_factory.mktemp("model_store")
    for name in GRAPH_MODELS:
        build_mar(name, tiny_artifacts, store)
    return store


@pytest.fixture(scope="session")
def server(graph_store, tiny_artifacts, tmp_path_factory):
    """One torchserve for the e2e session, stopped (and checked to stop) at the end."""
    if shutil.which("java") is None:
        pytest.fail("java is not installed: run scripts/ensure_java.sh")
    workdir = tmp_path_factory.mktemp("torchserve")
    srv = start(graph_store, workdir, list(GRAPH_MODELS), artifacts=tiny_artifacts)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tiny_run(tiny_artifacts):
    """tiny_run(name) -> (artifacts root, cfg): the model's tiny run, trained once a session.

    The models it `requires` are trained first, into the same root; the graph models of
    tiny_artifacts are already there.
    """
    from hydra.utils import get_method

    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    by_name = {s.name: s for s in specs()}
    done: dict[str, object] = {}

    def run(name: str):
        if name not in done:
            model = by_name[name]
            for required in model.requires:
                run(required)
            cfg = tiny_cfg(model.experiment, tiny_artifacts, *model.tiny)
            if not (tiny_artifacts / name / "model.pt").exists():
                get_method(cfg.runner)(cfg)
            done[name] = cfg
        return tiny_artifacts, done[name]

    return run


@pytest.fixture(scope="session")
def every_model_store(tiny_run, tmp_path_factory) -> Path:
    """A store with a .mar of every registered model, each from its tiny run."""
    store = tmp_path_factory.mktemp("every_model_store")
    for model in specs():
        root, _ = tiny_run(model.name)
        build_mar(model.name, root, store)
    return store


@pytest.fixture(scope="session")
def every_model_server(every_model_store, tiny_artifacts, tmp_path_factory):
    """One torchserve with every model, as `make serve` starts them (payload logs on, in
    <workdir>/payload_log), shared by the tests that need them all (load test smoke, fuzzing,
    the payload log); stopped at the end of the session."""
    workdir = tmp_path_factory.mktemp("every_model_ts")
    names = model_names(every_model_store)
    srv = start(
        every_model_store,
        workdir,
        names,
        artifacts=tiny_artifacts,
        payload_dir=workdir / "payload_log",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory) -> Path:
    """A real example request per model, written from the data as `make examples` does."""
    from train.core.examples import write_examples

    out = tmp_path_factory.mktemp("examples")
    write_examples(out)
    return out
