"""The default runtime, reached by layers below the runtime module without importing it.

``Machine.create`` and ``Image.bake`` are public entry points on classes the
runtime builds on; the runtime module registers its per-loop default here when
it is imported (which ``import asupermachine`` does), so no import circle forms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._runtime import Runtime

_provider: list[Callable[[], Awaitable[Runtime]]] = []


def register_default_runtime(provider: Callable[[], Awaitable[Runtime]]) -> None:
    _provider[:] = [provider]


async def default_runtime() -> Runtime:
    """This event loop's default runtime (see :func:`asupermachine._runtime.default_runtime`)."""
    if not _provider:
        raise RuntimeError("the runtime is not loaded: import asupermachine")
    return await _provider[0]()
