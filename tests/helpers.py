"""Small helpers shared by the tests (axis moves between layouts, the buffer under a view)."""

import numpy as np

try:
    from numpy.lib.array_utils import byte_bounds  # NumPy >= 2.0
except ImportError:  # NumPy 1.26
    from numpy import byte_bounds

__all__ = ["byte_bounds", "owner", "to_channels_first_kernel", "to_channels_first_operator"]


def owner(view):
    """The array that owns the memory under `view` (its last ndarray base)."""
    base = view
    while isinstance(base.base, np.ndarray):
        base = base.base
    return base


def to_channels_first_kernel(kernel):
    """(*k, C, F) -> (F, C, *k)."""
    n = kernel.ndim - 2
    return kernel.transpose(n + 1, n, *range(n))


def to_channels_first_operator(W, n):
    """(*o, F, *m, C) -> (F, *o, C, *m)."""
    return W.transpose(n, *range(n), 2 * n + 1, *range(n + 1, 2 * n + 1))
