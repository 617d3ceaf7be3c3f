#!/usr/bin/env bash
# `make monitor` and the monitoring tests need a real Prometheus (prometheus and promtool).
# Install Debian's `prometheus` package with apt when either is missing, the same way
# scripts/ensure_java.sh installs Java; stop with a clear message when that is not possible.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
echo "Prometheus not found: installing Debian's prometheus package with apt..." >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "ERROR: cannot install Prometheus without root. Run: sudo apt-get install -y prometheus" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# No recommends: the node exporter and the other exporters it suggests are not needed here.
# `make monitor` runs its own Prometheus on loopback. On a host with systemd the package also
# starts its own service on :9090 (`sudo systemctl disable --now prometheus` stops it); in a
# container without systemd nothing starts.
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends prometheus; }; then
  echo "ERROR: apt-get could not install prometheus; install Prometheus 2.x and retry." >&2
  exit 1
fi
prometheus --version | head -1
