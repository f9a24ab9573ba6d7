"""The operator as a ``scipy.sparse`` array, built straight from the geometry."""

from __future__ import annotations

import importlib
import itertools
import math
from types import ModuleType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._buffer import strided_view
from ._geometry import Axis, Geometry, input_positions, position_dtype
from ._memory import INTP_MAX, DescribedMemoryError, format_bytes, refused_allocation

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


def _column_dtype(geometry: Geometry, steps: list[int]) -> type:
    """int32 or int64 for the column arithmetic, or Python ints (object) where int64 could overflow.

    Along axis i the parts of a column, ``(o * s - lo) * step`` and ``r * d * step``, are bounded
    by ``max(o * s, lo, r * d, m) * step``; their sum over the axes, with the channel's part, must
    stay in the dtype. (A one-tap axis has its one tap at 0, whatever its dilation.)
    """
    total = geometry.input_size  # bounds the channel's part
    for axis, step in zip(geometry.axes, steps):
        reach = max(axis.output * axis.stride, axis.lo, axis.kernel * axis.tap_dilation, axis.size)
        total += 2 * reach * step
    if total < 2**31:
        return np.int32
    return np.int64 if total < 2**62 else object


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
    dilation = axis.tap_dilation
    o: np.ndarray = np.arange(axis.output, dtype=position_dtype(axis))  # Python ints past int64
    first = np.maximum(0, -((o * axis.stride - axis.lo) // dilation))  # ceil((lo - o*s) / d)
    stop = np.minimum(axis.kernel, (axis.size - 1 + axis.lo - o * axis.stride) // dilation + 1)
    count = np.maximum(stop - first, 0)
    first = np.where(count > 0, first, 0)
    edges = np.flatnonzero((np.diff(first) != 0) | (np.diff(count) != 0)) + 1
    starts = [0, *edges.tolist()]
    stops = [*edges.tolist(), axis.output]
    return [(a, b, int(first[a]), int(count[a])) for a, b in zip(starts, stops)]


def _write_split_columns(
    rows: np.ndarray,
    combination: tuple[tuple[int, int, int, int], ...],
    geometry: Geometry,
    steps: list[int],
    channel_part: np.ndarray,
) -> None:
    """Write the columns of one block of `sparse_matrix` with zero padding, in one pass.

    `rows` is the block ``(*outputs, F * inner)`` channels-last, ``(F, *outputs, inner)``
    channels-first. Each position ``o * s + r * d - lo`` splits into a part of the output and one
    of the tap, so every column is the sum of an output's part and a row's, the row
    ``(F, *taps, Cg)`` or ``(Cg, *taps)`` laid out as the block's rows are.
    """
    n = geometry.ndim
    filters, cg = channel_part.shape
    outputs: Any = 0
    taps: Any = 0
    for (start, stop, first, count), axis, step in zip(combination, geometry.axes, steps):
        dilation = axis.tap_dilation
        shifts: np.ndarray = np.arange(start, stop, dtype=channel_part.dtype) * axis.stride - axis.lo
        outputs = np.add.outer(outputs, shifts * step)
        taps = np.add.outer(taps, (first + np.arange(count, dtype=channel_part.dtype)) * (dilation * step))
    if geometry.layout == "channels_last":
        row = (channel_part.reshape(filters, *(1,) * n, cg) + taps[..., None]).reshape(-1)
    else:
        row = (channel_part.reshape(filters, cg, *(1,) * n) + taps).reshape(filters, *(1,) * n, -1)
    np.add(outputs[..., None], row, out=rows, casting="unsafe")


def _split_rows(rows: np.ndarray, row_shape: tuple[int, ...]) -> np.ndarray:
    """The view of `rows` (its last axis contiguous) with that axis split into `row_shape`."""
    steps = [math.prod(row_shape[i + 1 :]) * rows.itemsize for i in range(len(row_shape))]
    return as_strided(rows, (*rows.shape[:-1], *row_shape), (*rows.strides[:-1], *steps))


def _write_source_columns(
    columns: np.ndarray,
    combination: tuple[tuple[int, int, int, int], ...],
    geometry: Geometry,
    steps: list[int],
    channel_part: np.ndarray,
) -> None:
    """Write the columns of one block of `sparse_matrix` in a padding mode other than zeros.

    `columns` is the block ``(*outputs, F, *taps, Cg)`` channels-last, ``(F, *outputs, Cg, *taps)``
    channels-first. The mode maps each position ``o * s + r * d - lo`` onto the input entry it
    reads, so a column does not split into a part of the output and one of the tap: one pass
    per axis.
    """
    n = geometry.ndim
    channels_last = geometry.layout == "channels_last"
    filters, cg = channel_part.shape
    channel_shape = [1] * columns.ndim
    if channels_last:
        channel_shape[n], channel_shape[-1] = filters, cg
    else:
        channel_shape[0], channel_shape[n + 1] = filters, cg
    columns[...] = channel_part.reshape(channel_shape)
    for i, ((start, stop, first, count), axis, step) in enumerate(zip(combination, geometry.axes, steps)):
        position = input_positions(axis, range(start, stop), range(first, first + count))
        term_shape = [1] * columns.ndim
        if channels_last:
            term_shape[i], term_shape[n + 1 + i] = stop - start, count
        else:
            term_shape[1 + i], term_shape[n + 2 + i] = stop - start, count
        source = geometry.mode.source(position, axis.size).astype(np.int64)  # an input entry
        columns += (source * step).astype(columns.dtype).reshape(term_shape)


def sparse_matrix(kernel: np.ndarray, geometry: Geometry, format: str = "csr") -> Any:
    """CSR array of the operator, ``(prod(output_shape), prod(input_shape))``, then `format`.

    Built from index arithmetic alone: along each spatial axis the outputs fall into a few runs
    that read the same range of taps (`_tap_runs`). For one run per axis, the entries form a
    regular block ``(*outputs, F, *taps, C)`` (channels-first: ``(F, *outputs, C, *taps)``) that
    sits in the CSR arrays at fixed strides, so its column indices are written as broadcast sums
    of small terms and its values as a broadcast of one slice of the kernel.
    """
    sparse = require_scipy("`to_sparse`")
    rows = geometry.output_size
    if (rows + 1) * 8 > INTP_MAX:  # the row pointers alone
        raise DescribedMemoryError(_rows_refusal(rows))
    with refused_allocation(lambda: _rows_refusal(rows)):  # (the entries have their own message)
        return _csr_array(sparse, kernel, geometry).asformat(format)


def _rows_refusal(rows: int) -> str:
    """Why the sparse export of an operator with `rows` rows ran out of memory."""
    return (
        f"the sparse operator has {rows} rows, more than this process may hold; apply the operator "
        "instead (`op @ x`, `op.H @ y`), which needs no matrix"
    )


def _csr_array(sparse: ModuleType, kernel: np.ndarray, geometry: Geometry) -> Any:
    """`sparse_matrix` in CSR format."""
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
    # Input channel of (filter, channel-in-group): g(f) * Cg + c, as a column offset, in the dtype
    # of the column arithmetic.
    wide = _column_dtype(geometry, steps)
    group_of_filter: np.ndarray = np.arange(filters, dtype=wide) // geometry.group_filters
    channel_part = (group_of_filter[:, None] * cg + np.arange(cg, dtype=wide)) * channel_step
    scale = filters * cg if channels_last else cg  # entries of one output pixel per (tap, channel)
    filter_stride = math.prod(totals) * cg  # channels-first: entries of one filter

    for combination in itertools.product(*runs):
        tap_counts = [count for _, _, _, count in combination]
        if 0 in tap_counts:
            continue
        lengths = [stop - start for start, stop, _, _ in combination]
        inner = math.prod(tap_counts) * cg  # entries of one output and one filter
        # Entries before output o: sum_i prod_{l<i} c_l * cum_i(o_i) * prod_{l>i} S_l (* F, * Cg).
        base = 0
        output_strides = []
        for i, (start, _, _, _) in enumerate(combination):
            unit = math.prod(tap_counts[:i]) * math.prod(totals[i + 1 :]) * scale
            base += unit * int(cumulative[i][start])
            output_strides.append(unit * tap_counts[i])
        # The block as rows, each row contiguous in the CSR arrays: (*outputs, F * inner) with
        # rows (F, *taps, C) channels-last, (F, *outputs, inner) with rows (C, *taps) channels-first.
        if channels_last:
            shape, strides = (*lengths, filters * inner), (*output_strides, 1)
        else:
            shape, strides = (filters, *lengths, inner), (filter_stride, *output_strides, 1)
        target = strided_view(indices, base, shape, strides)
        values = strided_view(data, base, shape, strides)

        block = kernel[tuple(slice(first, first + count) for _, _, first, count in combination)]
        if channels_last:  # (*taps, Cg, F) -> (F, *taps, Cg)
            values[...] = block.transpose(n + 1, *range(n + 1)).reshape(filters * inner)
        else:  # -> (F, Cg, *taps)
            values[...] = block.transpose(n + 1, n, *range(n)).reshape(filters, *(1,) * n, inner)

        # Column of (output o, filter f, tap r, channel c): the channel's part plus, along each
        # axis, the input position o * s + r * d - lo (zeros) or its source (the other modes)
        # times the axis's step.
        if zeros:
            _write_split_columns(target, combination, geometry, steps, channel_part)
        else:  # the block (*outputs, F, *taps, Cg) channels-last, (F, *outputs, Cg, *taps) channels-first
            row_shape = (filters, *tap_counts, cg) if channels_last else (cg, *tap_counts)
            _write_source_columns(_split_rows(target, row_shape), combination, geometry, steps, channel_part)

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
    return matrix
