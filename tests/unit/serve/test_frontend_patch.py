"""serve/frontend_patch.py: the bundle's fix to TorchServe 0.12.0's form decoding, in the jar."""

import shutil
import zipfile

import pytest

from serve import frontend_patch

CLASS = "org/pytorch/serve/http/api/rest/InferenceRequestHandler.class"


def test_the_venvs_jar_is_patched():
    # `make java` (a prerequisite of `make test` and `make serve`) patches .venv's jar.
    jar = frontend_patch.installed_jar()
    assert frontend_patch.patched_with(jar) == frontend_patch.source_hash()
    assert frontend_patch.sha256(jar.with_name(jar.name + ".orig")) == frontend_patch.JAR_0_12_0


def test_a_jar_of_another_release_is_refused_and_left_alone(tmp_path):
    jar = tmp_path / "model-server.jar"
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr(CLASS, b"not 0.12.0")
    before = jar.read_bytes()
    with pytest.raises(SystemExit, match="not TorchServe 0.12.0"):
        frontend_patch.patch(jar)
    assert jar.read_bytes() == before and not (tmp_path / "model-server.jar.orig").exists()


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs javac (make java)")
def test_patching_swaps_the_one_class_once(tmp_path):
    installed = frontend_patch.installed_jar()
    jar = tmp_path / "model-server.jar"
    shutil.copy2(installed.with_name(installed.name + ".orig"), jar)
    frontend_patch.patch(jar)
    with zipfile.ZipFile(jar) as new, zipfile.ZipFile(tmp_path / "model-server.jar.orig") as old:
        assert set(new.namelist()) == set(old.namelist()) | {frontend_patch.MARKER}
        crc = {i.filename: i.CRC for i in new.infolist()}
        changed = [i.filename for i in old.infolist() if crc[i.filename] != i.CRC]
        assert changed == [CLASS]
        assert b"Malformed form body" in new.read(CLASS)
    patched = jar.read_bytes()
    frontend_patch.patch(jar)  # a second run does nothing
    assert jar.read_bytes() == patched
