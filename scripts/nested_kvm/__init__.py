"""Run a command inside an L1 Linux VM whose ``/dev/kvm`` is the hardware-style KVM users have.

QEMU's TCG emulates AMD SVM with nested paging (``-cpu max``), so an L1 booted
with Debian's own kernel loads ``kvm_amd`` and offers ``/dev/kvm`` exactly as an
AMD host does. The L1 sees the host's root read-only under a tmpfs overlay (9p),
runs the command from the same directory with the same environment, and hands
back its output and exit status. An arm64 L1 (``--arch arm64``: EL2 and VHE
under ``-cpu max``, KVM built into Debian's kernel) runs on a Debian arm64 root
of its own instead, prepared once (:mod:`.userland`), with the repository at its
own path. See ``scripts/nested-kvm --help``.
"""
