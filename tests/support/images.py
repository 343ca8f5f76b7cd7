"""Tiny images built here without a registry: a static busybox imported as a rootfs."""

from __future__ import annotations

import io
import shutil
import tarfile

from gpuhost.engine import EngineClient

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "true", "false", "echo", "cat", "sleep", "ls", "id")


def busybox_rootfs_tar() -> bytes:
    """A rootfs tar holding /bin/busybox (Debian's busybox-static) and a few applet links."""
    path = shutil.which("busybox") or BUSYBOX
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(path, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


def import_busybox(client: EngineClient, repo: str = "local/gpuhost-busybox", tag: str = "test") -> str:
    """docker import of the busybox rootfs through the Engine API; returns the image reference."""
    import http.client

    data = busybox_rootfs_tar()
    conn = client._connection(60.0)
    try:
        conn.request(
            "POST",
            f"/images/create?fromSrc=-&repo={repo}&tag={tag}",
            body=data,
            headers={"Content-Type": "application/x-tar", "Host": "docker"},
        )
        response: http.client.HTTPResponse = conn.getresponse()
        body = response.read()
        if response.status >= 300:
            raise RuntimeError(f"image import failed: {response.status} {body!r}")
    finally:
        conn.close()
    return f"{repo}:{tag}"
