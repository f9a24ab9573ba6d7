"""SciPy's structured matrices as read-only views: toeplitz, hankel, circulant, convolution_matrix.

Each is a 1-D, single-channel convolution operator: row ``i`` of a Toeplitz matrix is the window
of its values that starts ``i`` entries further left, exactly the operator of a correlation with
the values as kernel. So every matrix here is a `conv_view` of a kernel built from the inputs,
with the batch (leading) axes as filters: one buffer of ``rows + cols - 1`` entries per matrix,
and a batch axis is one more stride.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from ._conv import StridedOperator
from ._geometry import Padding, as_int, as_numeric_array, make_geometry
from ._matrix import matrix_operator
from ._view import make_view

__all__ = ["circulant", "convolution_matrix", "hankel", "toeplitz"]


def _banded_view(values: np.ndarray, columns: int, padding: Padding, *, reverse: bool = False) -> np.ndarray:
    """Operator view ``(*batch, rows, columns)`` of the 1-D correlation with kernels `values`.

    `values` has shape ``(*batch, k)``; entry ``[..., i, j]`` of the result is
    ``values[..., j - i + lo]`` (zero outside the kernel), or its circular fold; with `reverse`,
    the columns are reversed. A single matrix is an `OperatorView` whose operator is that
    convolution on vectors (see `MatrixOperator`); a batch is a plain read-only view.
    """
    batch, taps = values.shape[:-1], values.shape[-1]
    filters = math.prod(batch)
    kernel = values.reshape(filters, taps).T.reshape(taps, 1, filters)  # (k, C=1, F)
    geometry = make_geometry(kernel.shape, (columns,), padding=padding)
    strided = StridedOperator.build(kernel, geometry)
    view = strided.view()  # (rows, F, columns, 1)
    rows = view.shape[0]
    matrices = view[..., 0].transpose(1, 0, 2).reshape(*batch, rows, columns)
    if reverse:
        matrices = matrices[..., ::-1]
    if batch:
        return matrices
    return make_view(matrices, (matrix_operator, strided, reverse))


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only empty result, as SciPy returns for empty inputs.

    A view of an immutable ``bytes`` object, so that, like the other views, it cannot be made
    writable again.
    """
    return np.frombuffer(b"", dtype=dtype).reshape(shape)


def _as_vectors(value: Any, name: str) -> np.ndarray:
    return np.atleast_1d(as_numeric_array(value, name))


def _values(c: np.ndarray, r: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], int, int]:
    """``concatenate((first, r[..., 1:]))`` over the broadcast batch, with the batch and sizes.

    `first` is `c` or its reverse (a view of it); the batch axes of `c` and `r` broadcast.
    """
    batch = np.broadcast_shapes(c.shape[:-1], r.shape[:-1])
    rows, columns = c.shape[-1], r.shape[-1]
    first = np.broadcast_to(first, (*batch, rows))
    r = np.broadcast_to(r, (*batch, columns))
    return np.concatenate((first, r[..., 1:]), axis=-1), batch, rows, columns


def toeplitz(c: np.typing.ArrayLike, r: np.typing.ArrayLike | None = None) -> np.ndarray:
    """Toeplitz matrix as a read-only view, equal to ``scipy.linalg.toeplitz(c, r)``.

    Parameters
    ----------
    c : (..., M) array_like
        First column. Leading axes are a batch: one matrix per 1-D slice.
    r : (..., N) array_like, optional
        First row (``r[..., 0]`` is ignored). Default ``conjugate(c)``, which makes the matrix
        Hermitian when ``c[0]`` is real.

    Returns
    -------
    A : (..., M, N) ndarray
        A read-only view of dtype ``np.result_type(c, r)`` over one buffer of ``M + N - 1``
        entries per matrix: ``A[..., i, j] == c[..., i - j]`` for ``i >= j``, else
        ``r[..., j - i]``. A single matrix is an `OperatorView`: ``A @ v``, ``np.dot(A, v)`` and
        ``A.dot(v)`` go through ``A.operator``, never reading the dense matrix.

    Raises
    ------
    TypeError
        If `c` or `r` is not numeric.

    See Also
    --------
    scipy.linalg.toeplitz : the dense copy.
    materialize : a writable dense copy of this view.

    Examples
    --------
    >>> import stridedop
    >>> stridedop.toeplitz([1, 2, 3], [1, 4, 5, 6])
    OperatorView([[1, 4, 5, 6],
                  [2, 1, 4, 5],
                  [3, 2, 1, 4]], dtype=int64,
      operator=<MatrixOperator (3, 4) int64: 6-tap convolution; 96 B dense, 48 B held>)
    """
    c = _as_vectors(c, "c")
    r = c.conjugate() if r is None else _as_vectors(r, "r")
    values, batch, rows, columns = _values(c, r, c[..., ::-1])  # (..., M + N - 1)
    if 0 in (rows, columns) or math.prod(batch) == 0:
        return _empty((*batch, rows, columns), values.dtype)
    # T[i, j] = values[(M - 1) + j - i]: a correlation padded by M - 1 on both sides.
    return _banded_view(values, columns, [(rows - 1, rows - 1)])


def hankel(c: np.typing.ArrayLike, r: np.typing.ArrayLike | None = None) -> np.ndarray:
    """Hankel matrix as a read-only view, equal to ``scipy.linalg.hankel(c, r)``.

    Parameters
    ----------
    c : (..., M) array_like
        First column. Leading axes are a batch (SciPy before 1.19 flattens them instead).
    r : (..., N) array_like, optional
        Last row (``r[..., 0]`` is ignored). Default: zeros.

    Returns
    -------
    A : (..., M, N) ndarray
        A read-only view of dtype ``np.result_type(c, r)`` over one buffer of ``M + N - 1``
        entries per matrix: ``A[..., i, j] == c[..., i + j]`` for ``i + j < M``, else
        ``r[..., i + j - M + 1]``.

    Raises
    ------
    TypeError
        If `c` or `r` is not numeric.

    See Also
    --------
    scipy.linalg.hankel : the dense copy.

    Examples
    --------
    >>> import stridedop
    >>> stridedop.hankel([1, 17, 99])
    OperatorView([[ 1, 17, 99],
                  [17, 99,  0],
                  [99,  0,  0]], dtype=int64,
      operator=<MatrixOperator (3, 3) int64: 5-tap convolution, reversed columns; 72 B dense, 40 B held>)
    """
    c = _as_vectors(c, "c")
    r = np.zeros_like(c) if r is None else _as_vectors(r, "r")
    values, batch, rows, columns = _values(c, r, c)  # H[i, j] = values[i + j]
    if 0 in (rows, columns) or math.prod(batch) == 0:
        return _empty((*batch, rows, columns), values.dtype)
    # With its columns reversed, a Hankel matrix is the Toeplitz matrix of the reversed values.
    return _banded_view(values[..., ::-1], columns, [(rows - 1, rows - 1)], reverse=True)


def circulant(c: np.typing.ArrayLike) -> np.ndarray:
    """Circulant matrix as a read-only view, equal to ``scipy.linalg.circulant(c)``.

    Parameters
    ----------
    c : (..., N) array_like
        First column. Leading axes are a batch.

    Returns
    -------
    A : (..., N, N) ndarray
        A read-only view of `c`'s dtype over one buffer of ``2N - 1`` entries per matrix:
        ``A[..., i, j] == c[..., (i - j) % N]``.

    Raises
    ------
    TypeError
        If `c` is not numeric.

    See Also
    --------
    scipy.linalg.circulant : the dense copy.

    Examples
    --------
    >>> import stridedop
    >>> stridedop.circulant([1, 2, 3])
    OperatorView([[1, 3, 2],
                  [2, 1, 3],
                  [3, 2, 1]], dtype=int64,
      operator=<MatrixOperator (3, 3) int64: 3-tap convolution; 72 B dense, 40 B held>)
    """
    c = _as_vectors(c, "c")
    size = c.shape[-1]
    if size == 0 or c.size == 0:
        return _empty((*c.shape[:-1], size, size), c.dtype)
    # Circular padding of an N-tap kernel on N inputs: tap r lands at x - o = r - lo (mod N)
    # with lo = (N - 1) // 2, and A[o, x] must be c[(o - x) % N].
    lo = (size - 1) // 2
    return _banded_view(c[..., (lo - np.arange(size)) % size], size, "circular")


def convolution_matrix(
    a: np.typing.ArrayLike, n: int, mode: Literal["full", "valid", "same"] = "full"
) -> np.ndarray:
    """Convolution matrix as a read-only view, equal to ``scipy.linalg.convolution_matrix``.

    ``A @ v`` equals ``np.convolve(a, v, mode)`` for ``v`` of length `n`.

    Parameters
    ----------
    a : (..., K) array_like
        The kernel. Leading axes are a batch.
    n : int
        Length of the vectors ``A`` multiplies.
    mode : {'full', 'valid', 'same'}
        As in `numpy.convolve`: ``K + n - 1``, ``max(K, n) - min(K, n) + 1`` or ``max(K, n)``
        rows.

    Returns
    -------
    A : (..., rows, n) ndarray
        A read-only view of `a`'s dtype over one buffer of ``rows + n - 1`` entries per matrix.

    Raises
    ------
    ValueError
        If `n` is not a positive integer, `a` is empty or `mode` is unknown.
    TypeError
        If `a` is not numeric.

    See Also
    --------
    scipy.linalg.convolution_matrix : the dense copy.

    Examples
    --------
    >>> import numpy as np
    >>> import stridedop
    >>> A = stridedop.convolution_matrix([-1, 4, -2], 5, mode="same")
    >>> print(np.asarray(A))
    [[ 4 -1  0  0  0]
     [-2  4 -1  0  0]
     [ 0 -2  4 -1  0]
     [ 0  0 -2  4 -1]
     [ 0  0  0 -2  4]]
    >>> v = np.array([1, 2, 3, 4, 5])
    >>> np.array_equal(A @ v, np.convolve([-1, 4, -2], v, mode="same"))
    True
    """
    n = as_int(n, "n")
    if n <= 0:
        raise ValueError(f"`n` must be a positive integer, got {n}")
    a = _as_vectors(a, "a")
    if a.size == 0:
        raise ValueError(f"`a` must have at least one element (len(a) >= 1), got shape {a.shape}")
    if mode not in ("full", "valid", "same"):
        raise ValueError(f"`mode` must be one of 'full', 'valid', 'same', got {mode!r}")
    taps = a.shape[-1]
    shorter, longer = min(n, taps), max(n, taps)
    # Row i of the full matrix is row i + first of this mode's: A[i, j] = a[i + first - j].
    if mode == "full":
        rows, first = taps + n - 1, 0
    elif mode == "same":
        rows, first = longer, (shorter - 1) // 2
    else:
        rows, first = longer - shorter + 1, shorter - 1
    # As a correlation with the reversed kernel: A[i, j] = flipped[j - i + lo].
    lo = taps - 1 - first
    hi = rows - 1 - n - lo + taps
    return _banded_view(a[..., ::-1], n, [(lo, hi)])
