"""The L1's PID 1 once in the host's root (run by Debian's python3, standard library only).

Mounts what a Linux userland expects, brings up the NIC passt needs, holds
KVM's static keys on (see :func:`hold_kvm_static_keys`), runs the requested
command with its output in the run's directory on the host, reaps every orphan
meanwhile, records the exit status and powers the L1 off.
"""

import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import traceback
from typing import Any

IO = "/nested-io"
MOUNTS = (
    ("proc", "/proc", "proc", ""),
    ("sysfs", "/sys", "sysfs", ""),
    ("devpts", "/dev/pts", "devpts", "gid=5,mode=620,ptmxmode=666"),
    ("tmpfs", "/dev/shm", "tmpfs", "mode=1777"),
    ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
    ("tmpfs", "/run", "tmpfs", "mode=755"),
)
# QEMU's user network: passt needs a routable interface with a default route.
NETWORK = (
    ("ip", "link", "set", "lo", "up"),
    ("ip", "link", "set", "eth0", "up"),
    ("ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"),
    ("ip", "route", "add", "default", "via", "10.0.2.2"),
)
DNS_FORWARDER = "10.0.2.3"
"""QEMU's user network forwards DNS from here to this host's resolver."""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def prepare() -> None:
    os.environ["PATH"] = SYSTEM_PATH
    for source, target, kind, options in MOUNTS:
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "-t", kind, *(["-o", options] if options else []), source, target], check=True)
    for command in NETWORK:
        subprocess.run(command, check=True)
    with open("/proc/sys/kernel/hostname", "w") as f:
        f.write("nested-kvm")
    with open("/etc/resolv.conf", "w") as f:  # the overlay's copy: the host's stays as it is
        f.write(f"nameserver {DNS_FORWARDER}\n")


# KVM's ioctls (linux/kvm.h): _IO(KVMIO, nr).
KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41
KVM_CREATE_IRQCHIP = 0xAE60


def hold_kvm_static_keys() -> list[int]:
    """Keep one idle x86 VM with an in-kernel LAPIC for the L1's life; its fds, to stay open.

    KVM turns static keys on when the first VM or software-disabled LAPIC
    appears (``preempt_notifier_key``, ``apic_sw_disabled``) and off when the
    last goes, and each turn rewrites kernel text with ``text_poke_bp``: the
    rewrite QEMU's TCG sometimes misses, freezing the L1 (docs/kvm.md). A VM
    that never goes, whose vCPU never enables its LAPIC, keeps every count
    above zero, so the suite's hundreds of VMs patch no text.
    """
    if os.uname().machine != "x86_64":
        return []
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)  # before the vCPU, so that it gets a LAPIC
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    return [kvm, vm, vcpu]


def run(request: dict[str, Any]) -> int:
    """Run the request's command as the L1's only job; its exit status, 128+N for signal N."""
    resource.setrlimit(resource.RLIMIT_NOFILE, tuple(request["nofile"]))  # the caller's, as on the host
    with open(f"{IO}/stdout", "ab", buffering=0) as out, open(f"{IO}/stderr", "ab", buffering=0) as err:
        child = subprocess.Popen(
            request["argv"], cwd=request["cwd"], env=request["env"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
        )
    while True:
        pid, status = os.wait()  # PID 1 reaps every orphan, the child's last
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def power_off() -> None:
    os.sync()
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")
    signal.pause()


def main() -> None:
    try:
        with open(f"{IO}/request/request.json") as f:
            request = json.load(f)
        prepare()
        held = hold_kvm_static_keys()
        status = run(request)
        for fd in held:
            os.close(fd)
        with open(f"{IO}/status", "w") as f:
            f.write(str(status))
    except BaseException:
        with open(f"{IO}/failure", "w") as f:
            f.write("stage 2 failed:\n" + traceback.format_exc())
        print(traceback.format_exc(), file=sys.stderr)
    power_off()


main()
