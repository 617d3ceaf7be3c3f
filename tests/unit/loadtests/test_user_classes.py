"""loadtests/locustfile.py makes one user class per model of the pool index, named after it.

Imported in a subprocess: Locust monkey-patches the standard library (gevent) on import.
"""

import json
import os
import subprocess
import sys

from serve.config import ROOT

# Loaded the way Locust loads a locustfile (its folder on sys.path, imported by file name).
PROBE = """
from locust.util.load_locustfile import load_locustfile
users, _ = load_locustfile("loadtests/locustfile.py")
import locustfile as m
print(",".join(sorted(users)))
print(m.{first}.__name__, m.{first}.__module__, issubclass(m.{first}, m.ModelUser))
"""


def classes(argv, env_pool=None, first="a_model"):
    env = {k: v for k, v in os.environ.items() if k != "LOADTEST_POOL"}
    if env_pool:
        env["LOADTEST_POOL"] = str(env_pool)
    code = f"import sys; sys.argv = {argv!r}\n" + PROBE.format(first=first)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def pool(path, *names):
    path.mkdir()
    (path / "index.json").write_text(json.dumps({n: {"payloads": []} for n in names}))
    return path


def test_one_class_per_pool_model_from_pool_option_or_environment(tmp_path):
    a = pool(tmp_path / "a", "b_model", "a_model")
    b = pool(tmp_path / "b", "a_model", "c_model")
    names, first = classes(["locust", "-f", "x", "--pool", str(a)])
    assert names == "a_model,b_model"
    assert first == "a_model locustfile True"
    assert classes(["locust", f"--pool={b}"])[0] == "a_model,c_model"
    assert classes(["locust"], env_pool=b)[0] == "a_model,c_model"
    # --pool wins over the environment, as Locust's own option parsing does.
    assert classes(["locust", "--pool", str(a)], env_pool=b)[0] == "a_model,b_model"
