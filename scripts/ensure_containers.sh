#!/usr/bin/env bash
# `make image`, `make image-test` and the training image build with podman on runc, from a base
# image that debootstrap makes from Debian's packages (docker/base-image.sh). Each of the three
# is installed with apt when it is missing (scripts/apt_ensure.sh), or this stops with the one
# line to run. CONTAINER_ENGINE=docker (scripts/containers.py) needs none of them.
set -euo pipefail
here=$(dirname "$0")
"$here/apt_ensure.sh" podman podman
"$here/apt_ensure.sh" runc runc
"$here/apt_ensure.sh" debootstrap debootstrap
