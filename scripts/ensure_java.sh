#!/usr/bin/env bash
# TorchServe 0.12's frontend needs Java 17 or newer. Install openjdk-17-jre-headless with apt
# when it is missing; stop with a clear message when that is not possible.
#   --jdk  also javac (openjdk-17-jdk-headless), which serve/frontend_patch.py compiles with.
set -euo pipefail
PKG=openjdk-17-jre-headless
[ "${1:-}" = "--jdk" ] && PKG=openjdk-17-jdk-headless
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ] 2>/dev/null; then
  if [ "$PKG" = openjdk-17-jre-headless ] || command -v javac >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "Java 17+ ($PKG) not found (TorchServe needs it): installing it with apt..." >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "ERROR: cannot install Java without root. Run: sudo apt-get install -y $PKG" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$PKG"; }; then
  echo "ERROR: apt-get could not install $PKG; install Java 17 (with javac) and retry." >&2
  exit 1
fi
java -version
