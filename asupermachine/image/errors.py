"""The typed errors of the image side."""

from __future__ import annotations

from .._errors import AsupermachineError


class ImageError(AsupermachineError):
    """An image cannot be used: malformed, missing, or refused."""


class InvalidReference(ImageError):
    """An image reference that does not parse."""


class DigestMismatch(ImageError):
    """Content whose digest is not the one it was asked for by."""


class ManifestError(ImageError):
    """A manifest, index or config that is malformed or of an unknown media type."""


class PlatformNotFound(ImageError):
    """An index offers no manifest for the wanted platform; ``available`` lists what it has."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available


class RegistryError(ImageError):
    """A registry refused, failed or could not be reached."""


class AuthenticationError(RegistryError):
    """A registry wants credentials that were not given or were refused."""


class LayerError(ImageError):
    """A layer that cannot be applied safely (escaping paths, bombs, bad archives)."""
