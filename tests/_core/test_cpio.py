import stat
import subprocess

import pytest

from asupermachine._core.cpio import CpioEntry, cpio_archive


def test_archive_unpacks_with_the_system_cpio(tmp_path) -> None:  # type: ignore[no-untyped-def]
    archive = cpio_archive(
        [
            CpioEntry("bin", stat.S_IFDIR | 0o755),
            CpioEntry("bin/tool", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
            CpioEntry("bin/link", stat.S_IFLNK | 0o777, b"tool"),
        ]
    )
    assert len(archive) % 4 == 0
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert (tmp_path / "bin/tool").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin/link").readlink().as_posix() == "tool"


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "a/../../b", ""])
def test_member_names_must_stay_inside_the_archive(name: str) -> None:
    with pytest.raises(ValueError):
        cpio_archive([CpioEntry(name, stat.S_IFREG | 0o644)])
