#!/usr/bin/env bash
# `make monitor` and the monitoring tests need a real Prometheus (prometheus and promtool):
# Debian's `prometheus` package, installed with apt when either is missing
# (scripts/apt_ensure.sh, the same way scripts/ensure_java.sh installs Java).
# No recommends: the node exporter and the other exporters it suggests are not needed here.
# `make monitor` runs its own Prometheus on loopback. On a host with systemd the package also
# starts its own service on :9090 (`sudo systemctl disable --now prometheus` stops it); in a
# container without systemd nothing starts.
set -euo pipefail
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && exit 0
"$(dirname "$0")/apt_ensure.sh" prometheus prometheus promtool
prometheus --version | head -1
