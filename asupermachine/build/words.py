"""A Dockerfile's word expansion, as BuildKit's shell lexer does it (sans-IO).

Quotes group and are removed, the escape character takes the next one
literally, and ``$name``, ``${name}``, ``${name:-word}``, ``${name-word}``,
``${name:+word}``, ``${name+word}``, ``${name:?message}`` and ``${name?message}``
expand from the variables in scope; an unset variable is empty. Single quotes
expand nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .._errors import BuildError

NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
MODIFIERS = ("-", "+", "?")


@dataclass
class _Words:
    """Words being assembled: expanded text splits at blanks, quoted text never does."""

    split: bool
    words: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    started: bool = False

    def add(self, text: str, *, quoted: bool = False) -> None:
        for character in text:
            if self.split and not quoted and character.isspace():
                self.end()
            else:
                self.current.append(character)
                self.started = True

    def mark(self) -> None:
        """A word exists here even if it stays empty (``""``)."""
        self.started = True

    def end(self) -> None:
        if self.started:
            self.words.append("".join(self.current))
        self.current, self.started = [], False


class _Lexer:
    def __init__(self, text: str, variables: Mapping[str, str], escape: str) -> None:
        self.text, self.variables, self.escape = text, variables, escape
        self.at = 0

    def peek(self, offset: int = 0) -> str:
        index = self.at + offset
        return self.text[index] if index < len(self.text) else ""

    def take(self) -> str:
        character = self.peek()
        self.at += 1
        return character

    def run(self, words: _Words, stop: str = "") -> None:
        while self.at < len(self.text) and self.peek() not in stop:
            character = self.take()
            if character == "'":
                words.mark()
                words.add(self._until("'"), quoted=True)
            elif character == '"':
                words.mark()
                self._double_quoted(words)
            elif character == self.escape:
                if self.at < len(self.text):
                    words.add(self.take(), quoted=True)
            elif character == "$":
                words.add(self._dollar())
            else:
                words.add(character)

    def _until(self, closing: str) -> str:
        end = self.text.find(closing, self.at)
        if end < 0:
            raise BuildError(f"unterminated {closing} quote in {self.text!r}")
        text, self.at = self.text[self.at : end], end + 1
        return text

    def _double_quoted(self, words: _Words) -> None:
        while True:
            if self.at >= len(self.text):
                raise BuildError(f'unterminated " quote in {self.text!r}')
            character = self.take()
            if character == '"':
                return
            if character == self.escape and self.peek() in ('"', "$", self.escape):
                words.add(self.take(), quoted=True)
            elif character == "$":
                words.add(self._dollar(), quoted=True)
            else:
                words.add(character, quoted=True)

    def _name(self) -> str:
        start = self.at
        while self.peek() and self.peek() in NAME_CHARACTERS:
            self.at += 1
        return self.text[start : self.at]

    def _dollar(self) -> str:
        if self.peek() != "{":
            name = self._name()
            return self.variables.get(name, "") if name else "$"
        self.at += 1
        name = self._name()
        if not name:
            raise BuildError(f"bad substitution in {self.text!r}: a ${{...}} without a name")
        if self.peek() == "}":
            self.at += 1
            return self.variables.get(name, "")
        colon = self.peek() == ":"
        if colon:
            self.at += 1
        modifier = self.take()
        if modifier not in MODIFIERS:
            raise BuildError(f"bad substitution in {self.text!r}: ${{{name}{':' if colon else ''}{modifier}...}}")
        inner = _Words(split=False)
        self.run(inner, stop="}")
        if self.take() != "}":
            raise BuildError(f"bad substitution in {self.text!r}: no closing brace")
        inner.end()
        word = inner.words[0] if inner.words else ""
        value = self.variables.get(name)
        present = value is not None and (value != "" or not colon)
        if modifier == "-":
            return value if present and value is not None else word
        if modifier == "+":
            return word if present else ""
        if not present or value is None:
            raise BuildError(f"{name}: {word or 'is not set'}")
        return value


def expand(text: str, variables: Mapping[str, str], escape: str = "\\") -> str:
    """``text`` as one word: quotes removed, escapes taken, variables expanded."""
    words = _Words(split=False)
    _Lexer(text, variables, escape).run(words)
    return "".join(words.current)


def expand_words(text: str, variables: Mapping[str, str], escape: str = "\\") -> list[str]:
    """``text`` split into words at unquoted blanks (those that expansions bring too), then expanded."""
    words = _Words(split=True)
    _Lexer(text, variables, escape).run(words)
    words.end()
    return words.words


def split_assignments(text: str, escape: str = "\\") -> list[str]:
    """``a=1 b="two words"`` split at unquoted blanks, quotes and escapes kept for :func:`expand`."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        character = text[index]
        if character == escape and quote != "'" and index + 1 < len(text):
            current += [character, text[index + 1]]
            index += 2
            continue
        if quote:
            quote = "" if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character.isspace():
            if current:
                parts.append("".join(current))
            current = []
            index += 1
            continue
        current.append(character)
        index += 1
    if quote:
        raise BuildError(f"unterminated {quote} quote in {text!r}")
    if current:
        parts.append("".join(current))
    return parts
