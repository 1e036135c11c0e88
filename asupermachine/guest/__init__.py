"""Guest-side assets built by the project: the kernel, the static init and agent, the default root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..image.builtin import ensure_default_root
from .initramfs import READY_MARKER as READY_MARKER
from .initramfs import ensure_initramfs
from .kernel import ensure_kernel


@dataclass(frozen=True)
class GuestAssets:
    kernel: Path
    initramfs: Path
    default_root: Path | None
    """The built-in busybox root, when asked for."""


def resolve_assets(
    kernel: Path | None = None, initramfs: Path | None = None, *, default_root: bool = False
) -> GuestAssets:
    """The given paths, or the project's own assets, built and cached on first use (blocking).

    The default root filesystem is built only with ``default_root``.
    """
    return GuestAssets(
        kernel=kernel if kernel is not None else ensure_kernel(),
        initramfs=initramfs if initramfs is not None else ensure_initramfs(),
        default_root=ensure_default_root() if default_root else None,
    )
