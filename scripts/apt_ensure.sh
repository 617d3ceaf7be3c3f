#!/usr/bin/env bash
# scripts/apt_ensure.sh PACKAGE COMMAND...: install Debian's PACKAGE with apt (no recommends)
# when any COMMAND is missing from PATH, as root or with passwordless sudo; otherwise stop with
# the command to run. The one apt fallback of scripts/ensure_*.sh.
set -euo pipefail
pkg="$1"; shift
missing=0
for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || missing=1; done
[ "$missing" = 0 ] && exit 0
echo "$* not found: installing Debian's $pkg package with apt..." >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "ERROR: cannot install $pkg without root. Run: sudo apt-get install -y $pkg" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$pkg"; }; then
  echo "ERROR: apt-get could not install $pkg; install it and retry." >&2
  exit 1
fi
