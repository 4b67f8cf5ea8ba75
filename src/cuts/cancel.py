"""Cooperative cancellation shared by long-running engine calls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Union

#: Something that says "stop now": a :class:`threading.Event` or a callable returning ``True``.
CancelToken = Union[threading.Event, Callable[[], bool], None]


class Cancelled(RuntimeError):
    """Raised when a long-running call (training, condensation, batch) was cancelled.

    Nothing half-done is returned: the caller keeps what it had before the call.
    """


def is_cancelled(token: CancelToken) -> bool:
    """Return ``True`` if ``token`` asks to stop."""
    if token is None:
        return False
    if isinstance(token, threading.Event):
        return token.is_set()
    return bool(token())


def check_cancelled(token: CancelToken, what: str = "operation") -> None:
    """Raise :class:`Cancelled` if ``token`` asks to stop."""
    if is_cancelled(token):
        raise Cancelled(f"{what} was cancelled")
