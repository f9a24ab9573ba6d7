"""Memory queries and the size guards used before anything large is allocated."""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["INTP_MAX", "available_memory", "check_addressable", "format_bytes"]

INTP_MAX = int(np.iinfo(np.intp).max)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation, or None when it cannot be told.

    Linux's ``MemAvailable`` (which counts reclaimable caches) where there is one, else the free
    physical pages reported by ``sysconf``.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(count: int) -> str:
    """``1234567`` -> ``'1.18 MiB'``: binary units, three significant figures."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(value) < 1024 or unit == "EiB":
            break
        value /= 1024
    if unit == "B":
        return f"{count} B"
    return f"{value:.3g} {unit}"


def check_addressable(shape: tuple[int, ...], itemsize: int, what: str) -> None:
    """Raise MemoryError if an array of `shape` cannot even be described by NumPy."""
    size = math.prod(shape)
    limit = INTP_MAX
    if size * itemsize > limit:
        raise MemoryError(
            f"{what} of shape {shape} would span {size * itemsize} bytes, more than NumPy can "
            f"address ({limit}); use `ConvOperator(...) @ x` or `.to_sparse()` instead"
        )
