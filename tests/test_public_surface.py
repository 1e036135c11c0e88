"""What a user sees of the package: names, constructors, reasons."""

from __future__ import annotations

import pickle

import pytest

import asupermachine
from asupermachine import CloseReason, Machine, MachineClosed


def test_public_types_are_named_after_the_package() -> None:
    public = [value for name, value in vars(asupermachine).items() if isinstance(value, type) and name[0] != "_"]
    assert len(public) > 40
    assert all(value.__module__ == "asupermachine" for value in public)
    assert repr(Machine) == "<class 'asupermachine.Machine'>"


def test_a_machine_comes_from_a_runtime_not_from_its_constructor() -> None:
    with pytest.raises(TypeError, match="asupermachine.Machine has no public constructor"):
        Machine()


def test_why_a_machine_closed_is_an_enum_that_survives_pickling() -> None:
    error = MachineClosed("m1", CloseReason.TIMEOUT)
    assert str(error) == "machine m1 reached its timeout and was closed"
    assert error.reason is CloseReason.TIMEOUT and error.reason == "timeout"
    assert pickle.loads(pickle.dumps(CloseReason.RUNTIME)) is CloseReason.RUNTIME
