"""Pulls from a real registry on 127.0.0.1, local sources, the store, and a pulled image booted in a guest."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from asupermachine import Machine
from asupermachine._errors import AuthenticationError, DigestMismatch, PlatformNotFound, RegistryError
from asupermachine.image.builtin import BUSYBOX, busybox_layer
from asupermachine.image.image import Image
from asupermachine.image.registry import Credentials
from asupermachine.image.store import Store

from .oci import Entry, ImageSpec, registry_blob_file, running_registry, skopeo_copy, write_layout

pytestmark = pytest.mark.anyio
USER, PASSWORD = "tester", "s3cret"


def busybox_entries() -> list[Entry]:
    """The built-in busybox layer's entries, reused as the test images' base layer."""
    listing = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True).stdout
    raw = busybox_layer(BUSYBOX.read_bytes(), listing.split())
    entries = []
    with tarfile.open(fileobj=__import__("io").BytesIO(raw)) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            entries.append(Entry(member.name, member.type, data, member.mode, member.linkname))
    return entries


SECRET = "s3cr3t-t0ken"
# Values the kernel command line could not carry: quotes, JSON, newlines, and kilobytes of them.
AWKWARD_ENV = {
    "SECRET_JSON": f'{{"token": "{SECRET}", "scopes": ["read", "write"]}}',
    "QUOTED": 'say "hi" and \'bye\'',
    "MULTI": "line one\nline two",
    "PADDING": "p" * 4500,
}
CONFIG = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo \"from cmd\" 'with quotes' \"$QUOTED\""],
    "Env": [
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello image",
        *(f"{name}={value}" for name, value in AWKWARD_ENV.items()),
    ],
    "WorkingDir": "/work",
    "User": "nobody",
    "ExposedPorts": {"8080/tcp": {}},
}


def layered_spec() -> ImageSpec:
    """Three layers: busybox; files to hide; whiteouts, an opaque dir, links, a device node, modes."""
    second = [
        Entry("work", tarfile.DIRTYPE, mode=0o777),
        Entry("data", tarfile.DIRTYPE, mode=0o755),
        Entry("data/gone", data=b"gone"),
        Entry("data/kept", data=b"kept"),
        Entry("opaque", tarfile.DIRTYPE, mode=0o755),
        Entry("opaque/old", data=b"old"),
    ]
    third = [
        Entry("data/.wh.gone"),
        Entry("opaque", tarfile.DIRTYPE, mode=0o755),
        Entry("opaque/.wh..wh..opq"),
        Entry("opaque/new", data=b"new"),
        Entry("data/owned", data=b"owned", mode=0o4750, uid=1234, gid=5678),
        Entry("data/hard", tarfile.LNKTYPE, linkname="data/kept"),
        Entry("data/link1", tarfile.SYMTYPE, linkname="link2"),
        Entry("data/link2", tarfile.SYMTYPE, linkname="/data/kept"),
        Entry("data/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
    ]
    return ImageSpec([busybox_entries(), second, third], CONFIG)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Two registries (open, and htpasswd basic auth) holding the test images, plus local copies."""
    work = tmp_path_factory.mktemp("registry")
    htpasswd = work / "htpasswd"
    htpasswd.write_text(subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True,
                                       check=True).stdout)
    layered = write_layout(work / "layered", "1", layered_spec())
    small = [[Entry("hello", data=b"hi")]]
    multi = write_layout(work / "multi", "1", ImageSpec(small), ImageSpec(small, architecture="arm64"))
    archive = work / "layered.tar"
    skopeo_copy(f"oci:{layered}:1", f"docker-archive:{archive}:test/layered:1")
    with running_registry(work / "open") as open_registry, running_registry(work / "auth", htpasswd) as auth_registry:
        plain = ("--dest-tls-verify=false",)
        skopeo_copy(f"oci:{layered}:1", f"docker://{open_registry}/test/layered:1", *plain)
        skopeo_copy(f"oci:{multi}:1", f"docker://{open_registry}/test/multi:1", *plain)
        skopeo_copy(f"oci:{layered}:1", f"docker://{auth_registry}/test/layered:1", *plain,
                    f"--dest-creds={USER}:{PASSWORD}")
        yield {"open": open_registry, "auth": auth_registry, "storage": work / "open" / "storage",
               "layout": layered, "archive": archive, "work": work}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


async def test_pull_by_tag_and_by_digest_gives_the_same_verified_image(images: dict[str, object], store: Store) -> None:
    by_tag = await Image.pull(f"{images['open']}/test/layered:1", store=store)
    assert by_tag.config.entrypoint == ("/bin/sh", "-c") and by_tag.config.user == "nobody"
    assert by_tag.config.env["GREETING"] == "hello image" and by_tag.config.exposed_ports == ("8080/tcp",)
    assert len(by_tag.manifest.layers) == 3
    by_digest = await Image.pull(f"{images['open']}/test/layered@{by_tag.manifest_digest}", store=store)
    assert by_digest.manifest_digest == by_tag.manifest_digest
    assert Image.local(f"{images['open']}/test/layered:1", store=store) == by_tag
    assert [r.name for r in store.records()] == sorted([by_tag.name, by_digest.name])


async def test_an_index_gives_the_amd64_manifest_or_lists_its_platforms(
    images: dict[str, object], store: Store
) -> None:
    image = await Image.pull(f"{images['open']}/test/multi:1", store=store)
    assert image.config.platform.architecture == "amd64"
    with pytest.raises(PlatformNotFound, match="linux/amd64, linux/arm64") as missing:
        await Image.pull(f"{images['open']}/test/multi:1", platform="linux/s390x", store=store)
    assert missing.value.available == ["linux/amd64", "linux/arm64"]


async def test_basic_auth_is_required_and_honoured(images: dict[str, object], store: Store) -> None:
    reference = f"{images['auth']}/test/layered:1"
    with pytest.raises(AuthenticationError, match="requires credentials"):
        await Image.pull(reference, store=store)
    with pytest.raises(AuthenticationError, match="refused"):
        await Image.pull(reference, store=store, credentials=Credentials(USER, "wrong"))
    image = await Image.pull(reference, store=store, credentials=Credentials(USER, PASSWORD))
    assert len(image.manifest.layers) == 3


async def test_a_refused_connection_fails_fast(store: Store) -> None:
    with anyio.fail_after(5):
        with pytest.raises(RegistryError, match="cannot reach"):
            await Image.pull("127.0.0.1:1/nothing/here:1", store=store)


async def test_tampered_blobs_and_manifests_are_refused_and_not_stored(
    images: dict[str, object], tmp_path: Path
) -> None:
    # A registry of its own, since tampering breaks the images in it.
    with running_registry(tmp_path / "reg") as registry:
        skopeo_copy(f"oci:{images['layout']}:1", f"docker://{registry}/test/layered:1", "--dest-tls-verify=false")
        store = Store(tmp_path / "store")
        image = await Image.pull(f"{registry}/test/layered:1", store=Store(tmp_path / "first"))
        layer = image.manifest.layers[-1].digest
        blob = registry_blob_file(tmp_path / "reg" / "storage", str(layer))
        content = bytearray(blob.read_bytes())
        content[len(content) // 2] ^= 0x01
        blob.write_bytes(bytes(content))
        with pytest.raises(DigestMismatch):
            await Image.pull(f"{registry}/test/layered:1", store=store)
        assert not store.has(layer) and store.records() == []
        manifest = registry_blob_file(tmp_path / "reg" / "storage", str(image.manifest_digest))
        manifest.write_bytes(manifest.read_bytes().replace(b'"schemaVersion"', b' "schemaVersion"', 1))
        with pytest.raises(DigestMismatch):
            await Image.pull(f"{registry}/test/layered@{image.manifest_digest}", store=store)
        assert not store.has(image.manifest_digest) and store.records() == []
        assert not list(store.temporary.iterdir())


async def test_oci_layouts_and_docker_archives_give_the_same_image(images: dict[str, object], store: Store) -> None:
    from_layout = await Image.from_oci_layout(images["layout"], "1", store=store)  # type: ignore[arg-type]
    from_archive = await Image.from_docker_archive(images["archive"], store=store)  # type: ignore[arg-type]
    assert from_layout.config == from_archive.config
    assert from_layout.config_digest == from_archive.config_digest
    # docker save stores layers uncompressed: other blobs, the same (diff_id-named) content.
    assert len(from_layout.manifest.layers) == len(from_archive.manifest.layers) == 3


async def test_concurrent_pulls_share_the_store_and_prune_keeps_what_names_use(
    images: dict[str, object], store: Store
) -> None:
    reference = f"{images['open']}/test/layered:1"
    pulled: list[Image] = []

    async def pull() -> None:
        pulled.append(await Image.pull(reference, store=store))

    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(pull)
    assert len({image.manifest_digest for image in pulled}) == 1
    orphan = store.blob_path(pulled[0].manifest_digest).with_name("0" * 64)
    orphan.write_bytes(b"unreferenced")
    assert store.prune() == len(b"unreferenced")
    assert Image.local(reference, store=store) == pulled[0]


@pytest.mark.skipif(shutil.which("mkfs.erofs") is None, reason="scripts/setup.sh installs erofs-utils")
@pytest.mark.kvm
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # two boots: the guest's side, on one backend
async def test_a_pulled_image_boots_with_its_config_and_exact_tree(
    images: dict[str, object], store: Store, tmp_path: Path
) -> None:
    image = await Image.pull(f"{images['open']}/test/layered:1", store=store)
    with anyio.fail_after(600):
        async with Machine.start(image) as vm:
            seen = await vm.exec(["sh", "-c", "id -u; id -g; pwd; echo $GREETING"])
            assert seen.stdout == b"65534\n65534\n/work\nhello image\n"
            for name, value in AWKWARD_ENV.items():
                assert (await vm.exec(["sh", "-c", f'printf %s "${name}"'])).stdout == value.encode()
            tree = await vm.exec(["sh", "-c", "cd /data && ls -A && cat kept hard link1 && ls -A /opaque"], user="root")
            assert tree.stdout == b"hard\nkept\nlink1\nlink2\nnull\nowned\nkeptkeptkept" + b"new\n"
            modes = await vm.exec(["stat", "-c", "%a %u %g %h %t,%T", "/data/owned", "/data/kept", "/data/null"])
            assert modes.stdout.split(b"\n")[:3] == [b"4750 1234 5678 1 0,0", b"644 0 0 2 0,0", b"666 0 0 1 1,3"]
            # The environment reached init privately: not on the kernel command line, not in the boot log.
            exposed = await vm.exec(["sh", "-c", "cat /proc/cmdline; dmesg"], user="root")
            assert exposed.exit_code == 0 and b"console=" in exposed.stdout and SECRET.encode() not in exposed.stdout
            snapshot = await vm.snapshot(tmp_path / "configured")
        assert SECRET not in (snapshot.path / "snapshot.json").read_text()
        async with Machine.restore(snapshot) as vm:
            restored = await vm.exec(["sh", "-c", 'id -u; pwd; echo $GREETING; echo "$SECRET_JSON"'])
            assert restored.stdout == f"65534\n/work\nhello image\n{AWKWARD_ENV['SECRET_JSON']}\n".encode()
        async with Machine.start(image, run=True) as vm:
            output = b"".join([chunk async for chunk in vm.console])
            assert f"from cmd with quotes {AWKWARD_ENV['QUOTED']}".encode() in output
            assert (await vm.wait()).exit_code == 0

@pytest.mark.kvm
def test_run_cold_from_the_cli_takes_quoted_arguments_and_env(images: dict[str, object]) -> None:
    """``run --cold IMAGE -- CMD`` with quotes in CMD and a JSON ``-e`` value, as a user types it."""
    payload = '{"quoted": "yes", "n": 1}'
    words = ['printf "%s|%s\\n" "$PAYLOAD" "two words"']
    result = subprocess.run(
        [sys.executable, "-m", "asupermachine", "run", "--cold", "--network", "none", "-e", f"PAYLOAD={payload}",
         f"{images['open']}/test/layered:1", "--", *words],
        capture_output=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert f"{payload}|two words".encode() in result.stdout
