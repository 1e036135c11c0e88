"""The shape shared by devices with one request queue (rng, blk): serve each chain, then complete it."""

from __future__ import annotations

from .queue import DescriptorChain, Virtqueue


class RequestQueueDevice:
    """Subclasses set ``device_id``, ``device_features``, ``queue_max_sizes`` and implement :meth:`handle`."""

    blocking_io = False

    def __init__(self) -> None:
        self._queue: Virtqueue | None = None

    def read_config(self, offset: int, size: int) -> int:
        return 0

    def write_config(self, offset: int, size: int, value: int) -> None:
        pass  # no writable configuration

    def activate(self, queues: list[Virtqueue], features: int) -> None:
        self._queue = queues[0]

    def reset(self) -> None:
        self._queue = None

    def close(self) -> None:
        pass  # no backend

    def process_queue(self, index: int) -> bool:
        queue = self._queue
        if queue is None or index != 0:
            return False
        used = False
        while (chain := queue.pop()) is not None:
            queue.add_used(chain.head, self.handle(queue, chain))
            used = True
        return used

    def handle(self, queue: Virtqueue, chain: DescriptorChain) -> int:
        """Serve one request; returns how many bytes were written into its writable buffers."""
        raise NotImplementedError
