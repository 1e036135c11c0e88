"""The paused-machine store without a guest: ids that could name a path elsewhere, damaged records, claims."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from asupermachine import MachineInUse, PausedMachineNotFound, SnapshotError
from asupermachine import _paused as paused

pytestmark = pytest.mark.usefixtures("own_data_home")


@pytest.mark.parametrize("machine_id", ["", ".", "..", "../escape", "a/b", ".hidden", "x\0y"])
def test_an_id_that_is_not_a_plain_name_touches_nothing(machine_id: str, tmp_path: Path) -> None:
    for act in (paused.load, paused.remove, paused.Resumption.claim):
        with pytest.raises(PausedMachineNotFound):
            act(machine_id)
    assert not paused.exists(machine_id)
    assert sorted(path.name for path in tmp_path.rglob("*")) == []


def test_a_damaged_record_is_refused_left_out_of_the_list_and_removable() -> None:
    record = paused.paused_root() / "0badc0de" / paused.RECORD_NAME
    record.parent.mkdir(parents=True)
    record.write_text('{"format": "asupermachine-paused", "version": 1, "id": "0badc0de"')
    with pytest.raises(SnapshotError, match="damaged"):
        paused.load("0badc0de")
    assert paused.listed() == []
    paused.remove("0badc0de")
    assert not paused.exists("0badc0de")


def test_a_claimed_machine_is_neither_claimed_again_nor_removed() -> None:
    (paused.paused_root() / "cafe0001").mkdir(parents=True)
    with paused.Resumption.claim("cafe0001"):
        with pytest.raises(MachineInUse):
            paused.Resumption.claim("cafe0001")
        with pytest.raises(MachineInUse):
            paused.remove("cafe0001")
    paused.remove("cafe0001")
    with pytest.raises(PausedMachineNotFound):
        paused.remove("cafe0001")


def test_what_a_crashed_pause_left_is_swept_but_never_a_pause_being_written() -> None:
    writing = paused.staging("cafe0002")
    (writing.path / "memory").write_bytes(b"half")
    crashed = paused.paused_root() / ".cafe0003.0000.tmp"
    (crashed / "snapshot").mkdir(parents=True)
    replaced = paused.paused_root() / ".cafe0004.0000.old"
    replaced.mkdir()
    young = paused.paused_root() / ".cafe0005.0000.tmp"  # made a moment ago: its writer locks it next
    young.mkdir()
    old = time.time() - 2 * paused.STAGING_GRACE_SECONDS
    for path in (writing.path, crashed, replaced):
        os.utime(path, (old, old))
    assert paused.listed() == []
    assert sorted(path.name for path in paused.paused_root().iterdir()) == sorted([writing.path.name, young.name])
    writing.close()
    os.utime(young, (old, old))
    paused.sweep()
    assert list(paused.paused_root().iterdir()) == []
