"""A Dockerfile read into stages, and the config-only instructions applied (pure logic)."""

import pytest

from asupermachine import BuildError
from asupermachine.build.dockerfile import parse_dockerfile
from asupermachine.build.image_state import ImageState
from asupermachine.build.metadata import Scope, apply_metadata
from asupermachine.image.manifest import LINUX_AMD64

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM $BASE AS Build
ENV A=1 B="two words"
RUN echo $A && \\
    # a comment inside the continuation
    echo hi
FROM build
COPY --from=build --chown=1:2 /x /y
CMD ["sh", "-c", "x"]
"""


def test_stages_split_at_from_with_flags_and_exec_forms_read() -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    assert [str(arg) for arg in dockerfile.global_args] == ["ARG BASE=busybox"]
    first, second = dockerfile.stages
    assert (first.name, first.base, second.name, second.base) == ("build", "$BASE", "1", "build")
    run = first.instructions[1]
    assert (run.keyword, run.line, run.exec_form) == ("RUN", 5, None)
    assert run.arguments.split() == ["echo", "$A", "&&", "echo", "hi"]
    copy, cmd = second.instructions
    assert copy.flags == {"from": "build", "chown": "1:2"} and copy.arguments == "/x /y"
    assert cmd.exec_form == ("sh", "-c", "x")
    assert dockerfile.stage("BUILD") is first


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RUN true\n", "line 1: RUN: comes before the first FROM"),
        ("FROM a\nFROBNICATE x\n", "line 2: unknown instruction FROBNICATE"),
        ("FROM a\nCOPY --frm=x a b\n", "line 2: COPY does not take --frm"),
        ("FROM a\nRUN <<EOF\necho\nEOF\n", "heredocs are not supported"),
        ("FROM a AS x\nFROM b AS X\n", "stage name 'x' is used twice"),
        ("# escape=`\nFROM a\n", "escape directive"),
        ("", "no FROM"),
    ],
)
def test_what_cannot_be_built_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        parse_dockerfile(text)


def _apply(scope: Scope, text: str, build_args: dict[str, str] | None = None) -> Scope:
    (stage,) = parse_dockerfile("FROM scratch\n" + text).stages
    for instruction in stage.instructions:
        scope = apply_metadata(scope, instruction, build_args or {}, {"G": "global"})
    return scope


def test_config_instructions_change_the_config_as_buildah_does() -> None:
    base = ImageState.scratch(LINUX_AMD64).with_config(Env=["PATH=/bin"], Cmd=["base"])
    scope = _apply(Scope(base), """\
ARG V=default
ARG G
ARG FROM_BUILD
ENV GREETING="hello $V" PATH=/usr/local/bin:$PATH
LABEL a=b "c d"=e
WORKDIR /app
WORKDIR sub
USER $V
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data"]
ENTRYPOINT ["/entry"]
STOPSIGNAL SIGTERM
""", {"FROM_BUILD": "given"})
    config = scope.image.config
    assert scope.args == {"V": "default", "G": "global", "FROM_BUILD": "given"}
    assert config["Env"] == ["GREETING=hello default", "PATH=/usr/local/bin:/bin"]
    assert config["Labels"] == {"a": "b", "c d": "e"}
    assert config["WorkingDir"] == "/app/sub" and config["User"] == "default"
    assert set(config["ExposedPorts"]) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}
    assert config["Volumes"] == {"/data": {}} and config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"] == ["/entry"] and "Cmd" not in config  # the base's CMD goes with a new ENTRYPOINT
    shelled = _apply(scope, 'SHELL ["/bin/bash", "-c"]\nCMD echo hi\n')
    assert shelled.image.config["Cmd"] == ["/bin/bash", "-c", "echo hi"]
