"""Task-group errors surfaced as the one error they carry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def unwrap_single_error() -> Iterator[None]:
    """Task groups raise ``ExceptionGroup``; surface a lone error (ours or the caller's) as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        # A vCPU failure can arrive twice: from its task and re-raised by wait().
        errors = list({id(error): error for error in _leaves(group)}.values())
        if len(errors) == 1:
            raise errors[0] from errors[0].__cause__
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        leaves.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves
