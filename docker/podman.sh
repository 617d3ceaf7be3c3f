#!/bin/sh
# podman as this bundle's scripts run it: runc, and docker/containers.conf (no default ulimits).
# Usage: docker/podman.sh ARGS...   (any podman command line)
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
exec podman --runtime runc "$@"
