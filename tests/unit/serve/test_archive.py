"""serve/archive.py: a real torch-model-archiver run packs what the registry says."""

import hashlib
import json
import re
import subprocess
import zipfile

import pytest
import torch

from serve.archive import build_mar, git_state, model_version
from serve.config import ROOT
from train.core.registry import served_models, spec


def test_a_missing_artifact_is_refused_with_the_fix(tmp_path):
    name = served_models()[0]
    with pytest.raises(FileNotFoundError, match=f"make train MODELS={name}"):
        build_mar(name, tmp_path, tmp_path / "store")


def test_the_mar_holds_handler_helpers_meta_and_config(tmp_path):
    name = next(s.name for s in map(spec, served_models()) if not s.artifact_files)
    art = tmp_path / "art" / name
    art.mkdir(parents=True)
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(art / "model.pt"))
    (art / "meta.json").write_text(json.dumps({"name": name}))
    (art / "metrics.json").write_text("{}")
    mar = build_mar(name, tmp_path / "art", tmp_path / "store", "7.0")
    assert mar == tmp_path / "store" / f"{name}.mar"
    with zipfile.ZipFile(mar) as z:
        files = set(z.namelist())
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
    model = spec(name)
    expected = {"model.pt", "meta.json", "metrics.json", "model-config.yaml"}
    expected |= {f.rsplit("/", 1)[-1] for f in (model.handler, *model.extra_files)}
    assert expected <= files
    assert manifest["model"]["modelName"] == name and manifest["model"]["modelVersion"] == "7.0"
    assert manifest["model"]["handler"] == model.handler.rsplit("/", 1)[-1]


def test_by_default_the_version_names_the_commit_and_the_weights(tmp_path):
    name = next(s.name for s in map(spec, served_models()) if not s.artifact_files)
    art = tmp_path / "art" / name
    art.mkdir(parents=True)
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(art / "model.pt"))
    (art / "meta.json").write_text("{}")
    (art / "metrics.json").write_text("{}")
    with zipfile.ZipFile(build_mar(name, tmp_path / "art", tmp_path / "store")) as z:
        version = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]
    commit = subprocess.run(
        ["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    digest = hashlib.md5((art / "model.pt").read_bytes()).hexdigest()[:8]
    assert version == model_version(art)
    assert re.fullmatch(rf"{commit}(-dirty)?-{digest}", version), version
    torch.jit.script(torch.nn.Linear(2, 3)).save(str(art / "model.pt"))
    assert model_version(art) != version  # other weights, another version
    assert git_state(tmp_path) == "nogit"
