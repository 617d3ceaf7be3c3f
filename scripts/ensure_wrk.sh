#!/usr/bin/env bash
# `make bench-peers` drives every server with wrk, a compiled load generator: Debian's `wrk`
# package, installed with apt when it is missing (scripts/apt_ensure.sh).
set -euo pipefail
exec "$(dirname "$0")/apt_ensure.sh" wrk wrk
