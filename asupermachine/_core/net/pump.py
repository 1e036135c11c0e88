"""Frames between a VM's virtio-net device and passt: the device's backend, two tasks on the event loop.

The device calls :meth:`NetworkPump.transmit` and :meth:`NetworkPump.transmit_room`
under its lock while it drains the guest's TX queue; the frames wait in a
bounded outbox for the send task, and when the outbox was full the TX queue is
served again once it has room, so a guest that sends faster than passt takes
waits on its own ring. The receive task hands passt's frames to the device and
fills the guest's receive buffers at once; while the device's backlog is full it
holds what it has read and stops reading, leaving passt to hold the rest: a
frame dropped here would cost far more than its own resend, as passt's TCP
resends everything after it.

Every frame passes the VM's :class:`.egress.EgressFilter` on the way: a guest frame
it refuses never reaches passt, and its answer (a reset, an ICMP error) goes to
the guest by a third task; the resolver's answers teach it names.
"""

from __future__ import annotations

import functools
import logging
from collections import deque

import anyio

from ..._errors import NetBackendError
from ..._groups import unwrap_single_error
from ..eventfd import EventFd
from ..virtio.net import RX_QUEUE, TX_QUEUE, Net
from ..virtio.service import VirtioService
from .egress import EgressFilter
from .passt import PasstLink

OUTBOX_BYTES = 1 << 20
"""Bytes of guest frames waiting for passt before the guest's TX queue is left alone."""
RX_BACKLOG_FRAMES = 1024
"""Frames from passt the device holds for the guest (small ones: its byte bound limits big ones)."""
RX_BACKLOG_BYTES = 64 << 10
"""Bytes of those frames. Kept short: what passt has sent counts as in flight, and passt resends all it
sent since the last ACK when none comes for two seconds (its ``ACK_TIMEOUT``); frames still in passt's
socket have not been sent."""

logger = logging.getLogger("asupermachine")


class NetworkPump:
    """One NIC's backend: its hooks go to the device when it is made; :meth:`run` then serves it."""

    def __init__(self, announcement: bytes, egress: EgressFilter, outbox_bytes: int = OUTBOX_BYTES) -> None:
        self._announcement = announcement  # sent first, so passt knows the guest's MAC (see .announce)
        self.egress = egress
        self._answers: deque[bytes] = deque()  # the egress filter's answers to refused frames, for the guest
        self._answers_ready = EventFd()
        self._outbox: deque[bytearray] = deque()
        self._outbox_bytes = 0
        self._outbox_limit = outbox_bytes
        self._tx_stalled = False  # the device found no room: serve its TX queue again when there is
        self._frames_to_send = EventFd()
        self._backlog_room = EventFd()
        self.failure: NetBackendError | None = None
        """Why passt stopped serving the VM (it died or broke its framing); None while it serves."""

    # -- the device's hooks (under its lock) ------------------------------------------

    def transmit(self, frames: list[bytearray]) -> None:
        if self.egress.policy.active:
            frames = self._admitted(frames)
        self._outbox.extend(frames)
        self._outbox_bytes += sum(map(len, frames))
        self._frames_to_send.signal()

    def _admitted(self, frames: list[bytearray]) -> list[bytearray]:
        admitted = []
        for frame in frames:
            answer = self.egress.outbound(frame)
            if answer is None:
                admitted.append(frame)
            elif answer:
                self._answers.append(answer)
                self._answers_ready.signal()
        return admitted

    def transmit_room(self) -> int:
        room = self._outbox_limit - self._outbox_bytes
        if room <= 0:
            self._tx_stalled = True
        return room

    def backlog_room(self) -> None:
        self._backlog_room.signal()

    # -- serving ------------------------------------------------------------------------

    async def run(self, link: PasstLink, service: VirtioService, device: Net) -> None:
        """Move frames between ``link`` and ``device`` (served by ``service``) until cancelled.

        If passt fails, keep why (:attr:`failure`), log it and return.
        """
        try:
            await link.send_frames([self._announcement])
            with unwrap_single_error():
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._send, link, service)
                    tasks.start_soon(self._receive, link, service, device)
                    tasks.start_soon(self._answer, service, device)
        except NetBackendError as error:
            self.fail(error)
        except anyio.ClosedResourceError:
            pass  # the link closed under us: the VM is going

    async def _send(self, link: PasstLink, service: VirtioService) -> None:
        async with self._frames_to_send.watched() as frames_to_send:
            while True:
                await frames_to_send()
                await self._send_outbox(link, service)

    async def _send_outbox(self, link: PasstLink, service: VirtioService) -> None:
        while self._outbox:
            frames = [self._outbox.popleft() for _ in range(len(self._outbox))]
            await link.send_frames(frames)
            self._outbox_bytes -= sum(map(len, frames))
            if self._tx_stalled:
                self._tx_stalled = False
                service.kick(TX_QUEUE)

    async def _receive(self, link: PasstLink, service: VirtioService, device: Net) -> None:
        pending: deque[bytes] = deque()  # received, not yet taken by the device: none is ever dropped here
        while True:
            if not pending:
                frames = await link.receive_frames()
                if self.egress.policy.active:
                    for frame in frames:
                        self.egress.inbound(frame)
                pending.extend(bytes(frame) for frame in frames)
            service.work_on(functools.partial(_deliver, device, pending), RX_QUEUE)
            if not service.transport.active:
                pending.clear()  # no driver: the link is down, as on a real NIC
            elif pending:
                await self._backlog_room.wait()

    async def _answer(self, service: VirtioService, device: Net) -> None:
        """Give the guest the egress filter's answers. One that finds the device's backlog full is dropped:
        the guest sends its SYN (or datagram) again, and is answered again."""
        async with self._answers_ready.watched() as answers_ready:
            while True:
                await answers_ready()
                service.work_on(functools.partial(_deliver, device, self._answers), RX_QUEUE)
                self._answers.clear()

    def fail(self, error: NetBackendError) -> None:
        """Passt stopped serving (or never started): keep why and log it; the guest runs on without a network."""
        self.failure = error
        logger.warning("a VM's network stopped: %s", error)

    def close(self) -> None:
        """Close the wake-ups; after :meth:`run` has ended."""
        self._frames_to_send.close()
        self._backlog_room.close()
        self._answers_ready.close()


def _deliver(device: Net, frames: deque[bytes]) -> bool:
    """Give the device what its backlog takes of ``frames`` and fill the guest's receive buffers (under its lock)."""
    while frames and device.accepts_frames:
        device.receive(frames.popleft())
    return device.process_queue(RX_QUEUE)
