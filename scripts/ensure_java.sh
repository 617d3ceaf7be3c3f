#!/usr/bin/env bash
# TorchServe 0.12's frontend needs Java 17 or newer. Install openjdk-17-jre-headless with apt
# when it is missing; stop with a clear message when that is not possible.
set -euo pipefail
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ] 2>/dev/null; then
  exit 0
fi
echo "Java 17+ not found (TorchServe needs it): installing openjdk-17-jre-headless with apt..." >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "ERROR: cannot install Java without root. Run: sudo apt-get install -y openjdk-17-jre-headless" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq openjdk-17-jre-headless; }; then
  echo "ERROR: apt-get could not install openjdk-17-jre-headless; install Java 17 and retry." >&2
  exit 1
fi
java -version
