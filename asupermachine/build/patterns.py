"""Path patterns as docker reads them (sans-IO): COPY's wildcards and ``.dockerignore``.

Both are Go's ``filepath.Match`` (``*`` and ``?`` stop at ``/``, ``[...]``
classes with ``^`` or ``!`` to negate, ``\\`` escapes); ``.dockerignore`` adds
``**`` for any number of directories and ``!`` lines that take a path back.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from .._errors import BuildError

WILDCARDS = frozenset("*?[")


def has_wildcards(pattern: str) -> bool:
    return any(character in WILDCARDS for character in pattern)


def pattern_regex(pattern: str, *, double_star: bool = False) -> re.Pattern[str]:
    """``pattern`` as an anchored regular expression; ``double_star`` lets ``**`` cross directories."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        character = pattern[index]
        index += 1
        if character == "*":
            if double_star and pattern[index : index + 1] == "*":
                index += 1
                if pattern[index : index + 1] == "/":
                    index += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif character == "?":
            out.append("[^/]")
        elif character == "\\" and index < len(pattern):
            out.append(re.escape(pattern[index]))
            index += 1
        elif character == "[":
            end = pattern.find("]", index + 1)
            if end < 0:
                raise BuildError(f"bad pattern {pattern!r}: an unclosed [")
            body = pattern[index:end]
            if body[:1] in ("^", "!"):
                body = "^" + body[1:].replace("\\", "\\\\")
            else:
                body = body.replace("\\", "\\\\")
            out.append(f"(?!/)[{body}]")
            index = end + 1
        else:
            out.append(re.escape(character))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    keep: bool
    """A ``!`` line: what it matches is sent after all."""

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return pattern_regex(self.pattern, double_star=True)

    def matches(self, path: str) -> bool:
        """The rule matches ``path`` or a directory above it."""
        parts = path.split("/")
        return any(self.regex.match("/".join(parts[:depth])) for depth in range(len(parts), 0, -1))


@dataclass(frozen=True)
class IgnoreRules:
    """A ``.dockerignore``: the last rule that matches a path decides."""

    rules: tuple[IgnoreRule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        rules = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = posixpath.normpath(line[1:].strip() if keep else line).lstrip("/")
            if pattern and pattern != ".":
                rules.append(IgnoreRule(pattern, keep))
        return cls(tuple(rules))

    def ignores(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, ``/``-separated) is left out."""
        ignored = False
        for rule in self.rules:
            if rule.keep == ignored and rule.matches(path):
                ignored = not rule.keep
        return ignored

    def may_keep_below(self, directory: str) -> bool:
        """Whether a ``!`` rule might take back something under an ignored ``directory``."""
        prefix = directory + "/"
        return any(rule.keep and (rule.pattern.startswith(prefix) or "*" in rule.pattern) for rule in self.rules)


def match_names(pattern: str, names: Iterable[str]) -> list[str]:
    """The ``names`` (one path component each) that ``pattern`` matches, sorted."""
    regex = pattern_regex(pattern)
    return sorted(name for name in names if regex.match(name))
