"""Which passt program serves VMs, and a fixed one built from Debian's source package.

Debian 12's passt (``0.0~git20230309.7c7625d-1``) resets a TCP connection the
guest opened once the host side has sent nothing for 24 s; upstream fixed that
on 2023-03-27 (4e73e9b, "tcp: Don't special case the handling of the ack of a
syn"). So passt is built from Debian's source of a fixed version, once per
machine, and cached by that version as the guest kernel is. The system's passt
serves when it is itself fixed, or, with a warning, when the build cannot be
done (no network, apt or make failing).

``python -m asupermachine._core.net`` finds (or builds) it and prints which.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..._cache import build_once, cache_root, content_key, file_digest
from ..._errors import NetBackendError
from ..._tarfile import extract_data

logger = logging.getLogger("asupermachine")

PASST_SOURCE_VERSION = "0.0~git20250503.587980c-2+deb13u1"
"""The Debian source package of passt that is built: trixie's, which builds on bookworm."""
SOURCES_LIST = (
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n"
)
"""The only source apt is given to fetch it: the system's own apt configuration is left alone."""
FIXED_SINCE = datetime.date(2023, 3, 27)
"""The first upstream snapshot that keeps an idle guest-opened TCP connection (commit 4e73e9b)."""
STDERR_BY_DEFAULT_SINCE = datetime.date(2024, 6, 24)
"""From this snapshot passt logs to stderr in the foreground by itself, and later warns that ``--stderr`` goes."""
BUILT_PROGRAMS = ("passt", "passt.avx2")
"""What is built: passt starts its AVX2 build, beside it, where the CPU has AVX2."""
STEP_TIMEOUT = 600.0
"""Seconds one step of the build (apt's download, make) may take before it counts as failed."""
VERSION_TIMEOUT = 10.0
"""Seconds ``passt --version`` may take."""
# Bump when the build procedure itself changes in a way that alters the output.
_BUILD_RECIPE_VERSION = b"1"
_GIT_DATE = re.compile(r"git(\d{4})(\d{2})(\d{2})\.|(?<![\d_])(\d{4})_(\d{2})_(\d{2})\.")


@dataclass(frozen=True)
class PasstProgram:
    """A passt program and what it is."""

    path: str
    """The program that is run."""
    version: str
    """Debian's version when dpkg installed it or it is the build of :data:`PASST_SOURCE_VERSION`; else what
    ``passt --version`` says (``unknown version`` for Debian 12's)."""
    fixed: bool
    """Whether it keeps a TCP connection the guest opened that has been idle 24 s (reset by older passt)."""

    def __str__(self) -> str:
        return f"{self.path} ({self.version})"

    @property
    def logs_to_stderr(self) -> bool:
        """Whether it logs to stderr in the foreground without being given ``--stderr``."""
        date = git_date(self.version)
        return date is not None and date >= STDERR_BY_DEFAULT_SINCE


def git_date(version: str) -> datetime.date | None:
    """The date of the upstream snapshot a passt version names, in Debian's form (``0.0~git20230309.7c7625d-1``)
    or upstream's (``2025_05_03.587980c``, as ``passt --version`` says); None if it names none."""
    match = _GIT_DATE.search(version)
    if match is None:
        return None
    year, month, day = (int(group) for group in match.groups() if group is not None)
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def is_fixed(version: str) -> bool:
    """Whether the passt of ``version`` keeps an idle guest-opened TCP connection (an unknown version: no)."""
    date = git_date(version)
    return date is not None and date >= FIXED_SINCE


def upstream_tag(debian_version: str) -> str:
    """Upstream's name of the snapshot a Debian version packages: ``2025_05_03.587980c`` for
    ``0.0~git20250503.587980c-2+deb13u1``."""
    match = re.search(r"git(\d{4})(\d{2})(\d{2})\.([0-9a-f]+)", debian_version)
    if match is None:
        raise ValueError(f"{debian_version!r} names no upstream git snapshot")
    return "{}_{}_{}.{}".format(*match.groups())


def said_version(output: str) -> str:
    """The version in what ``passt --version`` prints (``passt VERSION`` first); ``unknown`` if none."""
    lines = output.strip().splitlines()
    first = lines[0].strip() if lines else ""
    return first.removeprefix("passt ").removeprefix("pasta ").strip() or "unknown"


def dpkg_version(query: str, path: str) -> str | None:
    """The version of Debian's passt package if it installed ``path`` (a resolved path), given what
    ``dpkg-query -W -f '${Version}\\n${db-fsys:Files}' passt`` prints; None otherwise."""
    version, *files = query.splitlines() or [""]
    installed = path in {line.strip() for line in files}
    return version.strip() or None if installed else None


def source_checksums(showsrc: str, version: str) -> dict[str, str]:
    """File name -> sha256 of the source package ``version``, from the Checksums-Sha256 field of its stanza
    in ``apt-cache showsrc`` (deb822 stanzas that apt verified against the archive's signed Release).

    :raises NetBackendError: if no stanza is of ``version``, or it lists no sha256.
    """
    offered = []
    for stanza in re.split(r"\n\s*\n", showsrc.strip()):
        fields: dict[str, list[str]] = {}
        name = ""
        for line in stanza.splitlines():
            if line[:1].isspace() and name:
                fields[name].append(line.strip())
            elif ":" in line:
                name, _, value = line.partition(":")
                fields[name] = [value.strip()] if value.strip() else []
        found = " ".join(fields.get("Version", []))
        offered.append(found)
        if found != version:
            continue
        checksums = {}
        for entry in fields.get("Checksums-Sha256", []):
            sha256, _size, file_name = entry.split()
            checksums[file_name] = sha256.lower()
        if not checksums:
            raise NetBackendError(f"the Sources stanza of passt {version} lists no Checksums-Sha256")
        return checksums
    raise NetBackendError(
        f"trixie's Sources offer passt {', '.join(offered) or 'in no version'}, not {version}: "
        "update PASST_SOURCE_VERSION in asupermachine/_core/net/passt_program.py"
    )


def check_sha256(file_name: str, sha256: str, checksums: Mapping[str, str]) -> None:
    """Refuse a downloaded file whose sha256 (hex) is not the one the signed Sources give it.

    :raises NetBackendError: if they differ, or the Sources do not list ``file_name``.
    """
    expected = checksums.get(file_name)
    if expected is None or expected != sha256.lower():
        raise NetBackendError(f"{file_name} has sha256 {sha256}, not {expected} as Debian's Sources say: refused")


def patch_series(series: str) -> list[str]:
    """The patches a quilt ``series`` file lists, in order."""
    return [line.split()[0] for line in series.splitlines() if line.split() and not line.lstrip().startswith("#")]


def has_avx2(cpuinfo: str) -> bool:
    """Whether ``/proc/cpuinfo`` says the CPU has AVX2."""
    return any(line.startswith("flags") and "avx2" in line.split() for line in cpuinfo.splitlines())


# -- finding the program -------------------------------------------------------------------------

_choosing = threading.Lock()


def find_passt() -> PasstProgram:
    """The passt that serves VMs, chosen once per process: the build of :data:`PASST_SOURCE_VERSION`; or the
    system's when it is fixed itself; else that build, made now (blocking, a minute, once per machine). If it
    cannot be built the system's passt serves, with a warning logged.

    :raises NetBackendError: if it cannot be built and no passt is on ``PATH``.
    """
    with _choosing:
        return _chosen()


@functools.cache
def _chosen() -> PasstProgram:
    built = cached_passt_path()
    if built.is_file():
        return _built(built)
    found = shutil.which("passt")
    system = None if found is None else passt_at(found)
    if system is not None and system.fixed:
        return system
    try:
        return _built(ensure_fixed_passt())
    except NetBackendError as error:
        if system is None:
            raise NetBackendError(
                f"no passt to run: {error}; or install Debian's passt (scripts/setup.sh does)"
            ) from error
        logger.warning(
            "passt %s cannot be built, so %s (%s) serves VMs, which resets a TCP connection the guest opened "
            "once it has been idle for 24 s; run scripts/setup.sh where Debian's archive is reachable to build "
            "it. Why: %s", PASST_SOURCE_VERSION, system.path, system.version, error,
        )
        return system


@functools.cache
def passt_at(executable: str) -> PasstProgram:
    """What the passt at ``executable`` (a path, or a name on ``PATH``) is: Debian's version if dpkg
    installed it, else what it says; ``unknown`` if it cannot be run."""
    path = shutil.which(executable) or executable
    version = _installed_version(os.path.realpath(path)) or _said_version(path)
    return PasstProgram(path, version, is_fixed(version))


def _built(target: Path) -> PasstProgram:
    # passt starts its AVX2 build by its own absolute path, which `nobody` (passt's user under root) may not
    # reach in root's cache: the AVX2 build is started directly instead, where the CPU has AVX2.
    avx2 = target.with_name("passt.avx2")
    path = avx2 if avx2.is_file() and has_avx2(Path("/proc/cpuinfo").read_text()) else target
    return PasstProgram(str(path), PASST_SOURCE_VERSION, is_fixed(PASST_SOURCE_VERSION))


def _installed_version(path: str) -> str | None:
    query = ["dpkg-query", "-W", "-f", "${Version}\\n${db-fsys:Files}", "passt"]
    try:
        result = subprocess.run(query, capture_output=True, text=True, timeout=VERSION_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):  # not a Debian system
        return None
    return dpkg_version(result.stdout, path) if result.returncode == 0 and result.stdout else None


def _said_version(path: str) -> str:
    """What ``passt --version`` says, read through a terminal: newer passt exits without flushing a pipe."""
    reader, writer = os.openpty()
    chunks = []
    try:
        try:
            subprocess.run(
                [path, "--version"], stdin=subprocess.DEVNULL, stdout=writer, stderr=subprocess.DEVNULL,
                timeout=VERSION_TIMEOUT, check=False,
            )
        finally:
            os.close(writer)
        with contextlib.suppress(OSError):  # EIO: the terminal has no writer left
            while chunk := os.read(reader, 4096):
                chunks.append(chunk)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    finally:
        os.close(reader)
    return said_version(b"".join(chunks).decode(errors="replace"))


# -- building it ---------------------------------------------------------------------------------


def cached_passt_path(compiler: str | None = None) -> Path:
    """Where the build of :data:`PASST_SOURCE_VERSION` (with the C ``compiler``, if not the default) is
    cached (it may not be there yet)."""
    key = content_key(_BUILD_RECIPE_VERSION, PASST_SOURCE_VERSION.encode(), *([compiler.encode()] if compiler else []))
    return cache_root() / "passt" / key / "passt"


def ensure_fixed_passt(compiler: str | None = None) -> Path:
    """Return the cached build of :data:`PASST_SOURCE_VERSION`, building it first if needed (a minute, once).

    ``compiler``: a cross compiler (``aarch64-linux-gnu-gcc``), for a passt to run on another architecture
    (the arm64 L1's); the build is then of ``passt`` alone.

    :raises NetBackendError: if its source cannot be downloaded or verified, or it does not build.
    """
    try:
        return build_once(cached_passt_path(compiler), functools.partial(_build, compiler=compiler))
    except (OSError, tarfile.TarError) as error:
        raise NetBackendError(f"cannot build passt {PASST_SOURCE_VERSION}: {error}") from error


def _build(staging: Path, compiler: str | None) -> None:
    print(f"building passt {PASST_SOURCE_VERSION} from Debian's source (once, under a minute)", file=sys.stderr)
    orig, debian = _fetch_source(staging.parent / "apt")
    with tarfile.open(orig) as tar:
        extract_data(tar, staging.parent / "src")
    (src,) = (staging.parent / "src").iterdir()
    with tarfile.open(debian) as tar:
        extract_data(tar, src)
    series = src / "debian" / "patches" / "series"
    for patch in patch_series(series.read_text()) if series.is_file() else []:
        _run(["patch", "-p1", "--forward", "--input", str(src / "debian" / "patches" / patch)], src)
    # VERSION set here, or the Makefile asks `git describe` of whatever repository encloses the cache.
    programs = ("passt",) if compiler else BUILT_PROGRAMS  # the AVX2 build is x86_64's
    cross = [f"CC={compiler}"] if compiler else []
    _run(["make", f"VERSION={upstream_tag(PASST_SOURCE_VERSION)}", *cross, *programs], src)
    for name in programs:
        shutil.copy2(src / name, staging / name)


def _fetch_source(root: Path) -> tuple[Path, Path]:
    """Download the source package's tarballs with apt and a source list of our own into ``root``, each
    checked against the apt-verified Sources; return the original tarball and the Debian one."""
    downloads = root / "download"
    (root / "lists" / "partial").mkdir(parents=True)
    downloads.mkdir()
    (root / "sources.list").write_text(SOURCES_LIST)
    options = [
        "-o", f"Dir::Etc::SourceList={root / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={root / 'lists'}", "-o", f"Dir::Cache={root / 'cache'}",
    ]
    if os.geteuid() == 0:
        options += ["-o", "APT::Sandbox::User=root"]  # its user _apt cannot write here: apt would warn, then do so
    _run(["apt-get", *options, "--error-on=any", "update"], root)  # unreachable: an error, not a warning
    showsrc = _run(["apt-cache", *options, "showsrc", "passt"], root).stdout
    checksums = source_checksums(showsrc, PASST_SOURCE_VERSION)
    # Some mirrors do not serve the .dsc, and apt then fails, but the tarballs are all the build needs.
    fetched = _run(["apt-get", *options, "source", "--download-only", f"passt={PASST_SOURCE_VERSION}"],
                   downloads, check=False)
    tarballs = [name for name in checksums if ".tar." in name]
    for name in tarballs:
        if not (downloads / name).is_file():
            raise NetBackendError(f"apt-get source did not download {name}:\n{fetched.stderr[-2000:]}")
        check_sha256(name, file_digest(downloads / name).hex(), checksums)
    (orig,) = [downloads / name for name in tarballs if ".orig.tar." in name]
    (debian,) = [downloads / name for name in tarballs if ".debian.tar." in name]
    return orig, debian


def _run(argv: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a build step, its output captured; raise :class:`NetBackendError` with its end if it fails."""
    try:
        result = subprocess.run(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=STEP_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise NetBackendError(f"{argv[0]} took longer than {STEP_TIMEOUT:.0f} s building passt") from None
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise NetBackendError(f"{argv[0]} failed building passt (status {result.returncode}):\n{output}")
    return result
