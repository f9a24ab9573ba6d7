"""The operator as a ``scipy.sparse`` array, built straight from the geometry."""

from __future__ import annotations

import importlib
import itertools
import math
from types import ModuleType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._geometry import Axis, Geometry
from ._memory import format_bytes, refused_allocation

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


def _position_dtype(axis: Axis) -> type:
    """int64, or Python ints (object) where huge strides, dilations or padding could overflow it."""
    largest = max(axis.output * axis.stride, axis.kernel * axis.dilation, axis.lo)
    return np.int64 if largest < 2**62 else object


def _sparse_refusal(nnz: int, entry_bytes: int) -> str:
    """Why the sparse export ran out of memory, with its size and the alternatives."""
    needed = nnz * entry_bytes
    return (
        f"the sparse operator has {nnz} structural non-zeros, {format_bytes(needed)} ({needed} bytes) of "
        "indices and values, more memory than this process may use; apply the operator instead "
        "(`op @ x`, `op.H @ y`), which needs no matrix"
    )


def _tap_runs(axis: Axis, zeros: bool) -> list[tuple[int, int, int, int]]:
    """Runs ``(start, stop, first, count)`` of outputs whose in-range taps are the same.

    Output ``o`` reads input ``o * s + r * d - lo``; the taps that land inside ``[0, m)`` are
    ``first <= r < first + count``. Interior outputs share one run, each border adds a few.
    The padding modes other than zeros give every tap an input entry: one run with all the taps.
    """
    if not zeros:
        return [(0, axis.output, 0, axis.kernel)]
    dilation = axis.dilation if axis.kernel > 1 else 1  # one tap: any dilation, even past int64
    o = np.arange(axis.output, dtype=np.int64)
    first = np.maximum(0, -((o * axis.stride - axis.lo) // dilation))  # ceil((lo - o*s) / d)
    stop = np.minimum(axis.kernel, (axis.size - 1 + axis.lo - o * axis.stride) // dilation + 1)
    count = np.maximum(stop - first, 0)
    first = np.where(count > 0, first, 0)
    edges = np.flatnonzero((np.diff(first) != 0) | (np.diff(count) != 0)) + 1
    starts = [0, *edges.tolist()]
    stops = [*edges.tolist(), axis.output]
    return [(a, b, int(first[a]), int(count[a])) for a, b in zip(starts, stops)]


def sparse_matrix(kernel: np.ndarray, geometry: Geometry, format: str = "csr") -> Any:
    """CSR array of the operator, ``(prod(output_shape), prod(input_shape))``, then `format`.

    Built from index arithmetic alone: along each spatial axis the outputs fall into a few runs
    that read the same range of taps (`_tap_runs`). For one run per axis, the entries form a
    regular block ``(*outputs, F, *taps, C)`` (channels-first: ``(F, *outputs, C, *taps)``) that
    sits in the CSR arrays at fixed strides, so its column indices are written as a broadcast
    sum of small per-axis terms and its values as a broadcast of one slice of the kernel.
    """
    sparse = require_scipy("`to_sparse`")
    kernel = kernel.astype(sparse_dtype(kernel.dtype), copy=False)
    n = geometry.ndim
    cg, filters = geometry.group_channels, geometry.filters
    channels_last = geometry.layout == "channels_last"
    sizes = geometry.spatial_input
    # Column steps of each spatial axis and of the channel axis in the input's flat order.
    steps = [math.prod(sizes[i + 1 :]) for i in range(n)]
    if channels_last:
        steps = [step * geometry.channels for step in steps]
        channel_step = 1
    else:
        channel_step = math.prod(sizes)
    zeros = geometry.mode.name == "zeros"
    runs = [_tap_runs(axis, zeros) for axis in geometry.axes]
    per_output = [np.zeros(axis.output, dtype=np.int64) for axis in geometry.axes]
    for counts, axis_runs in zip(per_output, runs):
        for start, stop, _, count in axis_runs:
            counts[start:stop] = count
    totals = [int(counts.sum()) for counts in per_output]  # (output, tap) pairs per axis
    nnz = math.prod(totals) * cg * filters
    index_dtype = np.int32 if max(geometry.input_size, nnz) < 2**31 else np.int64
    entry_bytes = np.dtype(index_dtype).itemsize + kernel.dtype.itemsize
    with refused_allocation(lambda: _sparse_refusal(nnz, entry_bytes)):
        indices = np.empty(nnz, dtype=index_dtype)
        data = np.empty(nnz, dtype=kernel.dtype)
    cumulative = [np.concatenate([[0], np.cumsum(counts)]) for counts in per_output]
    # Input channel of (filter, channel-in-group): g(f) * Cg + c, as a column offset.
    group_of_filter = np.arange(filters) // geometry.group_filters
    channel_part = (group_of_filter[:, None] * cg + np.arange(cg)) * channel_step

    for combination in itertools.product(*runs):
        tap_counts = [count for _, _, _, count in combination]
        if 0 in tap_counts:
            continue
        lengths = [stop - start for start, stop, _, _ in combination]
        inner = math.prod(tap_counts) * cg  # entries of one row
        # Entries before output o: sum_i prod_{l<i} c_l * cum_i(o_i) * prod_{l>i} S_l (* F, * Cg).
        scale = filters * cg if channels_last else cg
        base = 0
        output_strides = []
        for i, (start, _, _, _) in enumerate(combination):
            unit = math.prod(tap_counts[:i]) * math.prod(totals[i + 1 :]) * scale
            base += unit * int(cumulative[i][start])
            output_strides.append(unit * tap_counts[i])
        tap_strides = [math.prod(tap_counts[i + 1 :]) for i in range(n)]
        if channels_last:  # (*outputs, F, *taps, C)
            shape = (*lengths, filters, *tap_counts, cg)
            strides = (*output_strides, inner, *(t * cg for t in tap_strides), 1)
        else:  # (F, *outputs, C, *taps)
            shape = (filters, *lengths, cg, *tap_counts)
            strides = (math.prod(totals) * cg, *output_strides, math.prod(tap_counts), *tap_strides)
        target = as_strided(indices[base:], shape, tuple(s * indices.itemsize for s in strides))
        values = as_strided(data[base:], shape, tuple(s * data.itemsize for s in strides))

        # Column: channel part, then each axis' input position times its step.
        channel_shape = [1] * len(shape)
        if channels_last:
            channel_shape[n], channel_shape[-1] = filters, cg
        else:
            channel_shape[0], channel_shape[n + 1] = filters, cg
        target[...] = channel_part.reshape(channel_shape)
        for i, (axis, (start, stop, first, count)) in enumerate(zip(geometry.axes, combination)):
            wide = _position_dtype(axis)
            position: np.ndarray = (
                np.arange(start, stop, dtype=wide)[:, None] * axis.stride
                + (first + np.arange(count, dtype=wide))[None, :] * axis.dilation
                - axis.lo
            )
            if not zeros:
                position = geometry.mode.source(position, axis.size)
            term_shape = [1] * len(shape)
            if channels_last:
                term_shape[i], term_shape[n + 1 + i] = stop - start, count
            else:
                term_shape[1 + i], term_shape[n + 2 + i] = stop - start, count
            column = position.astype(np.int64) * steps[i]  # an input index: it fits in int64
            target += column.astype(index_dtype).reshape(term_shape)
        block = kernel[tuple(slice(first, first + count) for _, _, first, count in combination)]
        if channels_last:  # (*taps, Cg, F) -> (F, *taps, Cg)
            values[...] = np.moveaxis(block, -1, 0)
        else:  # -> (F, Cg, *taps)
            values[...] = block.transpose(n + 1, n, *range(n)).reshape(filters, *(1,) * n, cg, *tap_counts)

    # Entries per row: the product of the per-axis tap counts, times the channels of a group.
    per_row = per_output[0]
    for counts in per_output[1:]:
        per_row = np.multiply.outer(per_row, counts)
    per_row = per_row.ravel() * cg
    rows = np.repeat(per_row, filters) if channels_last else np.tile(per_row, filters)
    indptr = np.zeros(rows.size + 1, dtype=index_dtype)
    np.cumsum(rows, out=indptr[1:])
    matrix = sparse.csr_array((data, indices, indptr), shape=(geometry.output_size, geometry.input_size))
    if geometry.mode.folds:
        matrix.sum_duplicates()  # taps that read the same input entry share a column
    return matrix.asformat(format)
