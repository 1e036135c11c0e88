"""Content digests (``algorithm:hex``): parsing and verification while streaming."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .._errors import DigestMismatch, ManifestError

ALGORITHMS = {"sha256": 64, "sha512": 128}
_FORM = re.compile(r"(sha256|sha512):([0-9a-f]+)")


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """A digest we can verify; anything else (other algorithms, bad hex) is refused."""
        if not cls.is_digest(text):
            raise ManifestError(f"{text!r} is not a sha256 or sha512 digest")
        algorithm, hex_digits = text.split(":")
        return cls(algorithm, hex_digits)

    @staticmethod
    def is_digest(text: str) -> bool:
        """Whether ``text`` is a digest :meth:`parse` takes."""
        match = _FORM.fullmatch(text)
        return match is not None and len(match.group(2)) == ALGORITHMS[match.group(1)]

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        return Hasher(self)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Hasher:
    """Feed content as it streams; :meth:`verify` raises :class:`DigestMismatch` if it is not ``expected``."""

    def __init__(self, expected: Digest) -> None:
        self.expected = expected
        self.size = 0
        self._hash = hashlib.new(expected.algorithm)

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def verify(self, what: str) -> None:
        actual = self._hash.hexdigest()
        if actual != self.expected.hex:
            raise DigestMismatch(f"{what}: content has digest {self.expected.algorithm}:{actual}, not {self.expected}")
