"""Boot the project's guest with two vCPUs, type into its console, and print what it says."""

import anyio

from asupermachine import Machine
from asupermachine.guest import READY_MARKER


async def main() -> None:
    script = "read name; echo hello, $name; echo cpus: $(grep -c ^processor /proc/cpuinfo)"
    async with Machine.boot(command=["sh", "-c", script], vcpus=2) as vm:
        async for line in vm.console.lines():
            print("guest:", line)
            if line.startswith(READY_MARKER):
                await vm.console.send(b"world\n")
        print(await vm.wait())


if __name__ == "__main__":
    anyio.run(main)
