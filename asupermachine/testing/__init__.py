"""Fakes for testing code that talks to a guest, without a guest (like ``trio.testing``).

- :class:`VirtqueueDriver` plays a guest's virtio driver on a split virtqueue, to
  drive a device model request by request.
"""

from ._virtio import VirtqueueDriver as VirtqueueDriver
