"""virtio-rng (virtio 1.2, section 5.4): the guest's entropy source at boot, as pure logic."""

from __future__ import annotations

import os
from collections.abc import Callable

from .queue import Virtqueue

VIRTIO_ID_RNG = 4
QUEUE_SIZE = 64
# Fill no single request with more than this; the driver asks again for more.
MAX_REQUEST_BYTES = 64 * 1024


class Rng:
    """One request queue; each writable buffer is filled with host entropy."""

    device_id = VIRTIO_ID_RNG
    device_features = 0
    queue_max_sizes = (QUEUE_SIZE,)

    def __init__(self, entropy: Callable[[int], bytes] = os.urandom) -> None:
        self._entropy = entropy
        self._queue: Virtqueue | None = None

    def read_config(self, offset: int, size: int) -> int:
        return 0  # 5.4.4: no configuration

    def write_config(self, offset: int, size: int, value: int) -> None:
        pass

    def activate(self, queues: list[Virtqueue], features: int) -> None:
        self._queue = queues[0]

    def reset(self) -> None:
        self._queue = None

    def process_queue(self, index: int) -> bool:
        queue = self._queue
        if queue is None or index != 0:
            return False
        used = False
        while (chain := queue.pop()) is not None:
            budget = MAX_REQUEST_BYTES
            written = 0
            for buffer in chain.writable:
                length = min(buffer.length, budget)
                queue.memory.write(buffer.addr, self._entropy(length))
                written += length
                budget -= length
            queue.add_used(chain.head, written)
            used = True
        return used
