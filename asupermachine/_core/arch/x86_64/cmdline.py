"""The guest kernel command line: our defaults, the caller's extras, and init's command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ...._environment import check_environment_name
from .cpuid import CpuModel, kernel_arguments

# console on COM1; reboot through the i8042 (which we emulate); reboot at once on panic;
# skip the timer-IRQ and TSC checks, crypto self-tests and mitigations: each costs
# guest-kernel time, which software KVM emulates instruction by instruction.
BASE_ARGUMENTS = (
    "console=ttyS0",
    "8250.nr_uarts=1",
    "reboot=k",
    "panic=-1",
    "no_timer_check",
    "tsc=reliable",
    "cryptomgr.notests",
    "mitigations=off",
)
QUIET_ARGUMENTS = ("quiet", "loglevel=1")


def quote_init_argument(argument: str) -> str:
    """One word of init's argv as the kernel's command-line parser will split it."""
    if not argument or argument == "--" or '"' in argument or any(c in argument for c in "\0\n"):
        raise ValueError(f"command argument {argument!r} cannot be passed on the kernel command line")
    return f'"{argument}"' if any(c.isspace() for c in argument) else argument


# The kernel hands init every word after "--", but also any unknown parameter
# before it; init runs only what follows this marker. (It cannot be "--": the
# kernel's parser stops at every "--", quoted or not.)
INIT_COMMAND_MARKER = "asupermachine-init-command"
# init reads words with this prefix (between "--" and the marker) as its options.
INIT_OPTION_PREFIX = "asupermachine."


@dataclass(frozen=True)
class InitOptions:
    """What init sets up: root device, hostname, network, and its command's environment, directory and user.

    ``network`` is eth0's ``ADDRESS/PREFIX,GATEWAY,MTU[,DNS]`` (IPv4, e.g.
    ``10.0.2.15/24,10.0.2.2,32744,10.0.2.3``); empty: no network but ``lo``.
    """

    root: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    network: str = ""

    def words(self) -> list[str]:
        pairs = [
            ("root", self.root),
            ("workdir", self.workdir),
            ("user", self.user),
            ("hostname", self.hostname),
            ("net", self.network),
        ]
        for name, value in self.env.items():
            check_environment_name(name)
            pairs.append(("env", f"{name}={value}"))
        return [quote_init_argument(f"{INIT_OPTION_PREFIX}{key}={value}") for key, value in pairs if value]


def kernel_cmdline(
    *,
    cpu_model: CpuModel,
    kernel_log: bool,
    extra: str = "",
    devices: Sequence[str] = (),
    init: InitOptions = InitOptions(),
    command: Sequence[str] = (),
) -> str:
    """The full command line, ending in ``-- OPTIONS MARKER COMMAND`` for init's options and command.

    ``devices`` are the words that declare devices to the guest (virtio-mmio slots).
    """
    words = [*BASE_ARGUMENTS, *devices]
    if not kernel_log:
        words += QUIET_ARGUMENTS
    words += kernel_arguments(cpu_model)
    if extra:
        words.append(extra)
    init_words = init.words()
    if init_words or command:
        words += ["--", *init_words, INIT_COMMAND_MARKER]
        words += [quote_init_argument(argument) for argument in command]
    return " ".join(words)
