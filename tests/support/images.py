"""Test images built locally, without a registry (see docs/test-images.md).

Each image is tagged with a hash of its recipe, so it is built once per machine and reused.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "httpd", "sleep", "cat", "echo", "ls", "true", "false", "nc", "wget")


def _has(tag: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", tag], capture_output=True, check=False
        ).returncode
        == 0
    )


def busybox_image() -> str:
    """A 2 MB image with busybox; `/www/health` exists so `httpd -h /www` answers /health."""
    recipe = hashlib.sha256(BUSYBOX.read_bytes() + ",".join(APPLETS).encode()).hexdigest()[:12]
    tag = f"maas-test/busybox:{recipe}"
    if _has(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "bin").mkdir(parents=True)
        (root / "www").mkdir()
        (root / "tmp").mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        for applet in APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        (root / "www" / "health").write_text("ok\n")
        (root / "www" / "index.html").write_text("maas test backend\n")
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        subprocess.run(
            ["docker", "import", "--change", 'CMD ["/bin/sh"]', str(archive), tag],
            check=True,
            capture_output=True,
        )
    return tag


LLAMA_ROOTFS = (
    "mmdebstrap",
    "--variant=minbase",
    "--include=llama.cpp-tools,ca-certificates",
    '--aptopt=Acquire::Check-Valid-Until "false"',
    "sid",
)
LLAMA_CHANGE = 'ENTRYPOINT ["llama-server"]'


def llama_server_image() -> str:
    """A real llama.cpp `llama-server` from Debian sid's llama.cpp-tools (mmdebstrap, ~30 s)."""
    recipe = hashlib.sha256("\0".join((*LLAMA_ROOTFS, LLAMA_CHANGE)).encode()).hexdigest()[:12]
    tag = f"maas-test/llama-server:{recipe}"
    if _has(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        subprocess.run([*LLAMA_ROOTFS, str(root)], check=True, capture_output=True, timeout=900)
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            subprocess.run(
                ["docker", "import", "--change", LLAMA_CHANGE, "-", tag],
                stdin=tar.stdout,
                check=True,
                capture_output=True,
            )
        if tar.returncode != 0:
            raise RuntimeError(f"tar of the llama-server rootfs failed ({tar.returncode})")
    return tag
