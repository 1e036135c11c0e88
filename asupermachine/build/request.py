"""What a build is asked for (sans-IO)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._network import NetworkOption


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: str
    """The Dockerfile's text."""
    tag: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    network: NetworkOption = True
    """Each RUN's network (as ``Machine.start`` takes it: a :class:`Network` for an egress policy);
    False: none has one (``--network none``)."""
    target: str | None = None
    """The stage to build (``--target``); the last by default."""
    memory_mib: int = 1024
    """Each RUN's VM: its root's changes live in its memory until the step ends."""
