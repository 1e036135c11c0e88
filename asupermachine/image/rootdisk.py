"""An image's root disk: its layers applied to a tree, made into an erofs image, cached by config digest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .._cache import build_once
from .._errors import AssetError
from .digest import Digest
from .layers import LayerApplier, Limits
from .manifest import Manifest
from .store import Store

ROOT_DISK_NAME = "root.erofs"
RECIPE_VERSION = "1"


def root_disk_path(store: Store, config: Digest) -> Path:
    # The config names the uncompressed layers (rootfs.diff_ids): the same config, the same tree.
    return store.rootfs / f"{config.hex}-{RECIPE_VERSION}" / ROOT_DISK_NAME


def build_root_disk(store: Store, manifest: Manifest, limits: Limits = Limits()) -> Path:
    """The cached root disk of ``manifest``'s image, built first if needed (blocking, needs root)."""

    def build(staging: Path) -> None:
        tree = staging.parent / "tree"
        tree.mkdir(mode=0o755)
        apply_layers(store, manifest, tree, limits)
        make_erofs(tree, staging / ROOT_DISK_NAME)

    return build_once(root_disk_path(store, manifest.config.digest), build)


def root_disk_of_tree(store: Store, config: Digest, tree: Path) -> Path:
    """The cached root disk of the image ``config`` names, made from ``tree``, which holds its layers applied."""
    return build_once(root_disk_path(store, config), lambda staging: make_erofs(tree, staging / ROOT_DISK_NAME))


def make_erofs(tree: Path, output: Path) -> None:
    """An erofs image of the directory ``tree`` at ``output`` (blocking)."""
    mkfs = shutil.which("mkfs.erofs")
    if mkfs is None:
        raise AssetError("mkfs.erofs is missing: install erofs-utils (scripts/setup.sh does this)")
    command = [mkfs, "--quiet", str(output), str(tree)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssetError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def apply_layers(store: Store, manifest: Manifest, tree: Path, limits: Limits = Limits()) -> None:
    """Apply ``manifest``'s layers, in order, to the directory ``tree`` (blocking, needs root)."""
    with LayerApplier(tree, limits) as applier:
        for layer in manifest.layers:
            with store.blob_path(layer.digest).open("rb") as blob:
                applier.apply(blob, str(layer.digest))
