"""A Debian root for L1s of another architecture than this host's (arm64 on x86_64), with the project's
virtualenv: made once (debootstrap's first stage here, its second stage and the virtualenv in an L1), cached,
and used only whole."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from .arch import L1Arch
from .cache import cache_dir, exclusive
from .root import L1Root
from .run import Request, run

SUITE = "bookworm"
SUITE_PYTHON = "3.11"
"""The version of the suite's python3, that the wheels are for."""
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "python3", "python3-venv", "python3-dev", "python3-pip", "gcc", "libc6-dev", "libffi-dev", "iproute2", "kmod",
    "ca-certificates",
)
WHEEL_PLATFORMS = {"arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64")}
"""The wheels' platform tags pip may take for each architecture (the suite's glibc is 2.36)."""
VENV = "/opt/venv"
"""Where the root's virtualenv is: the project's dependencies and its test extra, not the project itself."""
STAGING = "/var/cache/nested-kvm"
"""Where in the root the host leaves the wheels and finish_root.sh for the L1 (removed once installed)."""
FINISH_ROOT = Path(__file__).with_name("finish_root.sh")
FINISH_SHARE = "/nested-root"
"""Where stage1.sh mounts the host's share of a root it finishes (finish_root.sh packs the root there)."""
PREPARE_TIMEOUT = 4 * 3600.0
"""Seconds the L1 that prepares a root may take (about 50 minutes on two cores)."""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UserlandError(RuntimeError):
    """A root could not be prepared."""


def prepare_userland(arch: L1Arch, repository: Path, *, memory_mib: int, vcpus: int) -> Path:
    """The root for L1s of ``arch`` with the virtualenv :data:`VENV` for ``repository``'s requirements,
    prepared once per everything that goes into it.

    :raises UserlandError: if debootstrap, pip or the L1 that finishes the root failed.
    """
    wanted = requirements(repository)
    recipe = {
        "arch": arch.debian, "suite": SUITE, "mirror": MIRROR, "packages": PACKAGES, "requirements": wanted,
        "finish_root": FINISH_ROOT.read_text(),
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_dir() / arch.name / f"userland-{key}"
    complete = root.with_suffix(".complete")  # written last: a root without it is half made, and made again
    with exclusive(root.with_suffix(".lock")):
        if not complete.is_file():
            started = time.monotonic()
            _say(f"preparing the {arch.name} root {root} once (about an hour)")
            _build(arch, root, wanted, memory_mib=memory_mib, vcpus=vcpus)
            complete.write_text(json.dumps(recipe, indent=1))
            _say(f"prepared the {arch.name} root in {time.monotonic() - started:.0f} s")
            _remove_others(root)  # each is about 1 GB
    return root


def requirements(repository: Path) -> list[str]:
    """The project's dependencies and its test extra, from ``repository``'s pyproject.toml."""
    project = tomllib.loads((repository / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


def _build(arch: L1Arch, root: Path, wanted: list[str], *, memory_mib: int, vcpus: int) -> None:
    work, unpacking = (root.with_name(f"{root.name}.{step}") for step in ("preparing", "unpacking"))
    for half_made in (root, work, unpacking):  # by a preparation cut short
        shutil.rmtree(half_made, ignore_errors=True)
    first_stage = work / "finish"  # where the L1 finds it in its initramfs (L1Root.finish)
    debs = cache_dir() / arch.name / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    _say("debootstrap's first stage, here")
    _check([
        "debootstrap", f"--arch={arch.debian}", "--foreign", "--variant=minbase", f"--cache-dir={debs}",
        f"--include={','.join(PACKAGES)}", SUITE, str(first_stage), MIRROR,
    ], "debootstrap")
    staging = first_stage / STAGING.lstrip("/")
    _say(f"downloading {len(wanted)} requirements' wheels for {arch.name}, here")
    platforms = [word for platform in WHEEL_PLATFORMS[arch.name] for word in ("--platform", platform)]
    _check([
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(staging),
        "--only-binary=:all:", *platforms, "--python-version", SUITE_PYTHON, "--implementation", "cp", *wanted,
    ], "pip download")
    shutil.copy2(FINISH_ROOT, staging / FINISH_ROOT.name)
    archive = work / "finish.cpio"
    names = subprocess.run(["find", first_stage.name], cwd=work, capture_output=True, check=True).stdout
    with archive.open("wb") as out:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=work, input=names, stdout=out, check=True)
    shutil.rmtree(first_stage)
    _say("debootstrap's second stage, the virtualenv and packing the root, in an L1")
    request = Request(
        argv=["/bin/sh", f"{STAGING}/{FINISH_ROOT.name}", VENV, STAGING, FINISH_SHARE, *wanted], cwd=Path("/"),
        env={"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        memory_mib=memory_mib, vcpus=vcpus, timeout=PREPARE_TIMEOUT, console_log=None,
    )
    status = run(arch, request, L1Root(work, finish=archive))
    if status != 0:
        raise UserlandError(f"the L1 that finishes the {arch.name} root in {work} failed (status {status})")
    _say("unpacking the root, here")
    unpacking.mkdir()
    _check(["tar", "--extract", "--numeric-owner", "--directory", str(unpacking), "--file",
            str(work / "root.tar")], "unpacking the root")
    unpacking.rename(root)
    shutil.rmtree(work)


def _check(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserlandError(f"{what} failed (status {done.returncode}): {(done.stdout + done.stderr)[-2000:]}")


def _remove_others(keep: Path) -> None:
    for complete in keep.parent.glob("userland-*.complete"):
        other = complete.with_suffix("")
        if other != keep:
            complete.unlink()
            shutil.rmtree(other, ignore_errors=True)


def _say(what: str) -> None:
    print(f"nested-kvm: {what}", file=sys.stderr, flush=True)
