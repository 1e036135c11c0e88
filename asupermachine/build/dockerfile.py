"""A Dockerfile read into stages of instructions (sans-IO).

``dockerfile-parse`` (as E2B's builder uses) joins continued lines and drops
comments; this module checks each instruction and its flags, splits the file
into stages at ``FROM`` and reads the exec (JSON) forms. Nothing is expanded
here: that needs the variables in scope as the build reaches each instruction.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser

from .._errors import BuildError

FLAGS: Mapping[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "RUN": frozenset({"network"}),
    "COPY": frozenset({"from", "chown", "chmod", "link"}),
    "ADD": frozenset({"chown", "chmod", "link"}),
    "ARG": frozenset(), "ENV": frozenset(), "WORKDIR": frozenset(), "USER": frozenset(),
    "ENTRYPOINT": frozenset(), "CMD": frozenset(), "EXPOSE": frozenset(), "LABEL": frozenset(),
    "SHELL": frozenset(), "VOLUME": frozenset(), "STOPSIGNAL": frozenset(), "MAINTAINER": frozenset(),
}
"""Every instruction this builder runs, with the flags it takes."""
EXEC_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
"""Instructions whose arguments may be a JSON array of strings."""
IGNORED = {
    "ONBUILD": "ONBUILD is not part of an OCI image config: ignored (as buildah does for OCI images)",
    "HEALTHCHECK": "HEALTHCHECK is not part of an OCI image config: ignored (as buildah does for OCI images)",
}
"""Instructions read but left out of an OCI image, with the warning the build prints."""


@dataclass(frozen=True)
class Instruction:
    """One instruction as written: its keyword, flags and arguments, not yet expanded."""

    keyword: str
    arguments: str
    """What follows the keyword and flags, continuation lines joined."""
    line: int
    """Its first line in the Dockerfile, from 1."""
    flags: Mapping[str, str] = field(default_factory=dict)
    exec_form: tuple[str, ...] | None = None
    """The JSON array form's strings (``RUN ["a", "b"]``), else None."""

    def __str__(self) -> str:
        flags = "".join(f"--{name}={value} " for name, value in self.flags.items())
        return f"{self.keyword} {flags}{self.arguments}".rstrip()

    def fail(self, why: str) -> BuildError:
        """A :class:`BuildError` naming this instruction and its line."""
        return BuildError(f"Dockerfile line {self.line}: {self.keyword}: {why}", step=str(self))


@dataclass(frozen=True)
class Stage:
    """A ``FROM`` and the instructions up to the next one."""

    index: int
    source: Instruction
    """The stage's FROM."""
    instructions: tuple[Instruction, ...]

    @property
    def base(self) -> str:
        """The image or earlier stage the stage starts from, unexpanded."""
        return self.source.arguments.split()[0]

    @property
    def name(self) -> str:
        """``FROM image AS name``'s name (lower case), else the stage's index."""
        words = self.source.arguments.split()
        return words[2].lower() if len(words) == 3 else str(self.index)


@dataclass(frozen=True)
class Dockerfile:
    global_args: tuple[Instruction, ...]
    """The ARGs before the first FROM: in scope for the FROMs."""
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage | None:
        """The stage ``name`` names (``AS name`` or its index), if any."""
        return next((stage for stage in self.stages if stage.name == name.lower()), None)


def parse_dockerfile(text: str) -> Dockerfile:
    """The stages of ``text``; :class:`BuildError` names the line of anything that cannot be built."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    instructions = [_instruction(item) for item in parser.structure if item["instruction"] != "COMMENT"]
    _check_directives(text)
    global_args: list[Instruction] = []
    stages: list[tuple[Instruction, list[Instruction]]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            _check_from(instruction, [source for source, _ in stages])
            stages.append((instruction, []))
        elif stages:
            stages[-1][1].append(instruction)
        elif instruction.keyword == "ARG":
            global_args.append(instruction)
        else:
            raise instruction.fail("comes before the first FROM (only ARG may)")
    if not stages:
        raise BuildError("the Dockerfile has no FROM")
    return Dockerfile(
        tuple(global_args),
        tuple(Stage(index, source, tuple(body)) for index, (source, body) in enumerate(stages)),
    )


def _check_directives(text: str) -> None:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            return  # directives come first
        key, _, value = stripped[1:].strip().partition("=")
        if key.strip().lower() == "escape" and value.strip() not in ("", "\\"):
            raise BuildError(f"the escape directive {value.strip()!r} is not supported (only '\\\\')")


def _instruction(item: Mapping[str, object]) -> Instruction:
    keyword, value, line = str(item["instruction"]).upper(), str(item["value"]), int(str(item["startline"])) + 1
    if keyword in IGNORED:
        return Instruction(keyword, value, line)
    if keyword not in FLAGS:
        raise BuildError(f"Dockerfile line {line}: unknown instruction {keyword}")
    flags, arguments = _flags(keyword, value, line)
    if arguments.lstrip().startswith("<<"):
        raise BuildError(f"Dockerfile line {line}: {keyword}: heredocs are not supported")
    exec_form = _exec_form(arguments) if keyword in EXEC_FORMS else None
    instruction = Instruction(keyword, arguments, line, flags, exec_form)
    if not arguments and keyword not in ("CMD", "ENTRYPOINT"):
        raise instruction.fail("needs arguments")
    return instruction


def _flags(keyword: str, value: str, line: int) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = value.strip()
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        if word == "--":
            break
        name, has_value, flag_value = word[2:].partition("=")
        if name not in FLAGS[keyword]:
            raise BuildError(f"Dockerfile line {line}: {keyword} does not take --{name}")
        flags[name.lower()] = flag_value if has_value else "true"
        rest = after.strip()
    return flags, rest


def _exec_form(arguments: str) -> tuple[str, ...] | None:
    if not arguments.startswith("["):
        return None
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return None  # docker runs it in the shell form, brackets and all
    if not isinstance(parsed, list) or not all(isinstance(word, str) for word in parsed):
        return None
    return tuple(parsed)


def _check_from(instruction: Instruction, earlier: list[Instruction]) -> None:
    words = instruction.arguments.split()
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if any(len(w := e.arguments.split()) == 3 and w[2].lower() == name for e in earlier):
            raise instruction.fail(f"the stage name {name!r} is used twice")
        if name.isdigit():
            raise instruction.fail(f"a stage name cannot be a number ({name!r})")
    elif len(words) != 1:
        raise instruction.fail("takes an image and optionally AS name")
