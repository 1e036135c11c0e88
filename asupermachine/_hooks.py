"""The default runtime and the image builder, reached by layers below them without importing them.

``Machine.create``, ``Image.bake`` and ``Image.build`` are public entry points on
classes the runtime and the builder build on; those modules register themselves
here when they are imported (which ``import asupermachine`` does), so no import
circle forms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .build.request import BuildRequest
    from .image.image import Image
    from .image.store import Store

_provider: list[Callable[[], Awaitable[Runtime]]] = []
_builder: list[Callable[[BuildRequest, Store, TextIO | None], Awaitable[Image]]] = []


def register_default_runtime(provider: Callable[[], Awaitable[Runtime]]) -> None:
    _provider[:] = [provider]


async def default_runtime() -> Runtime:
    """This event loop's default runtime (see :func:`asupermachine._runtime.default_runtime`)."""
    if not _provider:
        raise RuntimeError("the runtime is not loaded: import asupermachine")
    return await _provider[0]()


def register_builder(builder: Callable[[BuildRequest, Store, TextIO | None], Awaitable[Image]]) -> None:
    _builder[:] = [builder]


async def build_image(request: BuildRequest, store: Store, output: TextIO | None) -> Image:
    """Build ``request`` into ``store`` (see :func:`asupermachine.build.builder.build`)."""
    if not _builder:
        raise RuntimeError("the builder is not loaded: import asupermachine")
    return await _builder[0](request, store, output)
