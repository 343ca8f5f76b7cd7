#!/bin/sh
# Run by scripts/build-comfyui-image inside a container of the base image with no network:
# the Python environment from the wheel cache (/wheels, read-only) and requirements.lock
# (/build), every file checked against the lock's sha256. pip runs from its own wheel (the base
# image's python3 has none) and is installed into the environment like the rest.
set -eu
VENV=/opt/comfyui-venv
python3 -m venv --without-pip "$VENV"
pip_wheel=$(ls /wheels/pip-*-py3-none-any.whl | head -1)
"$VENV/bin/python" "$pip_wheel/pip" install --isolated --no-cache-dir --disable-pip-version-check \
    --no-index --find-links /wheels --only-binary=:all: --require-hashes --progress-bar off \
    -r /build/requirements.lock
"$VENV/bin/python" -m pip check
rm -rf /root/.cache
