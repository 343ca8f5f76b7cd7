#!/bin/sh
# Run by scripts/build-comfyui-image inside one container of the base image with no network; the
# container is then committed as the image, so the image is the base plus this one layer (under
# Docker's vfs storage driver every layer is a whole copy of the filesystem). Read-only mounts:
#   /wheels   the wheel cache: the lock installed from it, every file checked against its sha256
#   /recipe   this directory: requirements.lock, entrypoint.py
#   /source   the ComfyUI source archive (../shared/comfyui, its SHA256SUMS checked by the build script)
# pip runs from its own wheel (the base image's python3 has none) and is installed like the rest.
set -eu
VENV=/opt/comfyui-venv
python3 -m venv --without-pip "$VENV"
pip_wheel=$(ls /wheels/pip-*-py3-none-any.whl | head -1)
"$VENV/bin/python" "$pip_wheel/pip" install --isolated --no-cache-dir --disable-pip-version-check \
    --no-index --find-links /wheels --only-binary=:all: --require-hashes --progress-bar off \
    -r /recipe/requirements.lock
"$VENV/bin/python" -m pip check
# the source, as the archive has it (ComfyUI/ at its top), owned by root
tar -xzf /source/ComfyUI-*.tar.gz -C /opt --no-same-owner
test -f /opt/ComfyUI/main.py
install -m 0755 /recipe/entrypoint.py /usr/local/bin/comfyui-entrypoint
# bytecode compiled now: the user ComfyUI runs as cannot write it under /opt
/opt/comfyui-venv/bin/python -m compileall -q -j 0 /opt/ComfyUI >/dev/null
# ComfyUI's base directory, world-writable like /tmp for whatever the mounts leave out (temp/)
mkdir -p /basedir
chmod 1777 /basedir
rm -rf /root/.cache /tmp/* 2>/dev/null || true
