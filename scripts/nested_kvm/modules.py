"""The kernel modules an L1 loads, in an order that loads each one's dependencies first."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path


class ModuleError(RuntimeError):
    """A wanted module, or one it depends on, is not in the kernel package."""


def module_name(path: Path) -> str:
    """The name the kernel knows a module file by (``kvm-amd.ko`` is ``kvm_amd``)."""
    return path.name.split(".ko")[0].replace("-", "_")


def index_modules(modules_dir: Path) -> dict[str, Path]:
    """Every module file under ``modules_dir``, by name."""
    return {module_name(path): path for path in modules_dir.rglob("*.ko*")}


def load_order(wanted: Iterable[str], depends: Callable[[str], Iterable[str]]) -> list[str]:
    """``wanted`` and everything they depend on, each after its dependencies (``depends(name)`` lists them)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ModuleError(f"modules depend on each other in a circle through {name}")
        visiting.add(name)
        for dependency in depends(name):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def modinfo_depends(index: Mapping[str, Path]) -> Callable[[str], list[str]]:
    """A ``depends`` for :func:`load_order` that asks ``modinfo`` of the module files in ``index``."""

    def depends(name: str) -> list[str]:
        if name not in index:
            raise ModuleError(f"the L1 kernel has no module {name}")
        field = subprocess.run(
            ["modinfo", "-F", "depends", str(index[name])], capture_output=True, text=True, check=True
        ).stdout.strip()
        return [dependency.replace("-", "_") for dependency in field.split(",") if dependency]

    return depends
