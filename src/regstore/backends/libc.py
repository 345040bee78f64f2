"""Linux system calls CPython's ``os`` does not offer, through libc (``ctypes`` is imported on
first use: only a store that needs one pays for it)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["linux_function"]


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
