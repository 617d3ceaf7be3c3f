#!/usr/bin/env bash
# Fills docker/wheelhouse/ with wheels for a requirements file, on the host, so `podman build`
# installs them with --no-index and no network or CA bundle inside the build. Without a
# wheelhouse the Dockerfile installs from PyPI and PyTorch's CPU index instead.
#   docker/wheelhouse.sh [requirements/serve.txt]   (requirements/train.txt for the train target)
# Torch must be the CPU build (torch==X resolves to X+cpu from PyTorch's CPU index or a local
# find-links folder; from plain PyPI it is the CUDA build, several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
req=${1:-requirements/serve.txt}
out=docker/wheelhouse
PIP=${PIP:-.venv/bin/pip}
mkdir -p "$out"
index=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
extra=()
if [ -n "$index" ]; then
  # Hosts that reach PyPI but not PyTorch's index (torch from a local find-links folder
  # instead) would otherwise retry it for every package.
  if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
      "$index/torch/" >/dev/null 2>&1; then
    extra=(--extra-index-url "$index")
  else
    echo "note: $index unreachable; torch must come from pip's configured indexes" >&2
  fi
fi
# Pure-Python packages that PyPI has only as source (torchmd-net 3.1.0, and hydra-core's
# antlr4 runtime): their wheels are platform independent, so build them here first; the
# binary-only download below then finds them in $out.
sdist_only=()
pin=$(grep -hiE '^torchmd-net==' "$req" || true)
[ -n "$pin" ] && sdist_only+=("$pin")
grep -qiE '^hydra-core==' "$req" && sdist_only+=("antlr4-python3-runtime==4.9.3")
if [ ${#sdist_only[@]} -gt 0 ]; then
  $PIP wheel --no-deps --wheel-dir "$out" --quiet "${sdist_only[@]}"
fi
# The image's Python is Debian bookworm's 3.11 on x86_64 (glibc 2.36): binary wheels only.
$PIP download --dest "$out" --find-links "$out" --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform linux_x86_64 \
  "${extra[@]}" -r "$req" --quiet
if ls "$out"/torch-*.whl >/dev/null 2>&1 && ! ls "$out"/torch-*+cpu-*.whl >/dev/null 2>&1; then
  echo "ERROR: $out holds a non-CPU torch wheel; remove it and point TORCH_INDEX at a CPU index" >&2
  exit 1
fi
echo "$out: $(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1)"
