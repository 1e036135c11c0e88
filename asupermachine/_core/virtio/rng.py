"""virtio-rng (virtio 1.2, section 5.4): the guest's entropy source at boot, as pure logic."""

from __future__ import annotations

import os
from collections.abc import Callable

from .queue import DescriptorChain, Virtqueue
from .request_queue import RequestQueueDevice

VIRTIO_ID_RNG = 4
QUEUE_SIZE = 64
# Fill no single request with more than this; the driver asks again for more.
MAX_REQUEST_BYTES = 64 * 1024


class Rng(RequestQueueDevice):
    """One request queue; each writable buffer is filled with host entropy (5.4.4: no configuration)."""

    device_id = VIRTIO_ID_RNG
    device_features = 0
    queue_max_sizes = (QUEUE_SIZE,)

    def __init__(self, entropy: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__()
        self._entropy = entropy

    def handle(self, queue: Virtqueue, chain: DescriptorChain) -> int:
        budget = MAX_REQUEST_BYTES
        for buffer in chain.writable:
            length = min(buffer.length, budget)
            queue.memory.write(buffer.addr, self._entropy(length))
            budget -= length
        return MAX_REQUEST_BYTES - budget
