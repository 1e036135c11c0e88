"""The default PATH and the environment-name rule shared by the image, init's options and the agent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import asupermachine
from asupermachine._environment import DEFAULT_PATH, check_environment_name


def test_the_guest_defaults_to_the_same_path() -> None:
    header = Path(asupermachine.__file__).parent / "guest" / "include" / "spawn_process.h"
    (guest_path,) = re.findall(r'#define SPAWN_DEFAULT_PATH "([^"]*)"', header.read_text())
    assert guest_path == DEFAULT_PATH


@pytest.mark.parametrize("name", ["PATH", "_x1", "lower", "ünïcode", "A-B.C"])
def test_any_name_without_an_equals_sign_is_accepted(name: str) -> None:
    check_environment_name(name)


@pytest.mark.parametrize("name", ["", "=", "A=B", "=A"])
def test_an_empty_name_or_one_with_an_equals_sign_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="empty or contains '='"):
        check_environment_name(name)
