"""The operator as a ``scipy.sparse`` array, built straight from the geometry."""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any

import numpy as np

from ._geometry import Axis, Geometry

__all__ = ["require_scipy", "sparse_dtype", "sparse_matrix"]


def require_scipy(feature: str) -> ModuleType:
    """Import ``scipy.sparse`` (and its linalg) lazily, with a clear message when it is missing."""
    try:
        importlib.import_module("scipy.sparse.linalg")
        return importlib.import_module("scipy.sparse")
    except ImportError as error:
        raise ImportError(
            f"{feature} needs SciPy, an optional dependency of stridedop; "
            "install it with `pip install scipy` (or `pip install stridedop[scipy]`)"
        ) from error


def sparse_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype `scipy.sparse` holds `dtype`'s values in: native byte order, float16 as float32.

    SciPy's sparse arrays support neither byte-swapped dtypes nor float16; both conversions are
    exact.
    """
    dtype = dtype.newbyteorder("=")
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _offsets(axis: Axis) -> np.ndarray:
    """Offsets ``o*s + r*d - lo`` from the input's start of one axis's (output, tap) pairs, ``(O, k)``.

    In int64, or in Python ints (an object array) where huge strides, dilations or padding
    could overflow it; a padding mode's `source` maps either to an input index.
    """
    largest = max(axis.output * axis.stride, axis.kernel * axis.dilation, axis.lo)
    dtype = np.int64 if largest < 2**62 else object
    return (
        np.arange(axis.output, dtype=dtype)[:, None] * axis.stride
        + np.arange(axis.kernel, dtype=dtype)[None, :] * axis.dilation
        - axis.lo
    )


def sparse_matrix(kernel: np.ndarray, geometry: Geometry, format: str = "csr") -> Any:
    """CSR array of the operator, ``(prod(output_shape), prod(input_shape))``, then `format`.

    Every row ``(o, f)`` holds the taps that land inside the input, each with the channels of
    its group; the column of a tap follows from the output position alone, so the index array
    is one broadcast sum of a small per-(output, tap) part and a small per-channel part.
    """
    sparse = require_scipy("`to_sparse`")
    kernel = kernel.astype(sparse_dtype(kernel.dtype), copy=False)
    n = geometry.ndim
    groups, fg, cg = geometry.groups, geometry.group_filters, geometry.group_channels
    channels_last = geometry.layout == "channels_last"
    sizes = geometry.spatial_input
    # Column steps of each spatial axis and of the channel axis in the input's flat order.
    spatial_steps = [math.prod(sizes[i + 1 :]) for i in range(n)]
    if channels_last:
        spatial_steps = [step * geometry.channels for step in spatial_steps]
        channel_step = 1
    else:
        channel_step = math.prod(sizes)
    index_dtype = np.int32 if max(geometry.input_size, geometry.nonzero_count) < 2**31 else np.int64

    # Part that depends on (output position, tap): arrays of shape (*o, *k).
    spatial_part = np.zeros(geometry.spatial_output + geometry.spatial_kernel, dtype=index_dtype)
    inside = np.ones(spatial_part.shape, dtype=bool)
    for i, (axis, step) in enumerate(zip(geometry.axes, spatial_steps)):
        shape = [1] * (2 * n)
        shape[i], shape[n + i] = axis.output, axis.kernel
        position = _offsets(axis).reshape(shape)
        source = geometry.mode.source(position, axis.size).astype(np.int64)  # -1 where a tap reads a zero
        inside = inside & (source >= 0)
        spatial_part = spatial_part + (np.maximum(source, 0) * step).astype(index_dtype)
    channel_part = (np.arange(groups)[:, None] * cg + np.arange(cg)[None, :]) * channel_step
    channel_part = channel_part.astype(index_dtype)  # (G, Cg)

    # Full index arrays in row-major row order, entries within a row in increasing column
    # order: channels-last (*o, G, Fg, *k, Cg), channels-first (G, Fg, *o, Cg, *k).
    # The output positions are one axis here (o, below): with N of them the arrays would have
    # 2N + 3 axes, beyond NumPy's 64 for N = 31.
    out_shape, kernel_shape = geometry.spatial_output, geometry.spatial_kernel
    outputs, ones = math.prod(out_shape), (1,) * n
    arranged = np.moveaxis(kernel.reshape(*kernel_shape, cg, groups, fg), (n + 1, n + 2), (0, 1))
    if channels_last:
        spatial_shape = (outputs, 1, 1, *kernel_shape, 1)
        channel_shape = (1, groups, 1, *ones, cg)
        values = arranged.reshape(1, groups, fg, *kernel_shape, cg)
    else:
        spatial_shape = (1, 1, outputs, 1, *kernel_shape)
        channel_shape = (groups, 1, 1, cg, *ones)
        values = np.moveaxis(arranged, -1, 2).reshape(groups, fg, 1, cg, *kernel_shape)
    columns = spatial_part.reshape(spatial_shape) + channel_part.reshape(channel_shape)
    # (np.broadcast_shapes handles at most 32 axes)
    full_shape = tuple([max(a, b) for a, b in zip(columns.shape, values.shape)])
    columns = np.broadcast_to(columns, full_shape)
    values = np.broadcast_to(values, full_shape)
    if inside.all():
        indices = np.array(columns, copy=True).reshape(-1)  # writable: scipy sorts in place
        data = np.array(values, copy=True).reshape(-1)
    else:
        keep = np.broadcast_to(inside.reshape(spatial_shape), full_shape)
        indices = columns[keep]
        data = values[keep]

    # Entries per row: taps inside the input times the channels of a group.
    per_output = inside.reshape(*out_shape, -1).sum(axis=-1).ravel() * cg
    counts = (
        np.tile(per_output, geometry.filters)
        if not channels_last
        else np.repeat(per_output, geometry.filters)
    )
    indptr = np.zeros(counts.size + 1, dtype=index_dtype)
    np.cumsum(counts, out=indptr[1:])
    matrix = sparse.csr_array((data, indices, indptr), shape=(geometry.output_size, geometry.input_size))
    if geometry.mode.folds:
        matrix.sum_duplicates()  # taps that read the same input entry share a column
    return matrix.asformat(format)
