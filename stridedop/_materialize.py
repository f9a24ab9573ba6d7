"""`materialize`: the one public path that copies an operator into a dense, writable array."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._algebra import BaseOperator
from ._dask import is_zarr_array, write_zarr
from ._dense import check_allocation, check_out, fill_dense
from ._geometry import as_numeric_array
from ._operator import ConvOperator

__all__ = ["materialize"]


def materialize(a: Any, *, out: Any = None, max_bytes: int | None = None) -> Any:
    """Return a dense, writable, C-contiguous copy of an operator view or any array.

    This is the only function in stridedop that copies the dense operator. For a view made by
    this package (or a transpose of one) it allocates zeros and writes only the kernel entries,
    which is much faster than reading every entry through the strided view.

    Parameters
    ----------
    a : ndarray, array_like or operator
        A view from `conv_view`, `ConvOperator.view` or the structured matrices, a slice of
        one, any numeric array, a `ConvOperator` (of any padding mode, with or without a view),
        or a sum or product of operators (its dense tensor ``(*output_shape, *input_shape)``).
    out : ndarray or zarr.Array, optional
        Array (for instance a `numpy.memmap`) of the same shape and dtype to fill and return
        instead of allocating one. It must be writable. A zarr array (optional extra ``dask``)
        is written chunk by chunk in parallel threads; when its fill value is 0 and it holds no
        chunks yet, only the chunks in the operator's band (any other array: the chunks that are
        not all zeros) are written. Pass a new zarr array: a failed write leaves it partial.
    max_bytes : int, optional
        Largest allocation allowed; default: the memory available on this machine. With `out`
        it is only checked to be valid.

    Returns
    -------
    dense : ndarray
        ``out`` if given, else a new C-contiguous array that owns its memory, of `a`'s shape and
        dtype, equal to `a`.

    Raises
    ------
    MemoryError
        Before allocating anything, if the array needs more than `max_bytes`; the message gives
        both sizes and the alternatives.
    ValueError
        If `out` has the wrong shape or is not writable, or `max_bytes` is not a
        non-negative int.
    TypeError
        If `a` is not numeric (object, str, ...), or `out` is not an ndarray or has the wrong
        dtype.

    See Also
    --------
    conv_view, ConvOperator.to_matrix

    Examples
    --------
    >>> import numpy as np
    >>> import stridedop
    >>> W = stridedop.conv_view(np.ones((2, 1, 1)), (4, 1))
    >>> D = stridedop.materialize(W)
    >>> D.flags.writeable, D.flags.c_contiguous, D.flags.owndata
    (True, True, True)
    >>> np.array_equal(D, W)
    True
    """
    if isinstance(a, ConvOperator):
        return a.materialize(out=out, max_bytes=max_bytes)
    if isinstance(a, BaseOperator):  # a lazy sum or product: its dense matrix, as the tensor
        a = a.to_matrix(max_bytes).reshape(*a.output_shape, *a.input_shape)
    if is_zarr_array(out):
        check_allocation((0,), np.dtype(out.dtype), max_bytes)  # validates `max_bytes` alone
        return write_zarr(a, out)
    array = as_numeric_array(a, "a")
    if out is None:
        check_allocation(array.shape, array.dtype, max_bytes)
        return fill_dense(array)
    return fill_dense(array, check_out(out, array.shape, array.dtype, max_bytes))
