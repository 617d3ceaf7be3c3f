"""dvc.yaml (train/pipeline.py): current, one foreach item per served model, a DAG that DVC
reads and orders; and the remote model store (train/store.py) against a real GCS emulator."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import ROOT
from tests.gcs_emulator import object_names, running
from train import store
from train.core.registry import experiment_config, served_models, spec
from train.pipeline import DVC_YAML, render, write_params

DVC = str(Path(sys.executable).parent / "dvc")


def stages() -> dict:
    return yaml.safe_load(DVC_YAML.read_text())["stages"]


def test_dvc_yaml_is_what_the_registry_and_configs_give():
    assert DVC_YAML.read_text() == render(), "dvc.yaml is stale: run `make pipeline`"


def test_every_served_model_has_its_params_train_and_archive_stage():
    s = stages()
    models = served_models()
    assert s["params"]["foreach"] == models and s["archive"]["foreach"] == models
    train = s["train"]["foreach"]
    assert list(train) == models
    prepared = {next(iter(o)) for o in s["prepare"]["outs"]}
    for name, item in train.items():
        cfg = experiment_config(spec(name).experiment)
        assert item["data"] == cfg.data.name and f"data/{item['data']}" in prepared, name
        assert item["family"] == cfg.runner.split(".")[1], name
        assert Path(ROOT / "train" / item["family"]).is_dir(), name
        required = spec(name).requires
        assert item["upstream"] == (
            f"artifacts/{required[0]}" if required else f"configs/experiment/{name}.yaml"
        )
    assert train["imdb_bert_int8"]["upstream"] == "artifacts/imdb_bert"


def test_a_dry_repro_runs_each_stage_once_after_what_it_needs():
    run = subprocess.run(
        [DVC, "repro", "--dry", "--force"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    order = re.findall(r"Running stage '([^']+)'", run.stdout)
    models = served_models()
    expected = {"prepare"} | {f"{k}@{m}" for k in ("params", "train", "archive") for m in models}
    assert sorted(order) == sorted(expected)
    at = {stage: i for i, stage in enumerate(order)}
    for m in models:
        assert at["prepare"] < at[f"params@{m}"] < at[f"train@{m}"] < at[f"archive@{m}"], m
    assert at["train@imdb_bert"] < at["train@imdb_bert_int8"]


def test_dvc_lock_is_not_git_ignored():
    """DVC refuses a git-ignored dvc.lock ("is git-ignored") once one exists, as it does after
    any training run; it is kept out of git by not being committed, not by .gitignore."""
    ignored = subprocess.run(["git", "check-ignore", "-q", "dvc.lock"], cwd=ROOT)
    assert ignored.returncode == 1, "dvc.lock is git-ignored: DVC will refuse it"


def test_the_params_file_is_the_composed_config_with_its_interpolations(tmp_path):
    path = write_params("flowers_cnn", tmp_path)
    written = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert written == OmegaConf.to_container(experiment_config("flowers_cnn"), resolve=False)
    assert written["paths"]["data"] == "${oc.env:DATA_DIR,data}"  # not this machine's path


def checkout_copy(dest: Path) -> Path:
    """The checkout's files (tracked and not ignored), without data, artifacts or git."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run([DVC, "config", "--local", "core.no_scm", "true"], cwd=dest, check=True)
    return dest


def set_remote(repo: Path, url: str, **options: str) -> None:
    subprocess.run([DVC, "remote", "add", "--local", "-d", "-f", "t", url], cwd=repo, check=True)
    for key, value in options.items():
        subprocess.run([DVC, "remote", "modify", "--local", "t", key, value], cwd=repo, check=True)


def test_artifacts_push_to_a_gcs_remote_and_pull_back_while_nothing_changed(
    tiny_artifacts, data_root, tmp_path
):
    """A trained artifact is recorded (dvc.lock, the run cache) and pushed to gs://; a checkout
    with the same code, data and params and no dvc.lock pulls it back byte for byte; changed
    code, or a remote without it, is a StoreError (and `make train` trains)."""
    name = "mutag_gcn"
    repo = checkout_copy(tmp_path / "repo")
    shutil.copytree(Path(data_root) / "MUTAG" / "raw", repo / "data" / "MUTAG" / "raw")
    shutil.copytree(tiny_artifacts / name, repo / "artifacts" / name)
    model = (tiny_artifacts / name / "model.pt").read_bytes()

    def forget() -> None:
        """What a teammate's fresh checkout lacks: the artifact, the DVC cache and dvc.lock."""
        shutil.rmtree(repo / "artifacts" / name)
        shutil.rmtree(repo / ".dvc" / "cache")
        (repo / "dvc.lock").unlink()

    with running("bundle", tmp_path / "emulator.log") as host:
        set_remote(repo, "gs://bundle/models", endpointurl=host, allow_anonymous_login="true")
        assert "pushed to remote 't'" in store.push(name, repo)
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        assert lock[f"train@{name}"]["outs"][0]["path"] == f"artifacts/{name}"
        stored = object_names(host, "bundle", "models/")
        assert any(n.startswith("models/files/md5/") for n in stored), stored
        assert any(n.startswith("models/runs/") for n in stored), stored  # the run cache

        forget()
        assert (store.pull(name, repo) / "model.pt").read_bytes() == model
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        assert f"train@{name}" in lock and store.stale(name, repo) == []

        forget()
        graph = repo / "train" / "graph" / "graph.py"
        graph.write_text(graph.read_text() + "\n# a change to the training code\n")
        with pytest.raises(store.StoreError, match="holds no run of train@mutag_gcn"):
            store.pull(name, repo)
        assert not (repo / "artifacts" / name / "model.pt").exists()

    graph.write_text(graph.read_text().removesuffix("\n# a change to the training code\n"))
    (tmp_path / "empty").mkdir()
    set_remote(repo, str(tmp_path / "empty"))
    with pytest.raises(store.StoreError, match="holds no run"):
        store.pull(name, repo)
