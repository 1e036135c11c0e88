"""Restore a networked snapshot, print its passt's pid as JSON once the guest answers, then wait to be killed.

``killed_with_a_network.py SNAPSHOT``: the test SIGKILLs this process and checks
that passt does not outlive it.
"""

from __future__ import annotations

import json
import sys

import anyio
import psutil

from asupermachine import Machine


async def main(snapshot: str) -> None:
    async with Machine.restore(snapshot) as vm:
        await vm.exec(["true"])
        (passt,) = (child.pid for child in psutil.Process().children() if child.name().startswith("passt"))
        print(json.dumps({"passt_pid": passt}), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
