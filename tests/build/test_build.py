"""Dockerfile builds against buildah's: the same Dockerfile, the same base, the same tree and config.

buildah (Debian's, vfs storage of its own, chroot isolation) builds each
Dockerfile beside ours; both images go through a real registry and ``umoci
unpack`` (as root, so owners are real), and the trees are compared entry by
entry: kind, mode, owner, size, content, link target and link count; times
are not (every build makes its own). What buildah alone leaves behind is set
aside: the empty ``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf`` and
``/run`` it makes to mount over during a RUN (docker leaves those out).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from asupermachine import BuildError, Image, Machine, Network
from asupermachine.image.store import Store
from tests.conftest import GUESTS_BUILT
from tests.image.oci import running_registry, skopeo_copy
from tests.support.http_files import serving

pytestmark = [pytest.mark.anyio, pytest.mark.kvm]
BUILDAH_ARTIFACTS = {"etc/hosts", "etc/hostname", "etc/resolv.conf", "run"}
"""Mount points buildah makes in the root for a RUN and commits, empty."""
CONFIG_KEYS = ("Cmd", "Entrypoint", "Env", "ExposedPorts", "Labels", "StopSignal", "User", "Volumes", "WorkingDir")
CORPUS = """\
ARG BASE
FROM ${BASE} AS build
ARG WHO=nobody-in-particular
ENV GREETING="hello there" PATH=/opt/tools:$PATH
LABEL org.example.title="the corpus" org.example.stage=build
WORKDIR /srv/app
COPY *.txt ./
COPY tree/ /srv/tree/
COPY --chown=nobody:nogroup --chmod=640 tree/sub/data.bin /srv/owned/
ADD archive.tar.gz /srv/unpacked/
SHELL ["/bin/sh", "-ec"]
RUN echo "$GREETING, $WHO" > greeting.out; \\
    rm /etc/group; \\
    rm -rf /usr/sbin; mkdir /usr/sbin; echo new > /usr/sbin/only; \\
    echo linked > /srv/a; ln /srv/a /srv/b; \\
    mkdir -p /home/nobody; chown nobody /home/nobody
USER nobody
WORKDIR /home/nobody
RUN touch made-by-nobody; id -u > uid.out
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /srv/app/greeting.out"]

FROM ${BASE}
COPY --from=build /srv /copied
COPY --from=build --chown=1:1 /home/nobody/uid.out /uid.out
"""
"""Every instruction, deletions of base files, an opaque directory, hardlinks, USER and WORKDIR in a RUN,
build args, .dockerignore, an unpacked archive, and a second stage copying from the first."""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry holding the built-in image as ``base:1``, the base both builders start from."""
    with running_registry(tmp_path_factory.mktemp("registry")) as address:

        async def push() -> None:
            await (await Image.builtin()).push(f"{address}/base:1")

        anyio.run(push)
        yield address


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("context")
    (root / "Dockerfile").write_text(CORPUS)
    (root / ".dockerignore").write_text("tree/*.log\n")
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("b\n")
    (root / "notes.md").write_text("not copied\n")
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "sub" / "data.bin").write_bytes(bytes(range(256)))
    (root / "tree" / "run.sh").write_text("#!/bin/sh\n")
    (root / "tree" / "run.sh").chmod(0o755)
    (root / "tree" / "left-out.log").write_text("ignored\n")
    os.symlink("sub/data.bin", root / "tree" / "link")
    with tarfile.open(root / "archive.tar.gz", "w:gz") as archive:
        entry = tarfile.TarInfo("pkg/file")
        entry.size, entry.uid, entry.gid, entry.mode = 4, 7, 8, 0o600
        archive.addfile(entry, io.BytesIO(b"tar\n"))
        link = tarfile.TarInfo("pkg/link")
        link.type, link.linkname = tarfile.SYMTYPE, "file"
        archive.addfile(link)
    return root


class Buildah:
    """Debian's buildah with its own vfs storage."""

    def __init__(self, work: Path) -> None:
        self._storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]

    def __call__(self, *args: str) -> None:
        subprocess.run(["buildah", *self._storage, *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Buildah:
    return Buildah(tmp_path_factory.mktemp("buildah"))


def unpacked(registry: str, name: str, work: Path) -> tuple[dict[str, tuple[object, ...]], dict[str, object]]:
    """The tree and config of ``registry/name`` as ``umoci unpack`` makes them."""
    layout = work / "layout"
    skopeo_copy(f"docker://{registry}/{name}", f"oci:{layout}:{name.replace('/', '-')}", "--src-tls-verify=false")
    bundle = work / f"bundle-{name.replace('/', '-').replace(':', '-')}"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{name.replace('/', '-')}", str(bundle)], check=True,
                   capture_output=True)
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{layout}:{name.replace('/', '-')}"],
                                       check=True, capture_output=True, text=True).stdout)["config"]
    return listing(bundle / "rootfs"), config


def listing(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: kind, mode, owner, link count (files), size and digest or link target."""
    entries: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        status = path.lstat()
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            detail: tuple[object, ...] = ("link", os.readlink(path))
        elif path.is_dir():
            detail = ("dir",)
        else:
            detail = ("file", status.st_nlink, status.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        entries[name] = (oct(status.st_mode), status.st_uid, status.st_gid, *detail)
    return entries


def without_buildah_artifacts(entries: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    return {name: entry for name, entry in entries.items() if name not in BUILDAH_ARTIFACTS}


def kept(config: dict[str, object]) -> dict[str, object]:
    found = config.get("Labels")
    labels = {k: v for k, v in found.items() if k != "io.buildah.version"} if isinstance(found, dict) else {}
    return {key: value for key, value in {**config, "Labels": labels or None}.items()
            if key in CONFIG_KEYS and value}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # each RUN is a boot: one backend per test
async def test_the_corpus_builds_to_buildahs_tree_and_config_and_a_rebuild_starts_no_vm(
    registry: str, context: Path, buildah: Buildah, tmp_path: Path
) -> None:
    base = f"{registry}/base:1"
    arguments = {"BASE": base, "WHO": "the builder"}
    trees = {}
    for target, name in (("build", "corpus-build:1"), (None, "corpus:1")):
        flags = ["--target", target] if target else []
        buildah("bud", "--isolation", "chroot", "--tls-verify=false", "--build-arg", f"BASE={base}",
                "--build-arg", "WHO=the builder", *flags, "-t", f"buildah-{name}", str(context))
        buildah("push", "--tls-verify=false", f"buildah-{name}", f"docker://{registry}/buildah-{name}")
        output = io.StringIO()
        image = await Image.build(context, tag=f"ours-{name}", build_args=arguments, target=target, output=output,
                                  no_cache=target == "build")  # its RUNs really run; the final stage reuses them
        await image.push(f"{registry}/ours-{name}")
        theirs, their_config = unpacked(registry, f"buildah-{name}", tmp_path)
        ours, our_config = unpacked(registry, f"ours-{name}", tmp_path)
        assert without_buildah_artifacts(ours) == without_buildah_artifacts(theirs), target
        assert kept(our_config) == kept(their_config), target
        trees[target] = ours
    final, build_tree = trees[None], trees["build"]
    assert "copied/app/greeting.out" in final and "copied/unpacked/pkg/file" in final and "uid.out" in final
    assert ".wh.group" not in build_tree and "etc/group" not in build_tree and build_tree["usr/sbin/only"]
    assert build_tree["srv/a"][4] == 2 and build_tree["home/nobody/made-by-nobody"][1:3] == (65534, 65534)

    booted = GUESTS_BUILT["cold boot"]
    output = io.StringIO()
    again = await Image.build(context, tag="ours-corpus:1", build_args=arguments, output=output)
    assert GUESTS_BUILT["cold boot"] == booted, "a rebuild with nothing changed started a VM"
    assert again.manifest_digest == image.manifest_digest
    assert output.getvalue().count("CACHED") == 10, output.getvalue()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_failing_step_says_which_with_its_status_and_output_and_tags_nothing(
    registry: str, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {registry}/base:1\nRUN echo to stdout; echo oops >&2; exit 3\n")
    output = io.StringIO()
    with pytest.raises(BuildError) as failure:
        await Image.build(tmp_path, tag="never-stored:1", output=output)
    assert failure.value.exit_status == 3 and "oops" in failure.value.output
    assert "line 2" in str(failure.value) and failure.value.step.startswith("RUN echo")
    assert "#2 ERROR" in output.getvalue() and "to stdout" in output.getvalue()
    assert Image.local("never-stored:1") is None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_step_fetches_from_the_host_under_a_locked_down_policy_and_the_image_runs_after_a_round_trip(
    registry: str, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "payload.txt").write_text("from the host\n")
    context = tmp_path / "context"
    context.mkdir()
    with serving(served) as port:
        (context / "Dockerfile").write_text(
            f"FROM {registry}/base:1\n"
            f"RUN timeout 20 wget -q -O /payload.txt http://host.internal:{port}/payload.txt"
            " && ! timeout 20 wget -q -O- http://192.0.2.1/\n"
            'CMD ["cat", "/payload.txt"]\n'
        )
        policy = Network(allow_host_loopback=True, allow_out=["host.internal"], deny_out=["0.0.0.0/0"])
        built = await Image.build(context, tag="fetched:1", network=policy, output=io.StringIO())
    await built.push(f"{registry}/fetched:1")
    pulled = await Image.pull(f"{registry}/fetched:1", store=Store(tmp_path / "elsewhere"))
    assert pulled.manifest_digest == built.manifest_digest and pulled.config.cmd == ("cat", "/payload.txt")
    async with Machine.start(pulled, network=False) as vm:
        assert (await vm.exec(["cat", "/payload.txt"])).stdout == b"from the host\n"
