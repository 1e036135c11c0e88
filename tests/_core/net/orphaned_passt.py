"""Start passt from a child process, SIGKILL the child, and report how passt ended, as JSON.

``orphaned_passt.py BACKEND`` is the reaper: a child subreaper (prctl), so that the
orphaned passt becomes its child and its exit status can be read rather than
guessed from /proc. ``orphaned_passt.py BACKEND --victim`` is the child it kills:
it starts passt with :func:`running_passt` on the anyio ``BACKEND``, hands a copy
of the link's socket to a long sleep (so passt never sees end-of-file) and prints
both pids.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36  # Linux include/uapi/linux/prctl.h
DEADLINE = 30.0  # seconds; generous, only to turn a hang into a failure
HOLDER_SECONDS = "60"  # the holder of the socket copy ends by itself even if this script is killed


async def victim() -> None:
    import anyio

    from asupermachine._core.net.passt import Passt, running_passt

    async with running_passt(Passt()) as link:
        copy = os.dup(link.socket.fileno())
        holder = subprocess.Popen(["sleep", HOLDER_SECONDS], pass_fds=(copy,))
        os.close(copy)
        print(json.dumps({"passt_pid": link.pid, "holder_pid": holder.pid}), flush=True)
        await anyio.sleep_forever()


def wait_for(pid: int, deadline: float) -> str:
    """Reap ``pid`` (now our child) and say how it ended, or "still running" at the deadline."""
    while time.monotonic() < deadline:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped:
            if os.WIFSIGNALED(status):
                return f"killed by signal {os.WTERMSIG(status)}"
            return f"exited with status {os.WEXITSTATUS(status)}"
        time.sleep(0.05)
    return "still running"


def reaper(backend: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    deadline = time.monotonic() + DEADLINE
    child = subprocess.Popen([sys.executable, __file__, backend, "--victim"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    started = json.loads(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    status = wait_for(started["passt_pid"], deadline)
    if status == "still running":
        os.kill(started["passt_pid"], signal.SIGKILL)
        os.waitpid(started["passt_pid"], 0)
    os.kill(started["holder_pid"], signal.SIGKILL)
    os.waitpid(started["holder_pid"], 0)
    print(json.dumps({"passt_pid": started["passt_pid"], "passt_status": status}))


if __name__ == "__main__":
    if sys.argv[2:] == ["--victim"]:
        import anyio

        anyio.run(victim, backend=sys.argv[1])
    else:
        reaper(sys.argv[1])
