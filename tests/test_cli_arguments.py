"""The command line's argument handling: what each subcommand parses, nothing that boots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from asupermachine import Network, Volume
from asupermachine.cli import SUBCOMMANDS, _command, _parser, main, network_option, run_target, volume_option
from asupermachine.cli._streams import parse_env

SUBCOMMANDS_WITH_VCPUS = ["boot", "exec", "run", "bake"]


def parse(*words: str) -> argparse.Namespace:
    return _parser().parse_args(list(words))


def picked(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """Only the named options, so that a new option elsewhere does not break a test."""
    return {name: getattr(args, name) for name in names}


def usage_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Parse ``words``, expect argparse's usage error (exit status 2) and return its message."""
    with pytest.raises(SystemExit) as exit_info:
        parse(*words)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# -- the subcommand ---------------------------------------------------------


def test_main_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: asupermachine" in capsys.readouterr().err


def test_an_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'start'" in usage_error(capsys, "start")


def test_every_subcommand_the_parser_offers_has_a_handler() -> None:
    actions = [action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)]
    assert len(actions) == 1
    assert sorted(actions[0].choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("subcommand", SUBCOMMANDS_WITH_VCPUS)
def test_vcpus_must_be_an_integer(capsys: pytest.CaptureFixture[str], subcommand: str) -> None:
    assert "invalid int value: 'two'" in usage_error(capsys, subcommand, "--vcpus", "two")


@pytest.mark.parametrize("subcommand", SUBCOMMANDS_WITH_VCPUS)
def test_one_vcpu_and_256_mib_by_default(subcommand: str) -> None:
    assert picked(parse(subcommand), "vcpus", "memory") == {"vcpus": 1, "memory": 256}


@pytest.mark.parametrize("subcommand", SUBCOMMANDS_WITH_VCPUS)
def test_vcpus_and_memory_are_parsed(subcommand: str) -> None:
    args = parse(subcommand, "--vcpus", "4", "--memory", "512")
    assert picked(args, "vcpus", "memory") == {"vcpus": 4, "memory": 512}


# -- boot --------------------------------------------------------------------


def test_boot_defaults_to_the_projects_guest_and_no_command() -> None:
    args = parse("boot")
    assert picked(args, "kernel", "initramfs", "kernel_log", "cmdline", "command") == {
        "kernel": None, "initramfs": None, "kernel_log": False, "cmdline": "", "command": [],
    }


def test_boot_parses_its_flags() -> None:
    args = parse("boot", "--kernel", "vmlinux", "--initramfs", "init.cpio", "--kernel-log", "--cmdline", "quiet")
    assert picked(args, "kernel", "initramfs", "kernel_log", "cmdline") == {
        "kernel": "vmlinux", "initramfs": "init.cpio", "kernel_log": True, "cmdline": "quiet",
    }


# -- exec --------------------------------------------------------------------


def test_exec_defaults() -> None:
    args = parse("exec")
    assert picked(args, "env", "workdir", "user", "timeout", "command") == {
        "env": [], "workdir": "", "user": "", "timeout": None, "command": [],
    }


def test_exec_parses_its_flags() -> None:
    args = parse("exec", "-w", "/tmp", "-u", "1000:1000", "--timeout", "2.5", "--", "ls")
    assert picked(args, "workdir", "user", "timeout") == {"workdir": "/tmp", "user": "1000:1000", "timeout": 2.5}


def test_exec_long_flags_are_the_short_ones() -> None:
    args = parse("exec", "--env", "A=1", "--workdir", "/tmp", "--user", "root")
    assert picked(args, "env", "workdir", "user") == {"env": ["A=1"], "workdir": "/tmp", "user": "root"}


@pytest.mark.parametrize("subcommand", ["exec", "run"])
def test_env_flags_accumulate_in_order(subcommand: str) -> None:
    assert parse(subcommand, "-e", "A=1", "-e", "B=2", "--env", "A=3").env == ["A=1", "B=2", "A=3"]


# -- pull, load, images ---------------------------------------------------------


def test_pull_needs_a_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert "reference" in usage_error(capsys, "pull")


def test_pull_defaults_to_linux_amd64_over_https() -> None:
    args = parse("pull", "busybox")
    assert picked(args, "reference", "platform", "insecure") == {
        "reference": "busybox", "platform": "linux/amd64", "insecure": False,
    }


def test_pull_parses_its_flags() -> None:
    args = parse("pull", "registry:5000/name:tag", "--platform", "linux/arm64", "--insecure")
    assert picked(args, "reference", "platform", "insecure") == {
        "reference": "registry:5000/name:tag", "platform": "linux/arm64", "insecure": True,
    }


def test_load_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert "path" in usage_error(capsys, "load")


def test_load_parses_its_path_and_platform() -> None:
    assert picked(parse("load", "image.tar"), "path", "platform") == {"path": "image.tar", "platform": "linux/amd64"}
    assert parse("load", "layout", "--platform", "linux/arm64").platform == "linux/arm64"


def test_images_prunes_only_when_asked() -> None:
    assert parse("images").prune is False
    assert parse("images", "--prune").prune is True


# -- run -----------------------------------------------------------------------


def test_run_defaults_to_the_builtin_image_and_its_own_command() -> None:
    args = parse("run")
    assert picked(args, "snapshot", "env", "workdir", "user", "insecure", "cold") == {
        "snapshot": None, "env": [], "workdir": "", "user": "", "insecure": False, "cold": False,
    }
    assert run_target(args) == (None, [])


def test_run_parses_its_flags() -> None:
    args = parse("run", "-w", "/srv", "-u", "nobody", "--insecure", "--cold", "busybox")
    assert picked(args, "workdir", "user", "insecure", "cold") == {
        "workdir": "/srv", "user": "nobody", "insecure": True, "cold": True,
    }
    assert run_target(args) == ("busybox", [])


@pytest.mark.parametrize("words", [["busybox", "--", "ls", "-l"], ["busybox", "ls", "-l"]])
def test_run_takes_the_words_after_the_image_as_the_command(words: list[str]) -> None:
    assert run_target(parse("run", *words)) == ("busybox", ["ls", "-l"])


def test_run_with_a_snapshot_takes_every_word_as_the_command() -> None:
    assert run_target(parse("run", "--snapshot", "snap", "echo", "hi")) == (None, ["echo", "hi"])


def test_run_without_an_image_takes_the_words_after_double_dash_as_the_command() -> None:
    assert run_target(parse("run", "--", "echo", "hi")) == (None, ["echo", "hi"])


# -- bake ----------------------------------------------------------------------


def test_bake_defaults() -> None:
    args = parse("bake")
    assert picked(args, "image", "warmup", "wait_port", "insecure") == {
        "image": None, "warmup": None, "wait_port": None, "insecure": False,
    }


def test_bake_parses_its_flags() -> None:
    args = parse("bake", "busybox", "--warmup", "echo ready", "--wait-port", "8080", "--insecure")
    assert picked(args, "image", "warmup", "wait_port", "insecure") == {
        "image": "busybox", "warmup": "echo ready", "wait_port": 8080, "insecure": True,
    }


def test_bake_wait_port_must_be_an_integer(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid int value: 'http'" in usage_error(capsys, "bake", "--wait-port", "http")


# -- the command ---------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["boot", "exec"])
def test_double_dash_before_the_command_is_dropped(subcommand: str) -> None:
    args = parse(subcommand, "--vcpus", "2", "--", "sh", "-c", "echo hi")
    assert _command(args.command) == ["sh", "-c", "echo hi"]


@pytest.mark.parametrize("subcommand", ["boot", "exec"])
def test_a_command_needs_no_double_dash(subcommand: str) -> None:
    assert _command(parse(subcommand, "ls", "/").command) == ["ls", "/"]


def test_flags_after_the_command_belong_to_the_command() -> None:
    args = parse("exec", "-e", "A=1", "echo", "-e", "B=2", "--vcpus", "3")
    assert picked(args, "env", "vcpus", "command") == {
        "env": ["A=1"], "vcpus": 1, "command": ["echo", "-e", "B=2", "--vcpus", "3"],
    }


def test_only_one_leading_double_dash_is_dropped() -> None:
    assert _command(["--", "--", "x"]) == ["--", "x"]


def test_a_double_dash_inside_the_command_is_kept() -> None:
    assert _command(["grep", "--", "-v"]) == ["grep", "--", "-v"]


def test_no_words_make_no_command() -> None:
    assert _command([]) == []
    assert _command(["--"]) == []


# -- the environment -------------------------------------------------------------


def test_env_pairs_become_a_mapping() -> None:
    assert parse_env(["A=1", "PATH=/bin:/usr/bin"]) == {"A": "1", "PATH": "/bin:/usr/bin"}


def test_env_value_keeps_any_further_equals_signs() -> None:
    assert parse_env(["OPTS=a=b=c"]) == {"OPTS": "a=b=c"}


def test_env_value_may_be_empty() -> None:
    assert parse_env(["EMPTY="]) == {"EMPTY": ""}


def test_env_later_key_wins() -> None:
    assert parse_env(["A=1", "B=2", "A=3"]) == {"A": "3", "B": "2"}


def test_env_item_without_equals_is_refused_not_dropped() -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_env(["A=1", "HOME"])
    assert isinstance(exit_info.value.code, str)
    assert "-e HOME" in exit_info.value.code and "KEY=VALUE" in exit_info.value.code


# -- networking -------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["run", "exec"])
def test_publish_and_host_loopback_make_a_network(subcommand: str) -> None:
    args = parse(subcommand, "-p", "8080:80", "-p", "0.0.0.0:8443:443", "--allow-host-loopback", "--", "true")
    assert network_option(args) == Network(publish={"8080": 80, "0.0.0.0:8443": 443}, allow_host_loopback=True)
    assert network_option(parse(subcommand, "--", "true")) == Network()


@pytest.mark.parametrize("subcommand", ["run", "exec"])
def test_egress_flags_accumulate_into_the_policy(subcommand: str) -> None:
    args = parse(subcommand, "--deny-out", "0.0.0.0/0", "--allow-out", "pypi.org", "--allow-out", "10.1.0.0/16")
    network = network_option(args)
    assert network == Network(allow_out=["pypi.org", "10.1.0.0/16"], deny_out=["0.0.0.0/0"])


def test_a_bad_egress_entry_is_refused_naming_it() -> None:
    with pytest.raises(SystemExit, match="deny_out: 'no such thing'"):
        network_option(parse("run", "--deny-out", "no such thing"))
    with pytest.raises(SystemExit, match="--network none"):
        network_option(parse("run", "--network", "none", "--deny-out", "0.0.0.0/0"))


def test_network_none_is_no_nic_and_takes_no_ports() -> None:
    assert network_option(parse("run", "--network", "none")) is False
    with pytest.raises(SystemExit, match="--network none"):
        network_option(parse("run", "--network", "none", "-p", "8080:80"))


@pytest.mark.parametrize("spec", ["80", "8080:http", "0:80", "host:8080:80"])
def test_a_bad_publish_spec_is_refused_with_the_form_to_give(spec: str) -> None:
    with pytest.raises(SystemExit, match="asupermachine: "):
        network_option(parse("run", "-p", spec))


# -- volumes ------------------------------------------------------------------


def test_volume_flags_accumulate_in_order() -> None:
    args = parse("run", "-v", "/v/a.ext4:/data", "--volume", "cache:/srv/cache:ro", "busybox")
    assert args.volumes == ["/v/a.ext4:/data", "cache:/srv/cache:ro"] and args.words == ["busybox"]


def test_a_volume_path_is_mounted_writable_unless_ro(tmp_path: Path) -> None:
    assert volume_option(f"{tmp_path}/a.ext4:/data") == ("/data", Volume(tmp_path / "a.ext4"))
    assert volume_option(f"{tmp_path}/a.ext4:/data:rw") == ("/data", Volume(tmp_path / "a.ext4"))
    assert volume_option(f"{tmp_path}/a.ext4:/data:ro") == ("/data", Volume(tmp_path / "a.ext4", read_only=True))


def test_a_relative_volume_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert volume_option("./a.ext4:/data") == ("/data", Volume(tmp_path / "a.ext4"))


def test_a_volume_name_is_a_named_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    path = tmp_path / "asupermachine" / "volumes" / "cache.ext4"
    assert volume_option("cache:/srv:ro") == ("/srv", Volume(path, read_only=True))


@pytest.mark.parametrize("spec", ["/v/a.ext4", "/v/a.ext4:data", ":/data", "/v/a.ext4:/data:rx"])
def test_a_bad_volume_spec_is_refused_with_the_form_to_give(spec: str) -> None:
    with pytest.raises(SystemExit, match="SOURCE:/TARGET"):
        volume_option(spec)


def test_volume_subcommands_parse_as_dockers() -> None:
    assert picked(parse("volume", "create", "cache"), "action", "name", "size") == {
        "action": "create", "name": "cache", "size": 1024,
    }
    assert parse("volume", "create", "cache", "--size", "64").size == 64
    assert parse("volume", "ls").action == "ls"
    assert parse("volume", "rm", "a", "b").names == ["a", "b"]


def test_volume_needs_an_action_and_rm_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert "required" in usage_error(capsys, "volume")
    assert "required" in usage_error(capsys, "volume", "rm")


def test_volume_create_ls_and_rm_manage_named_volumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["volume", "create", "cache", "--size", "16"]) == 0
    assert main(["volume", "ls"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:2] == ["cache", "16Mi"]
    with pytest.raises(SystemExit, match="invalid volume name"):
        main(["volume", "create", "bad/name"])
    with pytest.raises(SystemExit, match="File exists"):
        main(["volume", "create", "cache"])
    assert main(["volume", "rm", "cache"]) == 0
    assert not any((tmp_path / "asupermachine" / "volumes").iterdir())
