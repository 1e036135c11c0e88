"""A Debian root for L1s of another architecture than this host's (arm64 on x86_64), with the project's
virtualenv: made here in a few minutes, without running any of the root's programs, cached, and used only
whole.

debootstrap's first stage (``--foreign``) fetches the packages and unpacks the few it needs; the rest are
unpacked here with ``dpkg-deb``. Nothing the root holds needs its maintainer scripts: the L1 runs Python,
gcc and ip as root, and Debian's dynamic loader searches the multiarch directories without a cache.
The virtualenv is laid out as ``python -m venv`` lays it out, its packages the requirements' wheels for the
root's architecture, installed by this host's pip; this host's Python, the suite's version, compiles the
byte code, which is the same on every architecture.
"""

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

SUITE = "bookworm"
SUITE_PYTHON = "3.11"
"""The version of the suite's python3, that the wheels and the byte code are for."""
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-dev", "gcc", "libc6-dev", "libffi-dev", "iproute2", "kmod")
WHEEL_PLATFORMS = {"arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64")}
"""The wheels' platform tags pip may take for each architecture (the suite's glibc is 2.36)."""
VENV = "/opt/venv"
"""Where the root's virtualenv is: the project's dependencies and its test extra, not the project itself."""
LAYOUT_VERSION = 3
"""Bumped when the way a root is made changes, so that roots made the old way are made again."""


class UserlandError(RuntimeError):
    """A root could not be prepared."""


def prepare_userland(arch: L1Arch, repository: Path) -> Path:
    """The root for L1s of ``arch`` with the virtualenv :data:`VENV` for ``repository``'s requirements,
    prepared once per everything that goes into it.

    :raises UserlandError: if debootstrap, unpacking a package or pip failed.
    """
    wanted = requirements(repository)
    recipe = {
        "arch": arch.debian, "suite": SUITE, "mirror": MIRROR, "packages": PACKAGES, "requirements": wanted,
        "layout": LAYOUT_VERSION,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_dir() / arch.name / f"userland-{key}"
    complete = root.with_suffix(".complete")  # written last: a root without it is half made, and made again
    with exclusive(root.with_suffix(".lock")):
        if not complete.is_file():
            started = time.monotonic()
            _say(f"preparing the {arch.name} root {root} once (a few minutes)")
            _build(arch, root, wanted)
            complete.write_text(json.dumps(recipe, indent=1))
            _say(f"prepared the {arch.name} root in {time.monotonic() - started:.0f} s")
            _remove_others(root)  # each is about 700 MB
    return root


def requirements(repository: Path) -> list[str]:
    """The project's dependencies and its test extra, from ``repository``'s pyproject.toml."""
    project = tomllib.loads((repository / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


def _build(arch: L1Arch, root: Path, wanted: list[str]) -> None:
    work = root.with_name(f"{root.name}.preparing")
    for half_made in (root, work):  # by a preparation cut short
        shutil.rmtree(half_made, ignore_errors=True)
    debs = cache_dir() / arch.name / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    _say("debootstrap's first stage")
    _check([
        "debootstrap", f"--arch={arch.debian}", "--foreign", "--variant=minbase", f"--cache-dir={debs}",
        f"--include={','.join(PACKAGES)}", SUITE, str(work), MIRROR,
    ], "debootstrap")
    _say("unpacking its packages")
    _unpack_packages(work)
    _say(f"installing {len(wanted)} requirements' wheels for {arch.name} in {VENV}")
    _make_virtualenv(arch, work, wanted)
    work.rename(root)


def _unpack_packages(root: Path) -> None:
    """Unpack every package debootstrap fetched into ``root``, then remove what only its second stage needs."""
    archives = root / "var" / "cache" / "apt" / "archives"
    for package in sorted(archives.glob("*.deb")):
        contents = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(package)], stdout=subprocess.PIPE)
        # merged /usr: /bin, /lib and /sbin are links into /usr, which tar would otherwise replace
        unpacked = subprocess.run(
            ["tar", "--extract", "--keep-directory-symlink", "--numeric-owner", "--directory", str(root)],
            stdin=contents.stdout, capture_output=True, text=True, check=False,
        )
        if contents.wait() != 0 or unpacked.returncode != 0:
            raise UserlandError(f"unpacking {package.name} failed: {unpacked.stderr[-2000:]}")
        package.unlink()
    shutil.rmtree(root / "debootstrap")
    proc = root / "proc"
    if proc.is_symlink():  # to this host's /proc, which debootstrap links when it runs in a container
        proc.unlink()
        proc.mkdir()
    for table in ("passwd", "group"):  # what base-passwd's maintainer script would install
        shutil.copyfile(root / "usr" / "share" / "base-passwd" / f"{table}.master", root / "etc" / table)
    _check([sys.executable, "-m", "compileall", "-q", "-j", "0", str(root / "usr" / "lib" / f"python{SUITE_PYTHON}")],
           "compiling the standard library")


def _make_virtualenv(arch: L1Arch, root: Path, wanted: list[str]) -> None:
    venv = root / VENV.lstrip("/")
    site_packages = venv / "lib" / f"python{SUITE_PYTHON}" / "site-packages"
    site_packages.mkdir(parents=True)
    (venv / "lib64").symlink_to("lib")
    (venv / "bin").mkdir()
    for name in ("python", "python3", f"python{SUITE_PYTHON}"):
        (venv / "bin" / name).symlink_to("/usr/bin/python3")
    (venv / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {SUITE_PYTHON}\nexecutable = "
        f"/usr/bin/python{SUITE_PYTHON}\n"
    )
    platforms = [word for platform in WHEEL_PLATFORMS[arch.name] for word in ("--platform", platform)]
    with_scripts = root / "tmp" / "wheels"
    _check([
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
        str(with_scripts), "--only-binary=:all:", *platforms, "--python-version", SUITE_PYTHON,
        "--implementation", "cp", *wanted,
    ], "pip install")
    shutil.rmtree(with_scripts / "bin", ignore_errors=True)  # this host's interpreter in their #! lines
    for entry in with_scripts.iterdir():
        entry.rename(site_packages / entry.name)
    with_scripts.rmdir()


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
