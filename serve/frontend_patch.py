"""Puts the bundle's two changes to TorchServe 0.12.0's Java frontend into model-server.jar.

TorchServe's netty form decoder throws on a malformed multipart or urlencoded body (a part
without a name, binary bytes sent as a form), and its HttpRequestHandler's catch-all answers
500 before any worker sees the request (pytorch/serve #1819; 0.12.0 is the last release, so no
upstream fix will come). serve/frontend/ holds the one source file that decodes forms, changed
to answer 400 instead; the same file also sets the header Bundle-Oip-Route on the v2 infer
route (handlers/oip_v2.py ROUTE_HEADER), so the worker knows a request's route. This compiles
it against the installed jar and swaps its classes in.

Only the exact 0.12.0 jar is patched (its SHA-256 is checked), the original is kept beside it
as model-server.jar.orig, and a patched jar carries a marker entry with the source's hash, so a
second run does nothing. Needs `javac` (openjdk-17-jdk-headless; scripts/ensure_java.sh --jdk).

Standard library only: the image build runs it with Debian's python3 (Dockerfile).

    python serve/frontend_patch.py [--jar PATH] [--check]
"""

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "frontend"
# model-server.jar of the torchserve==0.12.0 wheel (requirements/serve.txt pins it).
JAR_0_12_0 = "ce340411ce54beaacd3dcfa31644a9aa369a83a36ed687172ba1088a13123dfe"
MARKER = "META-INF/torchserve-bundle-patch.sha256"
RELEASE = "11"  # the jar's own classes are Java 8 bytecode; TorchServe needs a Java 17 runtime


def installed_jar() -> Path:
    spec = importlib.util.find_spec("ts")
    if spec is None or spec.origin is None:
        sys.exit("frontend_patch: torchserve is not installed in this Python")
    return Path(spec.origin).parent / "frontend" / "model-server.jar"


def source_files() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def source_hash() -> str:
    h = hashlib.sha256()
    for f in source_files():
        h.update(f.relative_to(SOURCES).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def patched_with(jar: Path) -> str | None:
    """The source hash a patched jar carries, or None for an unpatched one."""
    with zipfile.ZipFile(jar) as z:
        return z.read(MARKER).decode().strip() if MARKER in z.namelist() else None


def compile_classes(jar: Path, out: Path) -> dict[str, bytes]:
    """{entry name: bytes} of the compiled sources, against the jar's classes."""
    javac = shutil.which("javac")
    if javac is None:
        sys.exit(
            "frontend_patch: javac not found. Run scripts/ensure_java.sh --jdk "
            "(apt-get install openjdk-17-jdk-headless)."
        )
    cmd = [javac, "--release", RELEASE, "-nowarn", "-cp", str(jar), "-d", str(out)]
    subprocess.run(cmd + [str(f) for f in source_files()], check=True)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.class"))}


def patch(jar: Path) -> None:
    want = source_hash()
    if patched_with(jar) == want:
        print(f"frontend_patch: {jar} already patched")
        return
    original = jar.with_name(jar.name + ".orig")
    if not original.exists():
        if sha256(jar) != JAR_0_12_0:
            sys.exit(
                f"frontend_patch: {jar} is not TorchServe 0.12.0's model-server.jar "
                "(the patch is written for that release only)"
            )
        shutil.copy2(jar, original)
    elif sha256(original) != JAR_0_12_0:
        sys.exit(f"frontend_patch: {original} is not TorchServe 0.12.0's model-server.jar")
    with tempfile.TemporaryDirectory() as tmp:
        classes = compile_classes(original, Path(tmp) / "classes")
        staged = Path(tmp) / jar.name
        # Every entry of the original but the recompiled classes (and any nested class of theirs
        # that the new source no longer has), then the new classes and the marker.
        replaced = {name.removesuffix(".class") for name in classes}
        with zipfile.ZipFile(original) as src, zipfile.ZipFile(staged, "w") as dst:
            for info in src.infolist():
                base = info.filename.removesuffix(".class").split("$")[0]
                if info.filename.endswith(".class") and base in replaced:
                    continue
                dst.writestr(info, src.read(info), compress_type=info.compress_type)
            for name, data in classes.items():
                dst.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
            dst.writestr(MARKER, want + "\n")
        shutil.move(staged, jar)
    print(f"frontend_patch: {jar}: {', '.join(sorted(classes))} replaced")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jar", type=Path, help="default: the installed torchserve's")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the jar is patched")
    args = ap.parse_args(argv)
    jar = args.jar or installed_jar()
    if args.check:
        sys.exit(0 if patched_with(jar) == source_hash() else 1)
    patch(jar)


if __name__ == "__main__":
    main()
