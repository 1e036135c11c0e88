import pytest

from asupermachine import GuestMemoryError
from asupermachine._core.memory import GuestMemory

MIB = 1 << 20


def test_reads_and_writes_land_at_guest_physical_addresses_across_regions() -> None:
    with GuestMemory([(0, 2 * MIB), (4 * MIB, MIB)]) as memory:
        memory.write(0x1000, b"low")
        memory.write(4 * MIB + 8, b"high")
        assert memory.read(0x1000, 3) == b"low"
        assert memory.read(4 * MIB + 8, 4) == b"high"
        assert memory.regions[1].offset == 2 * MIB
        view = memory.view(4 * MIB, 16)
        view[0:2] = b"zz"
        view.release()
        assert memory.read(4 * MIB, 2) == b"zz"


@pytest.mark.parametrize(
    ("gpa", "length"),
    [(2 * MIB, 1), (2 * MIB - 1, 2), (3 * MIB, 4), (5 * MIB, 1), (-1, 1), (0, -1), (1 << 64, 1)],
)
def test_accesses_outside_or_across_regions_are_refused(gpa: int, length: int) -> None:
    with GuestMemory([(0, 2 * MIB), (4 * MIB, MIB)]) as memory:
        with pytest.raises(GuestMemoryError):
            memory.read(gpa, length)
        if length > 0:
            with pytest.raises(GuestMemoryError):
                memory.write(gpa, b"x" * length)
            assert not memory.contains(gpa, length)


def test_layout_must_be_page_aligned_and_disjoint() -> None:
    with pytest.raises(ValueError):
        GuestMemory([(0, 100)])
    with pytest.raises(ValueError):
        GuestMemory([(0, 2 * MIB), (MIB, MIB)])
    with pytest.raises(ValueError):
        GuestMemory([])


def test_fresh_memory_reads_as_zero_and_close_unmaps() -> None:
    memory = GuestMemory([(0, MIB)])
    assert memory.read(0, 64) == bytes(64)
    assert memory.host_address(memory.regions[0]) > 0
    memory.close()
    memory.close()  # idempotent
