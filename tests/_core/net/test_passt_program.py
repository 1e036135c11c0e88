"""Which passt serves VMs: versions read, a fixed one preferred, built from verified source, else a warning."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from asupermachine import NetBackendError
from asupermachine._core.net import passt_program
from asupermachine._core.net.passt import Passt
from asupermachine._core.net.passt_program import (
    PASST_SOURCE_VERSION,
    PasstProgram,
    check_sha256,
    dpkg_version,
    ensure_fixed_passt,
    find_passt,
    git_date,
    has_avx2,
    is_fixed,
    passt_at,
    patch_series,
    said_version,
    source_checksums,
    upstream_tag,
)

DEBIAN_12 = "0.0~git20230309.7c7625d-1"
DEBIAN_TARBALL = "passt_0.0~git20250503.587980c-2+deb13u1.debian.tar.xz"
SHOWSRC = f"""\
Package: passt
Version: 0.0~git20250415.2340bbf-1
Checksums-Sha256:
 aaaa 10 passt_0.0~git20250415.2340bbf-1.dsc

Package: passt
Binary: passt
Version: 0.0~git20250503.587980c-2+deb13u1
Format: 3.0 (quilt)
Checksums-Sha256:
 4EDFBB2BF4D12DB992AF4B2F82CDE87140D01ACE3C9C55D93AFD61D23034A8B4 1975 passt_0.0~git20250503.587980c-2+deb13u1.dsc
 69d5eb843f7d648c2cc60bfbca6ea7b5014c6b6f07cdee362c2a8cf490515a49 261392 passt_0.0~git20250503.587980c.orig.tar.xz
 f8d9fdfc1ba89e7dde48705ae68d1dfa8a40477cb85184d41194487f2902b77d 9192 {DEBIAN_TARBALL}
Homepage: https://passt.top/
"""
ORIG = "passt_0.0~git20250503.587980c.orig.tar.xz"
ORIG_SHA256 = "69d5eb843f7d648c2cc60bfbca6ea7b5014c6b6f07cdee362c2a8cf490515a49"


@pytest.mark.parametrize(
    ("version", "date"),
    [
        (DEBIAN_12, datetime.date(2023, 3, 9)),
        (PASST_SOURCE_VERSION, datetime.date(2025, 5, 3)),
        ("2025_05_03.587980c", datetime.date(2025, 5, 3)),
        ("unknown version", None),
        ("0.0~git20231399.7c7625d-1", None),  # no such day
    ],
)
def test_the_snapshot_date_is_read_from_debian_and_upstream_versions(
    version: str, date: datetime.date | None
) -> None:
    assert git_date(version) == date


@pytest.mark.parametrize(
    ("version", "fixed"),
    [
        (DEBIAN_12, False),
        ("0.0~git20230327.4e73e9b-1", True),  # the day of the fix
        (PASST_SOURCE_VERSION, True),
        ("2023_03_21.1ee2f7c", False),
        ("2025_05_03.587980c", True),
        ("unknown version", False),  # Debian 12's says only that
    ],
)
def test_a_passt_is_fixed_from_the_snapshot_of_2023_03_27(version: str, fixed: bool) -> None:
    assert is_fixed(version) == fixed


def test_only_passt_from_2024_06_24_is_left_without_stderr() -> None:
    assert not PasstProgram("/usr/bin/passt", DEBIAN_12, False).logs_to_stderr
    assert not PasstProgram("passt", "unknown version", False).logs_to_stderr
    assert PasstProgram("passt", PASST_SOURCE_VERSION, True).logs_to_stderr


def test_the_build_is_named_as_upstream_names_its_snapshot() -> None:
    assert upstream_tag(PASST_SOURCE_VERSION) == "2025_05_03.587980c"
    with pytest.raises(ValueError):
        upstream_tag("1.0-1")


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("passt 2025_05_03.587980c\r\nCopyright Red Hat\r\n", "2025_05_03.587980c"),
        ("passt unknown version\nCopyright Red Hat\n", "unknown version"),
        ("", "unknown"),
    ],
)
def test_the_version_passt_says_is_its_first_line(output: str, version: str) -> None:
    assert said_version(output) == version


def test_dpkgs_version_counts_only_for_the_file_it_installed() -> None:
    query = f"{DEBIAN_12}\n /.\n /usr/bin\n /usr/bin/passt\n /usr/bin/passt.avx2"
    assert dpkg_version(query, "/usr/bin/passt") == DEBIAN_12
    assert dpkg_version(query, "/usr/local/bin/passt") is None
    assert dpkg_version("", "/usr/bin/passt") is None


def test_the_checksums_are_those_of_the_stanza_of_the_pinned_version() -> None:
    checksums = source_checksums(SHOWSRC, PASST_SOURCE_VERSION)
    assert len(checksums) == 3 and checksums[ORIG] == ORIG_SHA256
    dsc = "passt_0.0~git20250503.587980c-2+deb13u1.dsc"
    assert checksums[dsc] == "4edfbb2bf4d12db992af4b2f82cde87140d01ace3c9c55d93afd61d23034a8b4"  # lower case


def test_sources_without_the_pinned_version_say_what_they_offer() -> None:
    with pytest.raises(NetBackendError, match=r"offer passt 0\.0~git20250415\.2340bbf-1, 0\.0~git2025050"):
        source_checksums(SHOWSRC, "0.0~git20990101.0000000-1")


def test_a_tarball_of_another_checksum_is_refused() -> None:
    checksums = source_checksums(SHOWSRC, PASST_SOURCE_VERSION)
    check_sha256(ORIG, ORIG_SHA256.upper(), checksums)
    with pytest.raises(NetBackendError, match="refused"):
        check_sha256(ORIG, "0" * 64, checksums)
    with pytest.raises(NetBackendError, match="refused"):
        check_sha256("passt_extra.tar.xz", ORIG_SHA256, checksums)


def test_the_patch_series_is_read_in_order_without_comments() -> None:
    series = "fix-podman-issue-26073.patch\n# a comment\n\nbackports/apparmor.patch -p1\n"
    assert patch_series(series) == ["fix-podman-issue-26073.patch", "backports/apparmor.patch"]


def test_avx2_is_read_from_the_cpu_flags() -> None:
    assert has_avx2("processor\t: 0\nflags\t\t: fpu sse avx avx2 bmi2\n")
    assert not has_avx2("flags\t\t: fpu sse avx avx512f\n")


# -- choosing the program, with fakes on PATH --------------------------------------------------------


@pytest.fixture
def choosing_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No cached build, a build that fails, and an empty directory as PATH; this process's choice forgotten."""

    def no_build() -> Path:
        raise NetBackendError("apt-get failed building passt: no network")

    monkeypatch.setattr(passt_program, "cached_passt_path", lambda: tmp_path / "cache" / "passt")
    monkeypatch.setattr(passt_program, "ensure_fixed_passt", no_build)
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    passt_program._chosen.cache_clear()
    yield path
    passt_program._chosen.cache_clear()


def fake_passt(directory: Path, says: str) -> str:
    script = directory / "passt"
    script.write_text(f"#!/bin/sh\necho 'passt {says}'\necho 'Copyright Red Hat'\n")
    script.chmod(0o755)
    return str(script)


def test_a_system_passt_that_is_fixed_serves_without_a_build(choosing_afresh: Path) -> None:
    path = fake_passt(choosing_afresh, "2024_06_24.1ee2eca")
    assert find_passt() == PasstProgram(path, "2024_06_24.1ee2eca", True)


def test_when_the_build_fails_the_systems_passt_serves_with_a_warning(
    choosing_afresh: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = fake_passt(choosing_afresh, "unknown version")
    with caplog.at_level(logging.WARNING, logger="asupermachine"):
        assert find_passt() == PasstProgram(path, "unknown version", False)
    (record,) = caplog.records
    assert "idle for 24 s" in record.getMessage() and "no network" in record.getMessage()


def test_when_the_build_fails_and_there_is_no_passt_it_raises(choosing_afresh: Path) -> None:
    with pytest.raises(NetBackendError, match="no passt to run: .*no network"):
        find_passt()


def test_an_explicit_executable_is_described_and_run_as_given(tmp_path: Path) -> None:
    path = fake_passt(tmp_path, "unknown version")
    options = Passt(executable=path)
    assert options.program() == PasstProgram(path, "unknown version", False)
    assert options.argv(3)[:4] == [path, "--foreground", "--quiet", "--stderr"]  # it may be old: told to log
    assert passt_at("/nonexistent/passt") == PasstProgram("/nonexistent/passt", "unknown", False)


# -- the real build ------------------------------------------------------------------------------------


def test_the_fixed_passt_is_built_and_says_its_snapshot() -> None:
    built = ensure_fixed_passt()  # cached after the first build (scripts/setup.sh makes it)
    assert os.access(built, os.X_OK) and os.access(built.with_name("passt.avx2"), os.X_OK)
    assert passt_at(str(built)).version == "2025_05_03.587980c"
    chosen = find_passt()
    assert chosen.fixed and chosen.version == PASST_SOURCE_VERSION and Path(chosen.path).parent == built.parent
    assert Passt().argv(3)[:3] == [chosen.path, "--foreground", "--quiet"]
