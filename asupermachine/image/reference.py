"""Image references parsed the way docker parses them (distribution/reference), sans-IO."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
OFFICIAL_NAMESPACE = "library"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_HOST = re.compile(r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    """``registry/repository[:tag][@digest]``; ``tag`` defaults to ``latest`` when there is no digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse like ``docker pull``: ``busybox`` is ``docker.io/library/busybox:latest``."""
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.fullmatch(digest):
                raise InvalidReference(f"{text!r}: {digest!r} is not a digest")
        name, tag = rest, None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            name, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise InvalidReference(f"{text!r}: {tag!r} is not a tag")
        first, _, remainder = name.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, repository = first, remainder
            if not _HOST.fullmatch(registry):
                raise InvalidReference(f"{text!r}: {registry!r} is not a registry host")
        else:
            registry, repository = DOCKER_HUB, name
            if "/" not in repository:
                repository = f"{OFFICIAL_NAMESPACE}/{repository}"
        if not _REPOSITORY.fullmatch(repository):
            raise InvalidReference(f"{text!r}: {repository!r} is not a repository name (lowercase, [a-z0-9._-/])")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest)

    @property
    def api_host(self) -> str:
        """Where the registry's API is served (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """What to ask the manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
