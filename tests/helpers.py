"""Small helpers shared by the tests (axis moves between layouts, the buffer under a view)."""

import numpy as np

try:
    from numpy.lib.array_utils import byte_bounds  # NumPy >= 2.0
except ImportError:  # NumPy 1.26
    from numpy import byte_bounds

__all__ = ["NUMERIC_DTYPES", "byte_bounds", "owner", "to_channels_first_kernel", "to_channels_first_operator"]

# Every numeric dtype NumPy has (bool, ints, floats, complex), native byte order.
NUMERIC_DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
    np.complex64,
    np.complex128,
    np.clongdouble,
]


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
