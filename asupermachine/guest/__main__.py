"""``python -m asupermachine.guest``: build (or find) the guest assets and print their paths."""

from . import resolve_assets

assets = resolve_assets(default_root=True)
print(f"kernel:    {assets.kernel}")
print(f"initramfs: {assets.initramfs}")
print(f"root:      {assets.default_root}")
