#!/usr/bin/env bash
# `make bench-peers` drives every server with wrk, a compiled load generator. Install Debian's
# `wrk` package with apt when it is missing, the way scripts/ensure_java.sh installs Java.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
echo "wrk not found: installing Debian's wrk package with apt..." >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "ERROR: cannot install wrk without root. Run: sudo apt-get install -y wrk" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends wrk; }; then
  echo "ERROR: apt-get could not install wrk; install it and retry." >&2
  exit 1
fi
