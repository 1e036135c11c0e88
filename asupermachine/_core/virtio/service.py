"""Serve one virtio-mmio device: KVM ioeventfds wake an async task per queue, an irqfd interrupts.

Queue notifications never exit to a vCPU thread: KVM signals the queue's
eventfd, the task awaiting it drains the queue under the device's bus lock (in a
worker thread for devices whose IO may block, such as disks), and a write to the
irqfd injects the interrupt. Only register and config-space accesses reach the
transport through the vCPU's MMIO exits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio

from ..._errors import VirtqueueError
from ..devices.bus import Bus
from ..eventfd import EventFd
from ..kvm import VmFd
from ..memory import GuestMemory
from .mmio import VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_SIZE, MmioTransport, VirtioDevice


@dataclass(frozen=True)
class MmioSlot:
    """Where a virtio-mmio device lives: its register window (guest-physical) and its interrupt line."""

    base: int
    irq: int

    @property
    def kernel_argument(self) -> str:
        """How the guest learns of the device (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)."""
        return f"virtio_mmio.device=4K@{self.base:#x}:{self.irq}"


class VirtioService:
    """A device on its transport, wired to KVM; :meth:`run` serves it until cancelled."""

    def __init__(self, vm_fd: VmFd, bus: Bus, memory: GuestMemory, device: VirtioDevice, slot: MmioSlot) -> None:
        self.slot = slot
        self._eventfds: list[EventFd] = []
        try:
            self._irq = self._eventfd()
            vm_fd.register_irqfd(self._irq.fileno(), slot.irq)
            self._notify = [self._eventfd() for _ in device.queue_max_sizes]
            for index, notify in enumerate(self._notify):
                vm_fd.register_ioeventfd(slot.base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, notify.fileno(), datamatch=index)
            self.transport = MmioTransport(
                device, memory, interrupt=self._raise_interrupt, queue_notify=self._notify_queue
            )
            self.lock = bus.register(slot.base, VIRTIO_MMIO_SIZE, self.transport)
            """Held while the device runs: take it to touch the device's state from elsewhere."""
            self._retired = False
            self._raised = 0
            self._raised_when_last_checked = 0
            self.raised_again = 0
            """How often :meth:`raise_again_if_unacknowledged` found an interrupt the guest had not taken."""
        except BaseException:
            self.close()
            raise

    def _eventfd(self) -> EventFd:
        eventfd = EventFd()
        self._eventfds.append(eventfd)
        return eventfd

    def _raise_interrupt(self) -> None:
        self._raised += 1
        self._irq.signal()  # KVM takes the count and injects the interrupt

    def raise_again_if_unacknowledged(self) -> bool:
        """Raise the interrupt again if the guest has acknowledged none since the last call and no new
        one was raised meanwhile; returns whether it did.

        The guest's handler acknowledges an interrupt first thing, within microseconds
        of its delivery, so one still pending a period later was lost on its way (one
        such loss in many thousands of restores was seen under nested KVM on QEMU's
        TCG). A repeat is harmless: the pin is edge-triggered, a pending vector
        absorbs it, and a handler that finds no status returns at once.
        """
        transport = self.transport
        unacknowledged = (
            transport.active and transport.interrupt_status != 0 and self._raised == self._raised_when_last_checked
        )
        self._raised_when_last_checked = self._raised
        if unacknowledged:
            self.raised_again += 1
            self._irq.signal()
        return unacknowledged

    def _notify_queue(self, index: int) -> None:
        # Reached only for a notification KVM did not match (e.g. a narrower write).
        self.kick(index)

    def kick(self, index: int) -> None:
        """Have queue ``index`` served as if the guest had notified it (host-side work is waiting)."""
        self._notify[index].signal()

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            for index, notify in enumerate(self._notify):
                tasks.start_soon(self._serve_queue, index, notify)

    async def _serve_queue(self, index: int, notify: EventFd) -> None:
        in_thread = self.transport.device.blocking_io
        try:
            async with notify.watched() as next_notification:
                while True:
                    await next_notification()
                    if in_thread:
                        # Not abandoned on cancellation: the VM's memory must outlive the IO into it.
                        await anyio.to_thread.run_sync(self._process, index)
                    else:
                        self._process(index)
        except anyio.ClosedResourceError:
            return  # closed: the VM is gone

    def _process(self, index: int) -> None:
        self.work_on(lambda: self.transport.device.process_queue(index), index)

    def work_on(self, work: Callable[[], bool], queue: int) -> None:
        """Run ``work`` on the active device under its lock; interrupt if it used buffers of ``queue``."""
        transport = self.transport
        with self.lock:
            if not transport.active or self._retired:
                return
            try:
                used = work()
            except VirtqueueError as error:
                transport.fail(str(error))
                return
            if used and not transport.queues[queue].interrupt_suppressed():
                transport.signal_used()

    def retire(self) -> None:
        """Serve nothing more, not even what the guest queued before (under :attr:`lock`): the VM was
        saved with those requests pending, and its restore serves them."""
        self._retired = True

    def close(self) -> None:
        """Close the eventfds; call after :meth:`run` has ended and the VM fd is closed."""
        for eventfd in self._eventfds:
            eventfd.close()
        self._eventfds.clear()
