import json
import stat
import subprocess
from pathlib import Path

import pytest

from asupermachine._core.cpio import CpioEntry, cpio_archive
from asupermachine._core.init_config import CONFIG_NAME, FORMAT, InitConfig, initrd_with
from asupermachine._core.recipe import GuestMount, ProcessDefaults

AWKWARD_ENV = {
    "QUOTED": 'say "hi"',
    "JSON": json.dumps({"a": [1, "two"], "b": None}),
    "LINES": "one\ntwo\n",
    "EMPTY": "",
    "LONG": "x" * 5000,
}


def records(data: bytes) -> list[str]:
    assert data.endswith(b"\0")
    return data[:-1].decode().split("\0")


def test_every_field_is_a_record_and_the_command_keeps_its_words() -> None:
    config = InitConfig(
        root="/dev/vda", hostname="vm1", network="10.0.2.15/24,10.0.2.2,1500",
        defaults=ProcessDefaults(env={"A": "1"}, workdir="/srv", user="nobody"),
        command=["sh", "-c", 'echo "hi there"', ""],
    )
    assert records(config.encode()) == [
        FORMAT, "root=/dev/vda", "hostname=vm1", "net=10.0.2.15/24,10.0.2.2,1500", "workdir=/srv", "user=nobody",
        "env=A=1", "arg=sh", "arg=-c", 'arg=echo "hi there"', "arg=",
    ]


def test_mounts_are_records_in_order_with_the_target_last() -> None:
    config = InitConfig(mounts=[GuestMount("/dev/vdb", "/data"), GuestMount("/dev/vdc", "/a,b c", read_only=True)])
    assert records(config.encode())[1:] == ["mount=/dev/vdb,ext4,rw,/data", "mount=/dev/vdc,ext4,ro,/a,b c"]


def test_values_of_any_size_and_shape_go_through_unchanged() -> None:
    lines = records(InitConfig(defaults=ProcessDefaults(env=AWKWARD_ENV)).encode())
    assert lines[1:] == [f"env={name}={value}" for name, value in AWKWARD_ENV.items()]


def test_an_empty_configuration_is_the_format_line_alone() -> None:
    assert InitConfig().encode() == FORMAT.encode() + b"\0"


@pytest.mark.parametrize(
    "config",
    [
        InitConfig(defaults=ProcessDefaults(env={"A": "x\0y"})),
        InitConfig(command=["echo", "a\0b"]),
        InitConfig(defaults=ProcessDefaults(workdir="/a\0b")),
    ],
)
def test_a_nul_byte_is_refused_by_name(config: InitConfig) -> None:
    with pytest.raises(ValueError, match="NUL"):
        config.encode()


@pytest.mark.parametrize("name", ["", "A=B"])
def test_environment_names_init_cannot_split_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        InitConfig(defaults=ProcessDefaults(env={name: "x"})).encode()


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_the_kernel_finds_the_segment_after_an_initramfs_of_any_length(tmp_path: Path, padding: int) -> None:
    """``cpio`` reads concatenated archives as the kernel does: the configuration lands root-only beside the rest."""
    base = cpio_archive([CpioEntry("init", stat.S_IFREG | 0o755, b"\x7fELF" + b"!" * padding)])
    config = InitConfig(defaults=ProcessDefaults(env=AWKWARD_ENV), command=["true"])
    initrd = initrd_with(base + b"\0" * padding, config)
    trailer = initrd.index(b"TRAILER!!!")
    segment = initrd[trailer:].index(b"070701") + trailer
    assert segment % 4 == 0
    subprocess.run(["cpio", "-id", "--quiet"], input=initrd[:segment], cwd=tmp_path, check=True)
    subprocess.run(["cpio", "-id", "--quiet"], input=initrd[segment:], cwd=tmp_path, check=True)
    assert (tmp_path / CONFIG_NAME).read_bytes() == config.encode()
    assert stat.S_IMODE((tmp_path / CONFIG_NAME).stat().st_mode) == 0o400
    assert (tmp_path / "init").exists()
