"""Process limits the benchmarks that hold many machines need."""

from __future__ import annotations

import resource


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (each machine holds ~25 fds); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
