"""Images from real tools give the tree ``umoci unpack`` gives, load as ``docker load`` does, and boot.

The corpus is built here with Debian's umoci and skopeo (tests/image/corpus.py);
every variant of an image is applied by us and compared, entry by entry, with
the reference unpack of the original: names, types, modes, owners, symlink
targets, contents, device numbers, xattrs and hardlink identity.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from asupermachine import Image, ImageError, Machine
from asupermachine._cache import cache_root
from asupermachine.image.rootdisk import apply_layers
from asupermachine.image.store import Store
from tests.support.exec_output import stdout_of

from .corpus import (
    Corpus,
    buildah_images,
    debootstrap_image,
    edge_layers_image,
    layout_of_archive,
    skopeo_variants,
    umoci_image,
    umoci_unpack,
)
from .oci import running_registry, skopeo_copy
from .tree_diff import differences

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Corpus | Path | str]]:
    work = tmp_path_factory.mktemp("corpus")
    base, edges = umoci_image(work / "umoci"), edge_layers_image(work / "edges")
    named = umoci_image(work / "named", user="app")
    found: dict[str, Corpus | Path | str] = {"base": base, "edges": edges, "named": named}
    (work / "variants").mkdir()
    found.update(skopeo_variants(base, work / "variants"))
    (work / "buildah").mkdir()
    found.update(buildah_images(work / "buildah"))
    found["buildah"] = layout_of_archive(found["buildah-oci-archive"], work / "buildah-layout", "corpus-buildah:1")
    debian = found["debian"] = debootstrap_image(cache_root() / "test-corpus")
    with running_registry(work / "registry") as registry:
        skopeo_copy(f"oci:{base.layout}:{base.tag}", f"docker://{registry}/test/corpus:1", "--dest-tls-verify=false")
        skopeo_copy(f"oci:{debian.layout}:{debian.tag}", f"docker://{registry}/test/debian:bookworm",
                    "--dest-tls-verify=false")
        found["registry"] = registry
        yield found


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


async def image_of(corpus: dict[str, Corpus | Path | str], variant: str, store: Store) -> Image:
    if variant == "registry":
        return await Image.pull(f"{corpus['registry']}/test/corpus:1", store=store)
    if variant == "debian-registry":
        return await Image.pull(f"{corpus['registry']}/test/debian:bookworm", store=store)
    source = corpus[variant]
    if isinstance(source, Corpus):
        return await Image.from_oci_layout(source.layout, source.tag, store=store)
    if variant in ("zstd", "uncompressed"):
        return await Image.from_oci_layout(source, "base", store=store)
    (loaded,) = await Image.load(source, store=store)  # type: ignore[arg-type]
    return loaded


def unpacked_by_us(image: Image, store: Store, tree: Path) -> Path:
    tree.mkdir()
    apply_layers(store, image.manifest, tree)
    return tree


@pytest.mark.parametrize(
    ("variant", "reference"),
    [
        ("base", "base"), ("named", "named"), ("edges", "edges"), ("oci-archive", "base"),
        ("docker-archive", "base"), ("zstd", "base"), ("uncompressed", "base"), ("registry", "base"),
        ("buildah-oci-archive", "buildah"), ("buildah-docker-archive", "buildah"), ("debian-registry", "debian"),
    ],
)
async def test_every_corpus_image_unpacks_to_the_tree_umoci_unpacks(
    corpus: dict[str, Corpus | Path | str], store: Store, tmp_path: Path, variant: str, reference: str
) -> None:
    image = await image_of(corpus, variant, store)
    ours = await anyio.to_thread.run_sync(unpacked_by_us, image, store, tmp_path / "ours")
    expected = corpus[reference]
    assert isinstance(expected, Corpus)
    theirs = await anyio.to_thread.run_sync(umoci_unpack, expected, tmp_path / "bundle")
    assert differences(ours, theirs) == []


async def test_umoci_config_is_honoured_as_written(corpus: dict[str, Corpus | Path | str], store: Store) -> None:
    config = (await image_of(corpus, "base", store)).config
    assert (config.user, config.workdir) == ("1234:5678", "/data")
    assert config.env["GREETING"] == "hello from umoci"
    assert (config.entrypoint, config.cmd) == (("/bin/sh",), ("-c", "echo from-cmd"))
    assert (await image_of(corpus, "named", store)).config.user == "app"


async def test_load_names_images_as_their_archives_do(corpus: dict[str, Corpus | Path | str], store: Store) -> None:
    for variant in ("oci-archive", "docker-archive"):
        (image,) = await Image.load(corpus[variant], store=store)  # type: ignore[arg-type]
        assert image.name == "docker.io/test/corpus:1"
        assert Image.local("test/corpus:1", store=store) == image
    base = corpus["base"]
    assert isinstance(base, Corpus)
    (unnamed,) = await Image.load(base.layout, store=store)  # its only name is the bare tag "base"
    assert unnamed.name == str(unnamed.manifest_digest)
    assert Image.local(unnamed.name, store=store) == unnamed
    archived = await Image.from_oci_archive(corpus["oci-archive"], "test/corpus:1", store=store)  # type: ignore[arg-type]
    assert archived.config_digest == unnamed.config_digest


async def test_load_refuses_what_is_not_an_image(tmp_path: Path, store: Store) -> None:
    (tmp_path / "notes.txt").write_text("not a tar")
    (tmp_path / "empty-dir").mkdir()
    for path in (tmp_path / "notes.txt", tmp_path / "empty-dir", tmp_path / "missing"):
        with pytest.raises(ImageError):
            await Image.load(path, store=store)
    assert store.records() == []


def test_the_cli_loads_an_archive_and_says_what_it_loaded(
    corpus: dict[str, Corpus | Path | str], tmp_path: Path
) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "asupermachine", "load", str(corpus["docker-archive"])],
        capture_output=True, text=True, env=env, check=True,
    )
    assert result.stdout == "Loaded image: docker.io/test/corpus:1\n"
    listed = subprocess.run([sys.executable, "-m", "asupermachine", "images"], capture_output=True, text=True, env=env)
    assert "docker.io/test/corpus:1" in listed.stdout


# What each booted image must show of its content and config, by running a command in it.
BOOT_CHECKS = {
    "edges": (["sh", "-c", "cat lib/shared-link was-file/inside was-dir; ls redo"],
              b"shared contentnow a directorynow a filenew\n"),
    "buildah-docker-archive": (["/bin/busybox", "sh", "-c", "id -u; pwd; echo $GREETING; /bin/busybox cat hello.txt"],
                               b"4321\n/srv\nhello from buildah\nhello from buildah\n"),
    "debian-registry": (
        ["sh", "-c", "readlink /bin; stat -c %a /usr/bin/passwd; . /etc/os-release; echo $VERSION_CODENAME"],
        b"usr/bin\n4755\nbookworm\n",
    ),
}


# One backend: a boot is dear, and what the guest shows does not depend on the host's event loop.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("variant", ["base", "named", *BOOT_CHECKS])
@pytest.mark.kvm
async def test_corpus_images_boot_and_run_with_their_content_and_config(
    corpus: dict[str, Corpus | Path | str], store: Store, variant: str
) -> None:
    image = await image_of(corpus, variant, store)
    with anyio.fail_after(600):
        async with Machine.start(image) as vm:
            if variant in BOOT_CHECKS:
                argv, expected = BOOT_CHECKS[variant]
                assert stdout_of(await vm.exec(argv)) == expected
                return
            seen = stdout_of(await vm.exec(
                ["sh", "-c", "id -u; id -g; pwd; echo $GREETING; "
                 "test ! -e /gone/file && test ! -e /gone-dir && ls /opaque"]
            ))
            assert seen == b"1234\n5678\n/data\nhello from umoci\nnew\n"
            assert stdout_of(await vm.exec(["stat", "-c", "%a", "/usr/bin/tool", "/usr/bin/sgid"])) == b"4755\n2711\n"
