"""``python -m asupermachine._core.net``: find (or build, once) the passt that serves VMs and print which."""

from .passt_program import find_passt

program = find_passt()
print(f"passt: {program.path} ({program.version})")
