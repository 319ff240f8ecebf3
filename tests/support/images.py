"""Test images built locally, without a registry (see docs/test-images.md).

Each image is tagged with a hash of its recipe, so it is built once per machine and reused.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
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


def busybox_image(applets: tuple[str, ...] = APPLETS) -> str:
    """A 2 MB image with busybox; `/www/health` exists so `httpd -h /www` answers /health."""
    recipe = hashlib.sha256(BUSYBOX.read_bytes() + ",".join(applets).encode()).hexdigest()[:12]
    tag = f"maas-test/busybox:{recipe}"
    if _has(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "bin").mkdir(parents=True)
        (root / "www").mkdir()
        (root / "tmp").mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        for applet in applets:
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


LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
# The vendored llama.cpp of that sdist, built with its RPC backend (Debian's llama.cpp-tools has no
# rpc-server). Only the two programs a distributed group runs are built; the web UI is left out
# because fetching its prebuilt assets needs a network this machine does not have.
LLAMA_RPC_CMAKE = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_RPC=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
LLAMA_RPC_TARGETS = ("llama-server", "ggml-rpc-server")
LLAMA_RPC_ROOTFS = (
    "mmdebstrap",
    "--variant=minbase",
    "--include=libgomp1,libstdc++6,ca-certificates",
    '--aptopt=Acquire::Check-Valid-Until "false"',
    "sid",
)
LLAMA_RPC_CHANGE = 'ENTRYPOINT ["llama-server"]'
BUILD_CACHE = Path.home() / ".cache" / "maas-test"


def llama_rpc_image() -> str:
    """llama-server and rpc-server with GGML_RPC, built from the llama-cpp-python sdist (slow once).

    The build folder is kept under ~/.cache/maas-test so an interrupted image step does not
    compile again; the image is tagged by a hash of the whole recipe.
    """
    recipe = hashlib.sha256(
        "\0".join(
            (
                LLAMA_CPP_PYTHON,
                *LLAMA_RPC_CMAKE,
                *LLAMA_RPC_TARGETS,
                *LLAMA_RPC_ROOTFS,
                LLAMA_RPC_CHANGE,
            )
        ).encode()
    ).hexdigest()[:12]
    tag = f"maas-test/llama-rpc:{recipe}"
    if _has(tag):
        return tag
    work = BUILD_CACHE / f"llama-rpc-{recipe}"
    work.mkdir(parents=True, exist_ok=True)
    source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
    if source is None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                LLAMA_CPP_PYTHON,
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(work),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        with tarfile.open(next(work.glob("llama_cpp_python-*.tar.gz"))) as sdist:
            sdist.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
    build = work / "build"
    subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *LLAMA_RPC_CMAKE],
        check=True,
        capture_output=True,
        timeout=900,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "-j", "2", "--target", *LLAMA_RPC_TARGETS],
        check=True,
        capture_output=True,
        timeout=7200,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        subprocess.run([*LLAMA_RPC_ROOTFS, str(root)], check=True, capture_output=True, timeout=900)
        for target in LLAMA_RPC_TARGETS:
            shutil.copy2(build / "bin" / target, root / "usr" / "local" / "bin" / target)
        # The name upstream's docs and older releases use.
        (root / "usr" / "local" / "bin" / "rpc-server").symlink_to("ggml-rpc-server")
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            subprocess.run(
                ["docker", "import", "--change", LLAMA_RPC_CHANGE, "-", tag],
                stdin=tar.stdout,
                check=True,
                capture_output=True,
            )
        if tar.returncode != 0:
            raise RuntimeError(f"tar of the llama-rpc rootfs failed ({tar.returncode})")
    return tag
