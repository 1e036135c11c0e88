"""One passt process per VM: the host side of its network, Ethernet frames over a stream socket.

passt (https://passt.top) answers the guest's ARP and DHCP itself and carries
its TCP, UDP and ICMP over ordinary sockets of the host, so a VM needs no
privilege, bridge or tap device. It is handed one end of a socket pair
(``--fd``) and speaks :mod:`.stream_framing` on it. Which passt runs is
:func:`.passt_program.find_passt`'s choice unless :attr:`Passt.executable` names one.

passt must not outlive us. It runs under ``setpriv --pdeathsig KILL``, and the
kernel sends that signal when the *thread* that forked it ends, so it is spawned
with :class:`subprocess.Popen` on the event loop's thread (``anyio.open_process``
forks on a worker thread under trio, which ends when idle). The kernel also
clears the parent-death signal when a process changes its uid: passt started as
root drops to ``nobody`` by itself, so under root setpriv drops to ``nobody``
first. passt also exits when its socket reaches end-of-file, which our death
closes too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import anyio
import anyio.lowlevel

from ..._errors import NetBackendError
from ..._groups import unwrap_single_error
from .passt_program import PasstProgram, find_passt, passt_at
from .stream_framing import ETH_HLEN, MAX_SENT_FRAME_LENGTH, BytesLike, EthernetStreamDecoder, frame_buffers

SETPRIV = "setpriv"
START_TIMEOUT = 10.0
"""Seconds passt may take to be ready (options parsed, ports bound, sandbox entered)."""
EXIT_GRACE = 2.0
"""Seconds to wait for passt's exit status once it has closed the link, for the error message."""
STDERR_TAIL = 8192
"""Bytes of passt's stderr kept for error messages."""
VLAN_HLEN = 4  # an 802.1Q tag: Linux may send that much more than the MTU and an Ethernet header
MAX_MTU = (MAX_SENT_FRAME_LENGTH - ETH_HLEN - VLAN_HLEN) // 4 * 4
"""The largest MTU a guest on passt gets, in whole 4-byte words as passt's own default is: its frames
must fit :data:`.stream_framing.MAX_SENT_FRAME_LENGTH`. TCP over it moves 32 KiB per frame."""
MIN_MTU = 68  # RFC 791: the least an IPv4 link carries (passt refuses less)
# With no syslog (no /dev/log, as in containers) passt says so on stderr before every message.
SYSLOG_NOISE = re.compile(r"^Failed to send \d+ bytes to syslog$")
NOBODY = "nobody"  # the user passt drops to when started as root


@dataclass(frozen=True)
class Passt:
    """How passt serves one VM: the guest's address, what it may reach, and which host ports lead to it."""

    address: str = "10.0.2.15/24"
    """The guest's IPv4 address and prefix length, offered by passt's DHCP."""
    gateway: str = "10.0.2.2"
    """The guest's default gateway; passt answers ARP for it."""
    mtu: int = MAX_MTU
    """Bytes of the guest's MTU, offered by DHCP (option 26), :data:`MIN_MTU` to :data:`MAX_MTU`.
    passt's own default (65520) is not used: frames that long reach old passt torn (see
    :data:`.stream_framing.MAX_SENT_FRAME_LENGTH`)."""
    dns_forward: str | None = "10.0.2.3"
    """DNS queries the guest sends to this address go to the host's first resolver; None: no forwarding.
    This passt's DHCP still offers the host's resolvers, so the guest is to be told this one directly."""
    publish: Mapping[str | int, int] = field(default_factory=dict, hash=False)
    """Host ``[ADDR:]PORT`` (``[ADDR]:PORT`` for IPv6) -> guest TCP port, like docker's ``-p``; a bare port
    binds 127.0.0.1. Under root passt runs as ``nobody`` and cannot bind a host port below 1024."""
    allow_host_loopback: bool = False
    """True: connections to the gateway reach the host's loopback (127.0.0.1); False: they reach nothing."""
    executable: str | None = None
    """passt's program: a name to look up on ``PATH``, or a path; None: the one
    :func:`.passt_program.find_passt` picks (a passt that keeps idle connections, built once if need be)."""

    def __post_init__(self) -> None:
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ValueError(f"an MTU of {self.mtu} bytes is outside {MIN_MTU}..{MAX_MTU}, what passt is given")
        ipaddress.IPv4Interface(self.address)
        ipaddress.IPv4Address(self.gateway)
        if self.dns_forward is not None:
            ipaddress.IPv4Address(self.dns_forward)
        for host, guest_port in self.publish.items():
            _port_spec(host, guest_port)  # refuse a bad mapping now, not when passt starts
        object.__setattr__(self, "publish", MappingProxyType(dict(self.publish)))

    @property
    def start_may_fail(self) -> bool:
        """Whether starting it can fail for a reason of this VM's: a host port to publish may be taken, or
        its program has not yet been seen to start in this process."""
        return bool(self.publish) or self.executable not in _started_programs

    def program(self) -> PasstProgram:
        """The passt this runs, and its version. The first call for the default program in a process may
        build it (blocking, a minute, once per machine).

        :raises NetBackendError: if there is no passt to run at all.
        """
        return find_passt() if self.executable is None else passt_at(self.executable)

    def argv(self, fd: int, pid_file: str | None = None) -> list[str]:
        """passt's command line: frames on the inherited socket ``fd``, in the foreground, errors on stderr."""
        interface = ipaddress.IPv4Interface(self.address)
        program = self.program()
        argv = [program.path, "--foreground", "--quiet"]
        if not program.logs_to_stderr:
            argv.append("--stderr")  # newer passt logs there by itself, and warns that --stderr goes
        argv += ["--fd", str(fd)]
        argv += ["--address", str(interface.ip), "--netmask", str(interface.network.prefixlen)]
        argv += ["--gateway", self.gateway, "--mtu", str(self.mtu)]
        if self.dns_forward is not None:
            argv += ["--dns-forward", self.dns_forward]
        if not self.allow_host_loopback:
            argv.append("--no-map-gw")
        for host, guest_port in self.publish.items():
            argv += ["--tcp-ports", _port_spec(host, guest_port)]
        if pid_file is not None:
            argv += ["--pid", pid_file]
        return argv


_started_programs: set[str | None] = set()
"""passt programs (:attr:`Passt.executable`) that have started in this process: another start of one fails
only for an outside reason."""


def _port_spec(host: str | int, guest_port: int) -> str:
    """passt's ``-t`` spec, ``ADDR/PORT:GUEST_PORT``, for a docker-like host ``[ADDR:]PORT``."""
    text = str(host)
    address, _, port = text.rpartition(":")
    address = address.removeprefix("[").removesuffix("]") or "127.0.0.1"
    try:
        ipaddress.ip_address(address)
        ports = int(port), int(guest_port)
    except ValueError:
        raise ValueError(f"cannot publish {host!r}: give a host [ADDR:]PORT such as 8080 or 0.0.0.0:8080") from None
    if not all(0 < number < 65536 for number in ports):
        raise ValueError(f"cannot publish {host!r} -> {guest_port!r}: ports are 1 to 65535")
    return f"{address}/{ports[0]}:{ports[1]}"


def _nobody() -> tuple[int, int] | None:
    """The uid and gid to run passt as when we are root (see the module's docstring); None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(NOBODY)
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


class PasstLink:
    """The host's end of a running passt: frames to the guest's network and from it.

    One task receives at a time; any number may send. Raises
    :class:`NetBackendError` once passt has gone, with what it printed.
    """

    def __init__(
        self, options: Passt, argv: list[str], process: subprocess.Popen[bytes], pidfd: int, ready: int,
        host: socket.socket,
    ) -> None:
        self.options = options
        self._argv = argv
        self._process = process
        self._pidfd = pidfd
        self._ready = ready  # the read end of the pipe passt writes its pid file to, until it is up
        self._socket = host
        assert process.stderr is not None
        self._stderr = process.stderr
        os.set_blocking(self._stderr.fileno(), False)
        self._stderr_tail = bytearray()
        self._stderr_done = False
        self._exited = anyio.Event()
        self._decoder = EthernetStreamDecoder()
        self._receiving = anyio.ResourceGuard("receiving frames from passt")
        self._sending = anyio.Lock()
        self._send_broken = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """passt's exit status once it has been reaped (negative: the signal that ended it); None before."""
        return self._process.returncode

    @property
    def socket(self) -> socket.socket:
        """The host end of the stream, non-blocking; for polling only (use the methods for frames)."""
        return self._socket

    def stderr_tail(self) -> str:
        """The end of what passt printed, without its complaints that there is no syslog."""
        self._drain_stderr()
        lines = self._stderr_tail.decode(errors="replace").splitlines()
        return "\n".join(line for line in lines if not SYSLOG_NOISE.match(line)).strip()

    async def receive_frames(self) -> list[memoryview]:
        """Wait for frames from passt; return every whole frame received, at least one.

        The frames are views of the link's receive buffer (no copy is made),
        valid until the next call: hand them on, or copy them, before calling
        again. Raises :class:`NetBackendError` when passt has closed the link or
        sent a bad length, ``anyio.BusyResourceError`` if another task is
        receiving, and ``anyio.ClosedResourceError`` once the block is left.
        """
        with self._receiving:
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._check_open()
            while True:
                try:
                    count = self._socket.recv_into(self._decoder.receive_buffer())
                except BlockingIOError:
                    await anyio.wait_readable(self._socket)
                    continue
                except ConnectionResetError:
                    count = 0
                if count == 0:
                    pending = self._decoder.pending
                    truncated = f" in the middle of a frame ({pending} bytes of it received)" if pending else ""
                    raise await self._gone(f"passt closed the link{truncated}")
                frames = self._decoder.received(count)
                if frames:
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                    return frames

    async def send_frames(self, frames: Iterable[BytesLike]) -> None:
        """Send ``frames`` to passt in order, one ``sendmsg`` each, so that each reaches it whole; no copy is made.

        Raises :class:`NetBackendError` for a frame passt would not take (shorter
        than an Ethernet header or longer than :data:`.stream_framing.MAX_SENT_FRAME_LENGTH`;
        nothing is sent) and once passt has gone. A send cancelled part-way
        through a frame leaves it torn on the stream: later sends raise
        :class:`NetBackendError`.
        """
        buffers = frame_buffers(frames)
        async with self._sending:
            self._check_open()
            if self._send_broken:
                raise NetBackendError("a cancelled send left a partial frame to passt: restart the network backend")
            for first in range(0, len(buffers), 2):
                await self._send_frame(buffers[first : first + 2])

    async def _send_frame(self, buffers: list[memoryview]) -> None:
        """Send one frame's length and bytes; the kernel queues them whole or not at all, but a short
        send is finished all the same."""
        started = False
        try:
            while buffers:
                try:
                    count = self._socket.sendmsg(buffers, (), socket.MSG_NOSIGNAL)
                except BlockingIOError:
                    await anyio.wait_writable(self._socket)
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    raise await self._gone("passt closed the link") from None
                started = True
                buffers = _after(buffers, count)
        except BaseException:
            self._send_broken = started and bool(buffers)
            raise

    def _check_open(self) -> None:
        if self._socket.fileno() < 0:
            raise anyio.ClosedResourceError("the link to passt is closed: its block was left")

    async def _gone(self, what: str) -> NetBackendError:
        with anyio.move_on_after(EXIT_GRACE):
            await self._exited.wait()
        return NetBackendError(self._describe(what))

    def _describe(self, what: str, with_command: bool = False) -> str:
        code = self._process.returncode
        if code is None:
            status = "it is still running"
        elif code < 0:
            status = f"it was killed by {signal.Signals(-code).name}"
        else:
            status = f"it exited with status {code}"
        tail = self.stderr_tail()
        message = f"{what}: {status}" + (f", printing:\n{tail}" if tail else ", printing nothing")
        return message + (f"\ncommand: {shlex.join(self._argv)}" if with_command else "")

    # -- the life of the process ----------------------------------------------------------

    async def _until_ready(self) -> None:
        """Return once passt has written its pid file (it is up), or raise its complaint."""
        written = b""
        with anyio.move_on_after(START_TIMEOUT) as timer:
            while not written.endswith(b"\n"):
                await anyio.wait_readable(self._ready)
                chunk = os.read(self._ready, 64)
                if not chunk:
                    break
                written += chunk
        os.close(self._ready)
        self._ready = -1
        if written.endswith(b"\n"):
            return
        if timer.cancelled_caught:
            raise NetBackendError(self._describe(f"passt was not ready within {START_TIMEOUT:.0f} s", True))
        with anyio.move_on_after(EXIT_GRACE):
            await self._exited.wait()  # it closed its end of the pipe: it is exiting
        raise NetBackendError(self._describe("passt would not start (check the network options)", True))

    async def _read_stderr(self) -> None:
        while not self._stderr_done:
            await anyio.wait_readable(self._stderr)
            self._drain_stderr()

    def _drain_stderr(self) -> None:
        while not self._stderr_done:
            try:
                chunk = os.read(self._stderr.fileno(), 4096)
            except BlockingIOError:
                return
            if not chunk:
                self._stderr_done = True
                return
            self._stderr_tail += chunk
            del self._stderr_tail[:-STDERR_TAIL]

    async def _reap(self) -> None:
        await anyio.wait_readable(self._pidfd)
        self._process.wait()
        self._drain_stderr()
        self._exited.set()

    async def _stop(self) -> None:
        """Close the link, kill passt and wait (up to ``EXIT_GRACE``) until it has exited; :meth:`_close` reaps it.

        Called once the tasks that read its stderr and reap it are gone (they may have been
        cancelled with the VM), so it waits on the pidfd itself.
        """
        self._close_socket()
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            with anyio.move_on_after(EXIT_GRACE):
                await anyio.wait_readable(self._pidfd)

    def _close_socket(self) -> None:
        if self._socket.fileno() >= 0:
            anyio.notify_closing(self._socket)
            self._socket.close()

    def _close(self) -> None:
        """Kill and reap passt if it still runs (a start interrupted), and close every fd. Idempotent."""
        self._close_socket()
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            self._process.wait()
        for fd in (self._pidfd, self._ready):
            if fd >= 0:
                os.close(fd)
        self._pidfd = self._ready = -1
        self._stderr.close()


def _after(buffers: list[memoryview], count: int) -> list[memoryview]:
    """What is left of ``buffers`` to send once ``count`` bytes of them are sent."""
    index = 0
    while index < len(buffers) and count >= buffers[index].nbytes:
        count -= buffers[index].nbytes
        index += 1
    rest = buffers[index:]
    if count:
        rest[0] = rest[0][count:]
    return rest


def _spawn(options: Passt) -> PasstLink:
    """Start passt on this thread (its parent-death signal follows the thread), not waiting for it."""
    host, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ready, ready_writer = os.pipe()
    argv = [SETPRIV]
    nobody = _nobody()
    if nobody is not None:
        argv += ["--reuid", str(nobody[0]), "--regid", str(nobody[1]), "--clear-groups"]
    # The pid file is the pipe on passt's stdout: newer passt closes every other fd it inherits but --fd's.
    argv += ["--pdeathsig", "KILL", "--", *options.argv(guest.fileno(), pid_file="/proc/self/fd/1")]
    try:
        if nobody is not None:
            os.fchown(ready_writer, *nobody)  # passt opens its pid file by path, as nobody
        process = subprocess.Popen(
            argv,
            pass_fds=(guest.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=ready_writer,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a terminal's ^C is ours to handle: passt goes when we close it
        )
    except BaseException as error:
        host.close()
        os.close(ready)
        if isinstance(error, OSError):
            raise NetBackendError(
                f"cannot run {argv[0]} or {options.program().path} ({error}): install util-linux and passt"
            ) from error
        raise
    finally:
        guest.close()
        os.close(ready_writer)
    try:
        pidfd = os.pidfd_open(process.pid)
    except BaseException:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
        host.close()
        os.close(ready)
        raise
    host.setblocking(False)
    os.set_blocking(ready, False)
    return PasstLink(options, argv, process, pidfd, ready, host)


@contextlib.asynccontextmanager
async def running_passt(options: Passt) -> AsyncIterator[PasstLink]:
    """Run passt for the block; leaving it (however) kills and reaps passt and closes every fd.

    Raises :class:`NetBackendError` if passt cannot be run or exits at start
    (bad options, a host port already taken), with what passt printed.
    """
    if options.executable not in _started_programs:
        # The first start may build passt, or run it to learn its version: not on the event loop's thread.
        # Later starts know it, and spawn passt at once.
        await anyio.to_thread.run_sync(options.program, abandon_on_cancel=True)
    link = _spawn(options)
    try:
        with unwrap_single_error():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(link._read_stderr)
                tasks.start_soon(link._reap)
                try:
                    await link._until_ready()
                    _started_programs.add(options.executable)
                    yield link
                finally:
                    tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await link._stop()
        link._close()
