"""The instructions that change only an image's config, and the scope of variables a stage builds in (sans-IO).

Each takes the stage's :class:`Scope` and returns the next one. Expansion uses
the variables in scope: the stage's ARGs with their values, under its ENV,
which wins, as docker has it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .dockerfile import Instruction
from .image_state import ImageState
from .words import expand, expand_words, split_assignments

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class Scope:
    """A stage as far as it got: its image, ARGs in scope, shell, and whether it set CMD itself."""

    image: ImageState
    args: Mapping[str, str] = field(default_factory=dict)
    """ARGs declared in the stage that have a value: they expand, and a RUN sees them in its environment."""
    shell: tuple[str, ...] = DEFAULT_SHELL
    cmd_set: bool = False

    @property
    def variables(self) -> dict[str, str]:
        return {**self.args, **self.image.env}

    def expand(self, text: str) -> str:
        return expand(text, self.variables)

    @property
    def workdir(self) -> str:
        return str(self.image.config.get("WorkingDir") or "/")

    def absolute(self, path: str) -> str:
        """``path`` against the stage's working directory, as COPY and WORKDIR read a relative one."""
        joined = posixpath.join(self.workdir, path)
        return posixpath.normpath(joined) + ("/" if path.endswith("/") and joined != "/" else "")

    def command(self, instruction: Instruction) -> list[str]:
        """RUN's, CMD's or ENTRYPOINT's argv: the exec form as written, else the shell form in the shell."""
        if instruction.exec_form is not None:
            return list(instruction.exec_form)
        return [*self.shell, instruction.arguments] if instruction.arguments else []


def assignments(instruction: Instruction, variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """ENV's or LABEL's ``name=value`` pairs (or the old ``name value`` form), expanded."""
    words = split_assignments(instruction.arguments)
    if words and "=" not in words[0]:
        name, _, value = instruction.arguments.strip().partition(" ")
        if not value.strip():
            raise instruction.fail(f"{name} needs a value")
        return [(expand(name, variables), expand(value.strip(), variables))]
    pairs = []
    for word in words:
        name, has_value, value = word.partition("=")
        if not has_value or not name:
            raise instruction.fail(f"{word!r} is not name=value")
        pairs.append((expand(name, variables), expand(value, variables)))
    return pairs


def apply_metadata(scope: Scope, instruction: Instruction, build_args: Mapping[str, str],
                   global_args: Mapping[str, str]) -> Scope:
    """The scope after a config-only instruction (everything but FROM, RUN, COPY, ADD and WORKDIR's directory)."""
    keyword, image = instruction.keyword, scope.image
    if keyword == "ENV":
        env = scope.image.env
        for name, value in assignments(instruction, scope.variables):
            env.pop(name, None)  # a variable set again moves to the end, as buildah writes it
            env[name] = value
        return replace(scope, image=image.with_config(Env=[f"{name}={value}" for name, value in env.items()]))
    if keyword == "LABEL":
        labels = dict(image.config.get("Labels") or {})
        labels.update(assignments(instruction, scope.variables))
        return replace(scope, image=image.with_config(Labels=labels))
    if keyword == "ARG":
        return replace(scope, args={**scope.args, **declared_args(instruction, scope.variables, build_args,
                                                                   global_args)})
    if keyword == "USER":
        return replace(scope, image=image.with_config(User=scope.expand(instruction.arguments)))
    if keyword == "WORKDIR":
        return replace(scope, image=image.with_config(WorkingDir=scope.absolute(scope.expand(instruction.arguments))
                                                       .rstrip("/") or "/"))
    if keyword == "EXPOSE":
        ports = dict(image.config.get("ExposedPorts") or {})
        ports.update({port: {} for word in expand_words(instruction.arguments, scope.variables)
                      for port in exposed_ports(word, instruction)})
        return replace(scope, image=image.with_config(ExposedPorts=ports))
    if keyword == "VOLUME":
        volumes = dict(image.config.get("Volumes") or {})
        paths = instruction.exec_form or tuple(expand_words(instruction.arguments, scope.variables))
        volumes.update({scope.expand(path) if instruction.exec_form else path: {} for path in paths})
        return replace(scope, image=image.with_config(Volumes=volumes))
    if keyword == "CMD":
        return replace(scope, image=image.with_config(Cmd=scope.command(instruction) or None), cmd_set=True)
    if keyword == "ENTRYPOINT":
        cmd = image.config.get("Cmd") if scope.cmd_set else None
        return replace(scope, image=image.with_config(Entrypoint=scope.command(instruction) or None, Cmd=cmd))
    if keyword == "STOPSIGNAL":
        return replace(scope, image=image.with_config(StopSignal=scope.expand(instruction.arguments)))
    if keyword == "SHELL":
        if not instruction.exec_form:
            raise instruction.fail('takes the JSON form: SHELL ["executable", "parameters"]')
        return replace(scope, shell=instruction.exec_form)
    if keyword == "MAINTAINER":
        return replace(scope, image=replace(image, document={**image.document, "author": instruction.arguments}))
    raise instruction.fail("is not a config instruction")  # the builder sends no other here


def declared_args(instruction: Instruction, variables: Mapping[str, str], build_args: Mapping[str, str],
                  global_args: Mapping[str, str]) -> dict[str, str]:
    """The values of the ARGs ``instruction`` declares: a build argument, else the default, else a global ARG's."""
    values = {}
    for word in split_assignments(instruction.arguments):
        name, has_default, default = word.partition("=")
        if name in build_args:
            values[name] = build_args[name]
        elif has_default:
            values[name] = expand(default, variables)
        elif name in global_args:
            values[name] = global_args[name]
    return values


def exposed_ports(word: str, instruction: Instruction) -> list[str]:
    """``80``, ``80/udp`` or ``8000-8002/tcp`` as the config's ``port/protocol`` keys."""
    ports, _, protocol = word.partition("/")
    protocol = protocol.lower() or "tcp"
    first, _, last = ports.partition("-")
    if not first.isdigit() or (last and not last.isdigit()) or protocol not in ("tcp", "udp", "sctp"):
        raise instruction.fail(f"{word!r} is not a port")
    return [f"{port}/{protocol}" for port in range(int(first), int(last or first) + 1)]
