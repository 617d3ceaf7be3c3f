"""deploy/gcp/gcs.py and the DVC remote against a real GCS emulator (gcp-storage-emulator)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.gcp import gcs
from serve.config import read_properties
from tests.conftest import ROOT, mirror
from tests.gcs_emulator import running

BUCKET = "bundle"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """gcp-storage-emulator on a free loopback port with one bucket; STORAGE_EMULATOR_HOST set."""
    with running(BUCKET, tmp_path_factory.mktemp("gcs") / "emulator.log") as host:
        yield host


@pytest.fixture
def client(emulator):
    return gcs.client(project="test")


def objects(client, prefix: str) -> dict[str, bytes]:
    return {b.name: b.download_as_bytes() for b in client.list_blobs(BUCKET, prefix=prefix)}


def test_split_uri_rejects_what_is_not_a_bucket_path():
    assert gcs.split_uri("gs://b/x/y/") == ("b", "x/y")
    assert gcs.split_uri("gs://b") == ("b", "")
    for bad in ("s3://b/x", "gs:///x", "/local/path"):
        with pytest.raises(ValueError):
            gcs.split_uri(bad)


def test_push_then_pull_round_trips_a_tree_following_links(client, tmp_path):
    src = tmp_path / "src"
    (src / "Cora" / "raw").mkdir(parents=True)
    (src / "Cora" / "raw" / "ind.cora.x").write_bytes(os.urandom(3000))
    target = tmp_path / "outside.bin"
    target.write_bytes(b"linked file content")
    # data/ holds symlinks into the read-only mirror: the link's content is what gets pushed.
    (src / "Cora" / "raw" / "linked.bin").symlink_to(target)
    pushed = gcs.push(src, f"gs://{BUCKET}/tree/")
    assert sorted(pushed) == [
        f"gs://{BUCKET}/tree/Cora/raw/ind.cora.x",
        f"gs://{BUCKET}/tree/Cora/raw/linked.bin",
    ]
    got = gcs.pull(f"gs://{BUCKET}/tree", tmp_path / "dst")
    assert len(got) == 2
    for rel in ("Cora/raw/ind.cora.x", "Cora/raw/linked.bin"):
        assert (tmp_path / "dst" / rel).read_bytes() == (src / rel).read_bytes()


def test_push_skips_objects_that_already_have_the_same_content(client, tmp_path):
    f = tmp_path / "meta.json"
    f.write_text('{"a": 1}')
    uri = f"gs://{BUCKET}/skip/meta.json"
    gcs.push(f, uri)
    first = client.bucket(BUCKET).get_blob("skip/meta.json").generation
    gcs.push(f, uri)
    assert client.bucket(BUCKET).get_blob("skip/meta.json").generation == first
    f.write_text('{"a": 2}')
    gcs.push(f, uri)
    blob = client.bucket(BUCKET).get_blob("skip/meta.json")
    assert blob.generation != first
    assert blob.download_as_bytes() == b'{"a": 2}'


def test_pull_of_an_empty_prefix_fails_loudly(client, tmp_path):
    with pytest.raises(FileNotFoundError, match="no objects"):
        gcs.pull(f"gs://{BUCKET}/nothing-here", tmp_path)


def test_push_models_writes_the_layout_kserve_reads(client, tmp_path):
    store = tmp_path / "model_store"
    store.mkdir()
    mars = {name: os.urandom(9 * 1024 * 1024 + i) for i, name in enumerate(["a_model", "b_model"])}
    for name, content in mars.items():
        (store / f"{name}.mar").write_bytes(content)
    (store / "notes.txt").write_text("not a model")
    pushed = gcs.push_models(f"gs://{BUCKET}/models/abc123", store)
    assert len(pushed) == 3
    found = objects(client, "models/abc123/")
    assert set(found) == {
        "models/abc123/model-store/a_model.mar",
        "models/abc123/model-store/b_model.mar",
        "models/abc123/config/config.properties",
    }
    for name, content in mars.items():
        assert found[f"models/abc123/model-store/{name}.mar"] == content
    # The bundle's settings travel unchanged; only the store moves to where KServe mounts it.
    config = tmp_path / "config.properties"
    config.write_bytes(found["models/abc123/config/config.properties"])
    pushed_props, props = read_properties(config), read_properties(ROOT / "config.properties")
    assert pushed_props["model_store"] == "/mnt/models/model-store"
    assert pushed_props["allowed_urls"] == r"^file:///mnt/models/model-store/[A-Za-z0-9_.-]+\\.mar$"
    for key in set(props) - {"model_store", "allowed_urls"}:
        assert pushed_props[key] == props[key], key


def test_push_models_of_named_models_only_and_missing_ones_fail(client, tmp_path):
    (tmp_path / "x.mar").write_bytes(b"x")
    (tmp_path / "y.mar").write_bytes(b"y")
    gcs.push_models(f"gs://{BUCKET}/models/only", tmp_path, models=["y"])
    assert set(objects(client, "models/only/model-store/")) == {"models/only/model-store/y.mar"}
    with pytest.raises(FileNotFoundError):
        gcs.push_models(f"gs://{BUCKET}/models/none", tmp_path, models=["z"])
    with pytest.raises(FileNotFoundError, match="no .mar"):
        gcs.push_models(f"gs://{BUCKET}/models/none", tmp_path / "empty-store")


def test_cli_pushes_and_pulls(emulator, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("via the command line")
    env = {**os.environ, "STORAGE_EMULATOR_HOST": emulator}
    for args in (
        ["push", str(tmp_path / "a"), f"gs://{BUCKET}/cli"],
        ["pull", f"gs://{BUCKET}/cli", str(tmp_path / "b")],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "deploy.gcp.gcs", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
    assert (tmp_path / "b" / "f.txt").read_text() == "via the command line"


def test_training_data_pulled_from_gcs_loads_like_the_mirror(client, tmp_path):
    """What the training image does: gs://.../data -> DATA_MIRROR -> the dataset loader."""
    if mirror() is None:
        pytest.skip("DATA_MIRROR is not set")
    from train.graph.data import load_tu

    src = Path(mirror()) / "MUTAG"
    gcs.push(src, f"gs://{BUCKET}/data/MUTAG")
    pulled = tmp_path / "mirror"
    gcs.pull(f"gs://{BUCKET}/data", pulled)
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files and all(
        (pulled / "MUTAG" / f).read_bytes() == (src / f).read_bytes() for f in files
    )
    dataset = load_tu("MUTAG", str(tmp_path / "data"), str(pulled))
    assert len(dataset) == 188 and dataset.num_classes == 2
    assert (tmp_path / "data" / "MUTAG" / "raw").is_dir()


DVC_SCRIPT = """
import os, shutil, sys
from pathlib import Path
from dvc.repo import Repo
repo_dir, endpoint = Path(sys.argv[1]), sys.argv[2]
repo = Repo.init(str(repo_dir), no_scm=True)
with repo.config.edit() as conf:
    conf["core"]["remote"] = "gcs"
    conf["remote"]["gcs"] = {
        "url": "gs://bundle/dvc", "endpointurl": endpoint, "allow_anonymous_login": True
    }
(repo_dir / "data").mkdir()
(repo_dir / "data" / "raw.bin").write_bytes(bytes(range(256)) * 40)
repo.add(str(repo_dir / "data"))
print("pushed", repo.push())
shutil.rmtree(repo_dir / "data")
shutil.rmtree(repo_dir / ".dvc" / "cache")
repo = Repo(str(repo_dir))
print("pulled", repo.pull()["stats"]["fetched"])
"""


def test_dvc_remote_on_gcs_pushes_and_pulls(client, emulator, tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", DVC_SCRIPT, str(tmp_path / "repo"), emulator],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "pushed 2" in run.stdout and "pulled 2" in run.stdout, run.stdout  # .dir + file
    assert (tmp_path / "repo" / "data" / "raw.bin").read_bytes() == bytes(range(256)) * 40
    stored = objects(client, "dvc/")
    assert stored and all(k.startswith("dvc/files/md5/") for k in stored)
    assert bytes(range(256)) * 40 in stored.values()
