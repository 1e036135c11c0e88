"""A real workload under a locked-down egress policy: pip in a Debian guest installs a package from a
package index on the host (PEP 503's simple index, served by a plain HTTP server), and the guest imports it,
while everything but the host is refused."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from asupermachine import Image, Network, Runtime
from asupermachine.image.store import Store
from tests.image.corpus import python_image
from tests.support.exec_output import stdout_of
from tests.support.http_files import serving

# pip's start reads ~1,000 files: 3 minutes of guest kernel on software KVM, so there it runs in the nested pass.
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"]), pytest.mark.guest_heavy]
DEADLINE = 1800
PROJECT, MODULE, VERSION = "hello-sandbox", "hello_sandbox", "1.0"
GREETING = "installed from the host's index"


def wheel(directory: Path) -> Path:
    """A pure-Python wheel of :data:`MODULE` (the wheel format, PEP 427, with its RECORD of hashes)."""
    info = f"{MODULE}-{VERSION}.dist-info"
    files = {
        f"{MODULE}/__init__.py": f"GREETING = {GREETING!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()] + [f"{info}/RECORD,,"]
    path = directory / f"{MODULE}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def package_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A simple index (PEP 503) holding :data:`PROJECT` on the host's 127.0.0.1: its port."""
    root = tmp_path_factory.mktemp("index")
    built = wheel(root)
    sha256 = hashlib.sha256(built.read_bytes()).hexdigest()
    (root / "simple" / PROJECT).mkdir(parents=True)
    (root / "simple" / "index.html").write_text(f'<a href="{PROJECT}/">{PROJECT}</a>\n')
    link = f'<a href="../../{built.name}#sha256={sha256}">{built.name}</a>\n'
    (root / "simple" / PROJECT / "index.html").write_text(link)
    with serving(root) as port:
        yield port


async def test_pip_installs_from_the_hosts_index_with_everything_else_denied(
    tmp_path: Path, package_index: int
) -> None:
    debian = await anyio.to_thread.run_sync(python_image)
    image = await Image.from_oci_layout(debian.layout, debian.tag, store=Store(tmp_path / "store"))
    network = Network(allow_host_loopback=True, allow_out=["host.internal"], deny_out=["0.0.0.0/0"])
    index = f"http://host.internal:{package_index}/simple/"
    # As a user of a plain-HTTP index on a Debian python says: the index is trusted, the system's python is theirs.
    pip = ["python3", "-m", "pip", "install", "--break-system-packages", "--trusted-host", "host.internal"]
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            vm = await rt.restore(await rt.bake(image), network=network)
            install = await vm.exec([*pip, "--index-url", index, PROJECT], timeout=DEADLINE)
            assert install.exit_code == 0, install.stderr.decode()
            imported = await vm.exec(["python3", "-c", f"import {MODULE}; print({MODULE}.GREETING)"])
            assert stdout_of(imported) == f"{GREETING}\n".encode()

            # Anything but the host is refused at once, with the error a real client reports.
            elsewhere = await vm.exec(["python3", "-c", "import socket; socket.create_connection(('192.0.2.1', 443))"])
            assert elsewhere.exit_code != 0 and b"ConnectionRefusedError" in elsewhere.stderr, elsewhere.stderr
            assert vm.network is not None and vm.network.refused.get("tcp", 0) >= 1
