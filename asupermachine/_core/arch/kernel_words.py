"""Kernel command-line words every architecture's guest gets."""

QUIET_ARGUMENTS = ("quiet", "loglevel=1")
"""Keep the kernel's boot messages off the console unless the machine asks for ``kernel_log``."""
