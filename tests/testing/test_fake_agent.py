"""The host's agent client (exec, signals, file transfers) against FakeAgent, with no guest."""

from __future__ import annotations

import contextlib
import errno
import signal
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from asupermachine import AgentProtocolError, ExecError, ExecResult, ExitStatus, GuestFileError, VectorState
from asupermachine._core.agent import files
from asupermachine._core.agent.exec import execute
from asupermachine._core.agent.process import Process, agent_error, greet, next_frame
from asupermachine._core.agent.protocol import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    STDIN_CHUNK,
    CommandRequest,
    Kind,
    encode_frame,
    encode_hostname,
)
from asupermachine._groups import unwrap_single_error
from asupermachine.testing import CommandResult, FakeAgent, memory_stream_pair

pytestmark = pytest.mark.anyio

# Long enough for any of these exchanges; a hang fails instead of stalling the suite.
DEADLINE = 5


@contextlib.asynccontextmanager
async def started(
    agent: FakeAgent,
    argv: list[str],
    env: dict[str, str] | None = None,
    workdir: str = "",
    user: str = "",
    tty: tuple[int, int] | None = None,
) -> AsyncIterator[Process]:
    """A process started on ``agent`` as ``Machine.spawn`` starts one, its frames pumped, for the block."""
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            process = await Process._start(
                agent.connect(tasks), CommandRequest(argv, env or {}, workdir, user, tty), tasks=tasks
            )
            async with process:
                yield process


async def run(
    agent: FakeAgent,
    argv: list[str],
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    workdir: str = "",
    user: str = "",
) -> ExecResult:
    """What ``Machine.exec`` does over its agent connection."""
    async with anyio.create_task_group() as tasks, agent.connect(tasks) as connection:
        return await execute(connection, CommandRequest(argv, env or {}, workdir, user), stdin)


async def finish(process: Process, stdin: bytes | None) -> ExecResult:
    """Feed a spawned process ``stdin``, end its input, read its output to the end and wait for it."""
    if stdin:
        await process.stdin.send(stdin)
    await process.stdin.aclose()
    stdout = b"".join([chunk async for chunk in process.stdout])
    stderr = b"".join([chunk async for chunk in process.stderr])
    return ExecResult(await process.wait(), stdout, stderr)


async def test_an_exec_round_trip_carries_the_request_stdin_output_and_exit_code() -> None:
    seen: list[tuple[list[str], dict[str, str], str, str, bytes]] = []

    def grep(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        seen.append((argv, env, workdir, user, stdin))
        return 3, b"out:" + stdin, b"err"

    agent = FakeAgent(commands={"grep": grep})
    result = await run(agent, ["grep", "-v", "x"], b"in" * STDIN_CHUNK, {"A": "1"}, "/srv", "nobody")
    assert result == ExecResult(ExitStatus(3, None), b"out:" + b"in" * STDIN_CHUNK, b"err")
    [(argv, env, workdir, user, stdin)] = seen
    assert (argv, workdir, user, stdin) == (["grep", "-v", "x"], "/srv", "nobody", b"in" * STDIN_CHUNK)
    assert env == {"A": "1"}  # the image's env, the default PATH and HOME are the agent's to add


async def test_commands_are_found_by_path_and_may_be_async() -> None:
    async def true(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        await anyio.lowlevel.checkpoint()
        return 0, b"", b""

    agent = FakeAgent(commands={"true": true}, first_pid=7)
    assert (await run(agent, ["/bin/true"])).status == ExitStatus(0, None)


async def test_a_command_killed_by_a_signal_reports_it() -> None:
    def killed(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        return ExitStatus(None, signal.SIGSEGV), b"", b""

    assert (await run(FakeAgent(commands={"crash": killed}), ["crash"])).signal == signal.SIGSEGV


async def test_an_unknown_command_is_refused_with_enoent() -> None:
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            async with FakeAgent().connect(tasks) as connection:
                with pytest.raises(ExecError) as refused:
                    await Process._start(connection, CommandRequest(["nosuch"]), tasks=tasks)
    assert refused.value.errno == errno.ENOENT and "nosuch" in str(refused.value)


async def test_a_signal_ends_a_running_command_without_running_its_handler() -> None:
    def unreachable(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        raise AssertionError("a killed command's handler ran")

    agent = FakeAgent(commands={"sleep": unreachable})
    async with started(agent, ["sleep"]) as process:
        await process.send_signal(signal.SIGWINCH)  # ignored by default: the command runs on
        await process.send_signal(signal.SIGTERM)
        assert await process.wait() == ExitStatus(None, signal.SIGTERM)
    assert agent.signals == [signal.SIGWINCH, signal.SIGTERM]


async def test_a_file_written_reads_back_with_its_mode() -> None:
    agent = FakeAgent()
    content = bytes(range(256)) * 1000  # several STDIN frames
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            async with agent.connect(tasks) as connection:
                await files.write_file(connection, "/etc/motd", content, 0o600)
            async with agent.connect(tasks) as connection:
                assert await files.read_file(connection, "/etc/motd") == content
    assert agent.files == {"/etc/motd": content} and agent.modes == {"/etc/motd": 0o600}


async def test_a_missing_file_is_a_guest_file_error_with_enoent() -> None:
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            async with FakeAgent(files={"/a": b""}).connect(tasks) as connection:
                with pytest.raises(GuestFileError) as missing:
                    await files.read_file(connection, "/b")
    assert missing.value.errno == errno.ENOENT and isinstance(missing.value, OSError)


async def test_a_hostname_before_the_request_is_taken_without_an_answer() -> None:
    agent = FakeAgent(vector_state=VectorState.LEAKS)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            async with agent.connect(tasks) as connection:
                await connection.send(encode_hostname("clone-1"))
                # write_file reads HELLO, then STARTED: an answer to HOSTNAME would break it.
                await files.write_file(connection, "/x", b"x", 0o644)
            async with agent.connect(tasks) as connection:
                hello, _ = await greet(connection)
    assert (hello.vector_state, agent.hostname, agent.files) == (VectorState.LEAKS, "clone-1", {"/x": b"x"})


async def test_an_agent_of_another_protocol_version_is_refused() -> None:
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            async with FakeAgent(version=PROTOCOL_VERSION - 1).connect(tasks) as connection:
                with pytest.raises(AgentProtocolError, match="protocol"):
                    await greet(connection)


async def broken_agent(guest: anyio.abc.ByteStream, answer: bytes) -> None:
    """A fake that greets properly, answers the one request with ``answer``, then waits for the host to go."""
    async with guest:
        await guest.send(encode_frame(Kind.HELLO, struct.pack("<II", PROTOCOL_VERSION, VectorState.ISOLATED)))
        await guest.receive()
        await guest.send(answer)
        async for _ in guest:
            pass


Request = Callable[[anyio.abc.ByteStream], Awaitable[object]]


async def exec_true(connection: anyio.abc.ByteStream) -> object:
    with unwrap_single_error():  # a refusal, as Machine.spawn raises it
        async with anyio.create_task_group() as tasks:
            process = await Process._start(connection, CommandRequest(["true"]), tasks=tasks)
    return await process.wait()  # its output routing has ended: at EXITED, or at a failure wait() raises


async def read_a_file(connection: anyio.abc.ByteStream) -> object:
    return await files.read_file(connection, "/a")


async def error_answering(answer: bytes, request: Request) -> Exception | None:
    """What ``request`` raises when the agent answers it with ``answer`` (None if nothing)."""
    host, guest = memory_stream_pair()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(broken_agent, guest, answer)
            async with host:
                try:
                    await request(host)
                except Exception as error:
                    return error
    return None


@pytest.mark.parametrize("request_", [exec_true, read_a_file])
@pytest.mark.parametrize(
    "answer",
    [
        FRAME_HEADER.pack(0, 99, 0),  # no such kind
        FRAME_HEADER.pack(1 << 30, Kind.STARTED, 0),  # longer than any frame may be
        encode_frame(Kind.STDOUT, b"out before STARTED"),
        encode_frame(Kind.STARTED, bytes(4)) + encode_frame(Kind.HELLO, bytes(8)),  # HELLO mid-request
    ],
    ids=["unknown-kind", "oversize", "output-before-started", "hello-mid-request"],
)
async def test_a_malformed_answer_is_an_agent_protocol_error(answer: bytes, request_: Request) -> None:
    assert isinstance(await error_answering(answer, request_), AgentProtocolError)


@pytest.mark.parametrize(
    "answer",
    [encode_frame(Kind.STARTED, b"\1"), encode_frame(Kind.STARTED, bytes(4)) + encode_frame(Kind.EXITED, b"")],
    ids=["short-started", "empty-exited"],
)
async def test_a_short_started_or_exited_payload_is_an_agent_protocol_error(answer: bytes) -> None:
    error = await error_answering(answer, exec_true)
    assert isinstance(error, AgentProtocolError), repr(error)


async def test_a_request_the_agent_cannot_parse_is_refused_and_the_connection_takes_another() -> None:
    agent = FakeAgent(files={"/a": b"content"})
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            async with agent.connect(tasks) as connection:
                _, decoder = await greet(connection)
                await connection.send(encode_frame(Kind.EXEC, struct.pack("<II", 0, 0)))  # no program
                await connection.send(encode_frame(Kind.READ_FILE, b"/a"))  # path without its NUL
                refusals = [await next_frame(connection, decoder) for _ in range(2)]
                await connection.send(encode_frame(Kind.READ_FILE, b"/a\0"))
                answers = [await next_frame(connection, decoder) for _ in range(3)]
    assert [agent_error(frame) for frame in refusals] == [
        (errno.EINVAL, "bad EXEC counts"),
        (errno.EINVAL, "path not terminated"),
    ]
    assert [frame.kind for frame in answers] == [Kind.STARTED, Kind.STDOUT, Kind.EXITED]
    assert answers[1].payload == b"content"


async def test_a_tty_process_records_its_window_and_each_resize_and_merges_stderr_into_stdout() -> None:
    seen_env: list[dict[str, str]] = []

    def shell(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        seen_env.append(env)
        return 5, b"out:" + stdin, b"err"

    agent = FakeAgent(commands={"sh": shell})
    async with started(agent, ["sh"], tty=(24, 80)) as process:
        assert process.tty
        await process.resize(40, 120)
        await process.stdin.send(b"typed")
        result = await finish(process, None)
    assert result == ExecResult(ExitStatus(5, None), b"out:typederr", b"")
    assert agent.windows == [(24, 80), (40, 120)]
    assert seen_env[0]["TERM"] == "xterm"


async def test_a_tty_process_keeps_a_term_the_caller_gave() -> None:
    seen_env: list[dict[str, str]] = []

    def shell(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        seen_env.append(env)
        return 0, b"", b""

    agent = FakeAgent(commands={"sh": shell})
    async with started(agent, ["sh"], env={"TERM": "vt100"}, tty=(30, 100)) as process:
        await finish(process, None)
    assert seen_env[0]["TERM"] == "vt100" and agent.windows == [(30, 100)]


async def test_resizing_a_process_without_a_terminal_is_a_value_error() -> None:
    def cat(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        return 0, stdin, b"err"

    agent = FakeAgent(commands={"cat": cat})
    async with started(agent, ["cat"]) as process:
        assert not process.tty
        with pytest.raises(ValueError, match="tty=True"):
            await process.resize(24, 80)
        result = await finish(process, b"in")
    assert (result.stdout, result.stderr) == (b"in", b"err")  # stderr stays apart without a terminal
    assert agent.windows == []


async def test_a_tty_process_stderr_ends_at_once_while_it_runs() -> None:
    agent = FakeAgent(commands={"sh": lambda *_: (0, b"", b"")})
    async with started(agent, ["sh"], tty=(24, 80)) as process:
        try:
            with anyio.fail_after(1), pytest.raises(anyio.EndOfStream):
                await process.stderr.receive()  # stdin still open: the command still runs
        finally:
            await finish(process, None)


async def test_output_honours_max_bytes_and_returncode_reads_as_anyio_s() -> None:
    def killed(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
        return ExitStatus(None, signal.SIGTERM), b"abcdef", b""

    agent = FakeAgent(commands={"killed": killed})
    async with started(agent, ["killed"]) as process:
        await process.stdin.aclose()
        assert [await process.stdout.receive(4), await process.stdout.receive(4)] == [b"abcd", b"ef"]
        assert await process.wait() == ExitStatus(None, signal.SIGTERM)
        assert process.returncode == -signal.SIGTERM
