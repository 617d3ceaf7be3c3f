"""The remote model store: each artifacts/<name>/ is the DVC output of dvc.yaml's train stage.

    python -m train.store pull NAME   fetch artifacts/NAME when the remote holds a run of
                                           it with this checkout's code, data and params; exit 1
                                           when it holds none
    python -m train.store push NAME   record the just-trained artifacts/NAME (dvc.lock, the
                                           DVC cache and its run cache) and push it to the remote

`make train` (and so `make serve`) tries `pull` before training a missing artifact and `push`
after it (docs/pipeline.md). The key is DVC's run cache: every recorded run of a stage is filed
under the hash of its command, dependencies and params, with the hashes of what it wrote. A
checkout whose code, data and params hash alike finds the run that someone else pushed, at any
commit, without a dvc.lock committed for it; dvc.lock is then written as if it had trained.
"""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from train.core.registry import ROOT
from train.pipeline import PARAMS, write_params


class StoreError(RuntimeError):
    """The remote cannot give this artifact: why, in one line."""


def dvc(*args: str, root: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the dvc CLI of this interpreter's environment in the repository `root`."""
    exe = Path(sys.executable).parent / "dvc"
    proc = subprocess.run(
        [str(exe) if exe.exists() else "dvc", *args], cwd=root, capture_output=True, text=True
    )
    if check and proc.returncode:
        raise StoreError(f"dvc {' '.join(args)}: {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc


def remote(root: Path = ROOT) -> str:
    """The default remote's name; StoreError when none is configured."""
    name = dvc("remote", "default", root=root, check=False).stdout.strip()
    if not name:
        raise StoreError("no DVC remote is configured (dvc remote add -d ...)")
    return name


def stale(name: str, root: Path = ROOT) -> list[str]:
    """What differs from the dvc.lock entry of train@<name>, other than the artifact itself:
    changed code, data or params, or a stage that dvc.lock does not hold (`dvc status`)."""
    write_params(name, root / PARAMS)
    out = json.loads(dvc("status", "--json", f"train@{name}", root=root).stdout or "{}")
    reasons = []
    for entry in out.get(f"train@{name}", []):
        if isinstance(entry, str):  # "changed command", "always changed"
            reasons.append(entry)
        elif isinstance(entry, dict):
            for kind, paths in entry.items():
                if kind != "changed outs":
                    reasons += [f"{kind}: {p} {state}" for p, state in dict(paths).items()]
    return reasons


def pull(name: str, root: Path = ROOT) -> Path:
    """artifacts/<name>/ from the remote's run of train@<name> with this checkout's code, data
    and params, then recorded in dvc.lock; StoreError when the remote holds no such run."""
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotFoundError

    where = remote(root)
    write_params(name, root / PARAMS)
    # DVC's Python API, not its CLI: `dvc pull --run-cache` would fetch the outputs of every
    # run ever pushed, and `dvc repro --pull` trains when no run matches. The API resolves
    # dvc.yaml's paths against the working directory, hence the chdir.
    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        repo.stage_cache.pull(None)  # the run-cache entries: a small YAML file per run
        (stage,) = repo.stage.collect(f"train@{name}")
        try:
            repo.stage_cache.restore(stage, pull=True)
            found = True
        except RunCacheNotFoundError:
            found = False
    if not found:
        why = "; ".join(stale(name, root)[:3]) or "its output is not on the remote"
        raise StoreError(
            f"remote {where!r} holds no run of train@{name} with this checkout's code, data "
            f"and params (against dvc.lock: {why})"
        )
    model = root / "artifacts" / name / "model.pt"
    if not model.is_file():
        raise StoreError(f"remote {where!r} gave no {model.relative_to(root)}")
    dvc("commit", "--force", "-q", f"params@{name}", f"train@{name}", root=root)
    return model.parent


def push(name: str, root: Path = ROOT) -> str:
    """Records artifacts/<name>/ in dvc.lock, the cache and the run cache, then pushes it and the
    run cache to the default remote; StoreError (after the record) when it cannot push."""
    write_params(name, root / PARAMS)
    dvc("commit", "--force", "-q", f"params@{name}", f"train@{name}", root=root)
    where = remote(root)
    dvc("push", "--run-cache", "-q", f"train@{name}", root=root)
    return f"{name}: recorded in dvc.lock and pushed to remote {where!r}"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("pull", "push"):
        print(__doc__, file=sys.stderr)
        return 2
    action, name = argv
    try:
        print(f"{name}: pulled into {pull(name)}" if action == "pull" else push(name))
    except StoreError as e:
        print(f"{name}: {action} skipped: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
