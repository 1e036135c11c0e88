import pytest

from asupermachine._core.arch.x86_64.cmdline import (
    INIT_COMMAND_MARKER,
    InitOptions,
    kernel_cmdline,
    quote_init_argument,
)
from asupermachine._core.arch.x86_64.cpuid import CpuModel


def test_command_follows_the_kernel_separator_and_init_marker() -> None:
    line = kernel_cmdline(cpu_model=CpuModel.HOST, kernel_log=True, command=["sh", "-c", "exit 3"])
    assert line.endswith(f' -- {INIT_COMMAND_MARKER} sh -c "exit 3"')
    assert "console=ttyS0" in line and "quiet" not in line


def test_quiet_by_default_and_extras_included() -> None:
    line = kernel_cmdline(cpu_model=CpuModel.CONSERVATIVE, kernel_log=False, extra="foo=bar")
    assert "quiet" in line and "foo=bar" in line and "clearcpuid=" in line and " -- " not in line


@pytest.mark.parametrize("argument", ["", "--", 'say "hi"', "two\nlines"])
def test_arguments_the_kernel_cannot_carry_are_refused(argument: str) -> None:
    with pytest.raises(ValueError):
        quote_init_argument(argument)


def test_arguments_with_spaces_are_quoted() -> None:
    assert quote_init_argument("a b") == '"a b"'
    assert quote_init_argument("plain") == "plain"


def test_init_options_come_between_the_separator_and_the_marker() -> None:
    options = InitOptions(root="/dev/vda", env={"GREETING": "hello world"}, workdir="/tmp", user="nobody")
    line = kernel_cmdline(cpu_model=CpuModel.HOST, kernel_log=False, init=options, command=["env"])
    assert line.endswith(
        " -- asupermachine.root=/dev/vda asupermachine.workdir=/tmp asupermachine.user=nobody"
        f' "asupermachine.env=GREETING=hello world" {INIT_COMMAND_MARKER} env'
    )


def test_network_is_one_init_option_word() -> None:
    options = InitOptions(hostname="vm1", network="10.0.2.15/24,10.0.2.2,32744,10.0.2.3")
    assert options.words() == ["asupermachine.hostname=vm1", "asupermachine.net=10.0.2.15/24,10.0.2.2,32744,10.0.2.3"]


def test_no_network_no_network_word() -> None:
    assert not any(word.startswith("asupermachine.net=") for word in InitOptions(root="/dev/vda").words())


def test_init_options_alone_still_end_in_the_marker() -> None:
    line = kernel_cmdline(cpu_model=CpuModel.HOST, kernel_log=False, init=InitOptions(root="/dev/vda"))
    assert line.endswith(f" -- asupermachine.root=/dev/vda {INIT_COMMAND_MARKER}")


@pytest.mark.parametrize("name", ["", "A=B"])
def test_environment_names_init_cannot_split_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        InitOptions(env={name: "x"}).words()
