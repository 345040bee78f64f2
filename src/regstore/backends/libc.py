"""Linux system calls CPython's ``os`` does not offer, through libc (``ctypes`` is imported on
first use: only a store that needs one pays for it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["checked_linux_call", "linux_function"]


def linux_function(name: str, argtypes: list[Any], restype: Any) -> Any | None:
    """libc's ``name`` with the given ctypes signature (errno kept for ``ctypes.get_errno``),
    or None off Linux or where libc has no such function."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    return function


def checked_linux_call(name: str, argtypes: list[Any]) -> Callable[..., None] | None:
    """libc's ``name``, a call answering 0 or -1 with errno, as a function raising OSError on
    failure like ``os``'s own; None off Linux or where libc has no such function."""
    import ctypes

    call = linux_function(name, argtypes, ctypes.c_int)
    if call is None:
        return None

    def checked(*args: Any) -> None:
        if call(*args) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    checked.__name__ = name
    return checked
