"""The dense-writing engine behind `materialize`: the guard before allocating, and the writers.

A view made by stridedop is copied by allocating zeros and writing only its kernel entries; any
other array by one NumPy copy. `stridedop.materialize` (in `_materialize`) is the public front.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ._buffer import (
    BufferPlan,
    canonical_permutation,
    folded_kernel_view,
    kernel_taps,
    kernel_view,
    strided_view,
)
from ._geometry import Axis, Geometry, input_positions, outputs_inside, positions_in_range
from ._memory import DescribedMemoryError, available_memory, format_bytes, refused_allocation
from ._modes import PaddingMode, affine_runs
from ._view import find_operator_view

__all__ = ["block_hits", "check_allocation", "check_out", "dense_allocation", "dense_block", "fill_dense"]


def _refusal(shape: tuple[int, ...], dtype: np.dtype, what: str) -> str:
    """Why a dense array of `shape` and `dtype` is refused, with the alternatives."""
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    return (
        f"the dense array of shape {shape} and dtype {dtype} needs {format_bytes(needed)} "
        f"({needed} bytes), more than {what}. Alternatives: pass `out=` a memory map "
        "(numpy.lib.format.open_memmap), apply the operator without building it (`op @ x`, "
        "`op.H @ y`), or export it with `op.to_sparse()`"
    )


def check_allocation(shape: tuple[int, ...], dtype: np.dtype, max_bytes: Any) -> None:
    """Raise MemoryError, before allocating, if a dense `shape` array exceeds the limit."""
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if max_bytes is None:
        limit = available_memory()
        if limit is None:
            return
        what = f"the {format_bytes(limit)} ({limit} bytes) of memory available"
    else:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
            raise ValueError(f"`max_bytes` must be a non-negative int or None, got {max_bytes!r}")
        limit = int(max_bytes)
        if limit < 0:
            raise ValueError(f"`max_bytes` must be a non-negative int or None, got {max_bytes!r}")
        what = f"`max_bytes` = {format_bytes(limit)} ({limit} bytes)"
    if needed > limit:
        raise DescribedMemoryError(_refusal(shape, dtype, what))


def dense_allocation(shape: tuple[int, ...], dtype: np.dtype) -> contextlib.AbstractContextManager[None]:
    """Context for allocating a dense `shape` array: a refusal by the system gets the same message.

    `check_allocation` compares sizes before allocating, but the system may still refuse (other
    processes, overcommit rules); the user then gets sizes and alternatives, not NumPy's bare
    "Unable to allocate".
    """
    return refused_allocation(lambda: _refusal(shape, dtype, "the memory this process may use"))


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, max_bytes: Any = None) -> np.ndarray:
    """`out` if it can receive a dense array of `shape` and `dtype`, else an error naming it."""
    if max_bytes is not None:
        check_allocation((0,), dtype, max_bytes)  # validates `max_bytes` alone
    if not isinstance(out, np.ndarray):
        raise TypeError(f"`out` must be a numpy.ndarray or numpy.memmap, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"`out` has shape {out.shape}, but the array to materialize has {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"`out` has dtype {out.dtype}, but the array to materialize has {dtype}")
    if not out.flags.writeable:
        raise ValueError("`out` is read-only; pass a writable array or memory map")
    return out


def fill_dense(
    array: np.ndarray,
    out: np.ndarray | None = None,
    *,
    zeroed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Copy `array` into `out` (allocated C-contiguous when None) and return `out`.

    If `array` is an `OperatorView` (or a view of one with its axes permuted), only the kernel
    entries are written, read from the buffer of ``W.operator``, into an `out` that is zeroed
    first (unless `zeroed` says it already is); `progress(done, total)` is then called after
    each kernel tap.
    """
    found = _buffer_of(array)
    permutation = None if found is None else _view_permutation(array, *found)
    if permutation is None or (out is not None and not out.flags.c_contiguous):
        if out is None:
            with dense_allocation(array.shape, array.dtype):
                return np.array(array, order="C", copy=True)
        out[...] = array
        if progress is not None:
            progress(1, 1)
        return out
    buffer, geometry, plan = found  # type: ignore[misc]
    if out is None:
        with dense_allocation(array.shape, array.dtype):
            out = np.zeros(array.shape, dtype=array.dtype)
    elif not zeroed:
        out[...] = 0
    # Axes of `out` in the canonical (*o, F, *m, C) order: invert the permutation.
    canonical_out = out.transpose(np.argsort(permutation))
    _write_kernel_entries(canonical_out, out, buffer, geometry, plan, progress)
    return out


def _buffer_of(array: np.ndarray) -> tuple[np.ndarray, Geometry, BufferPlan] | None:
    """The buffer behind `array`'s `OperatorView` with its geometry and buffer plan, or None."""
    view = find_operator_view(array)
    strided = getattr(view.operator, "_strided", lambda: None)() if view is not None else None
    return None if strided is None else (strided.buffer, strided.geometry, strided.plan)


def _view_permutation(
    array: np.ndarray, buffer: np.ndarray, geometry: Geometry, plan: BufferPlan
) -> tuple[int, ...] | None:
    """If `array` is the operator view of `buffer` with its axes permuted, that permutation."""
    if array.dtype != buffer.dtype:  # a reinterpretation (`W.view(np.int64)`, byte-swapped): bits, not values
        return None
    canonical = strided_view(buffer, plan.origin, geometry.canonical_shape, plan.steps)
    if array.ndim != canonical.ndim:
        return None
    if array.__array_interface__["data"][0] != canonical.__array_interface__["data"][0]:
        return None
    unused = list(range(canonical.ndim))
    permutation = []
    for size, stride in zip(array.shape, array.strides):
        for axis in unused:
            if canonical.shape[axis] == size and canonical.strides[axis] == stride:
                permutation.append(axis)
                unused.remove(axis)
                break
        else:
            return None
    return tuple(permutation)


def _write_kernel_entries(
    canonical_out: np.ndarray,
    out: np.ndarray,
    buffer: np.ndarray,
    geometry: Geometry,
    plan: BufferPlan,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Write every kernel entry into its places in the zeroed dense operator.

    Output ``o`` applies tap ``r`` to input ``x = o*s + r*d - lo``: along ``o`` the target steps by
    ``out_o + s * out_x`` and along ``r`` by ``d * out_x``, so one strided assignment writes many
    outputs, filters, taps and channels at once. The output positions are cut into boxes: in the
    interior, where every tap lands inside the input, one assignment writes all taps (each block
    of the output is visited once, in memory order); near the borders, where some taps fall in the
    padding, each tap is written over the outputs where it lands inside. Circular padding writes
    the folded kernel held in the buffer instead, see `_circular_placements`.
    """
    itemsize = out.itemsize
    steps = [stride // itemsize for stride in canonical_out.strides]
    n = geometry.ndim
    out_o, out_f, out_x, out_c = steps[:n], steps[n], steps[n + 1 : 2 * n + 1], steps[2 * n + 1]
    groups, group_filters = geometry.groups, geometry.group_filters
    group_channels = geometry.group_channels
    if not geometry.circular:  # the circular buffer holds the folded kernel, read further down
        kernel = kernel_view(geometry, plan, buffer)
        all_taps = kernel.transpose(n + 1, n + 2, *range(n), n)  # (groups, F // groups, *k, Cg)
    flat = out.reshape(-1)  # a view: `out` is C-contiguous
    axes = geometry.axes
    along_o = [o + axis.stride * x for o, x, axis in zip(out_o, out_x, axes)]
    along_r = [axis.dilation * x for axis, x in zip(axes, out_x)]
    filter_steps = (group_filters * out_f + group_channels * out_c, out_f)
    workers = _worker_count(out.nbytes)
    chunk_bytes = min(_CHUNK_BYTES, max(_CHUNK_BYTES // 16, out.nbytes // (8 * workers)))
    rows_per_chunk = max(1, chunk_bytes * axes[0].output // max(1, out.nbytes))

    def write(job: tuple[list[tuple[int, int]], bool]) -> None:
        box, interior = job
        if interior and 2 * n + 3 <= 64:  # all taps at once needs 2N + 3 axes; NumPy allows 64
            offset = sum(
                first * step_o - axis.lo * step_x
                for (first, _), step_o, axis, step_x in zip(box, along_o, axes, out_x)
            )
            counts = tuple(stop - first for first, stop in box)
            shape = (*counts, groups, group_filters, *geometry.spatial_kernel, group_channels)
            strided_view(flat, offset, shape, (*along_o, *filter_steps, *along_r, out_c))[...] = all_taps
            return
        for tap in kernel_taps(geometry):
            ranges = []
            for (first, stop), axis, r in zip(box, axes, tap):
                inside_first, inside_stop = positions_in_range(axis, r)
                ranges.append((max(first, inside_first), min(stop, inside_stop)))
            if any(stop <= first for first, stop in ranges):
                continue
            offset = sum(
                first * step_o + (r * axis.dilation - axis.lo) * step_x
                for (first, _), step_o, r, axis, step_x in zip(ranges, along_o, tap, axes, out_x)
            )
            counts = tuple(stop - first for first, stop in ranges)
            shape = (*counts, groups, group_filters, group_channels)
            target = strided_view(flat, offset, shape, (*along_o, *filter_steps, out_c))
            target[...] = kernel[tap].transpose(1, 2, 0)  # (groups, F // groups, Cg)

    def write_folded(job: tuple[list[tuple[int, int]], list[int], tuple[int, ...]]) -> None:
        ranges, shifts, residues = job
        offset = sum(
            first * step_o + shift * step_x
            for (first, _), step_o, shift, step_x in zip(ranges, along_o, shifts, out_x)
        )
        counts = tuple(stop - first for first, stop in ranges)
        target = strided_view(
            flat, offset, (*counts, groups, group_filters, group_channels), (*along_o, *filter_steps, out_c)
        )
        target[...] = folded[residues].transpose(1, 2, 0)  # (groups, F // groups, Cg)

    # Jobs write disjoint entries, so they can go to several threads: NumPy releases the GIL
    # while it copies, and the first-touch page faults of a large output then run on every core.
    if geometry.circular:
        folded = folded_kernel_view(geometry, plan, buffer)  # (*m, Cg, groups, F // groups)
        jobs: list[Any] = list(_circular_placements(geometry))
        write_job: Callable[[Any], None] = write_folded
    else:
        jobs = list(_output_boxes(geometry, rows_per_chunk))
        write_job = write
    if workers == 1:
        for done, job in enumerate(jobs, start=1):
            write_job(job)
            if progress is not None:
                progress(done, len(jobs))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(write_job, jobs), start=1):
            if progress is not None:
                progress(done, len(jobs))


def _worker_count(nbytes: int) -> int:
    """Threads for writing an output of `nbytes`: one for small outputs, else the usable cores."""
    if nbytes < _PARALLEL_ABOVE:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


_PARALLEL_ABOVE = 32 * 2**20  # bytes
_CHUNK_BYTES = 64 * 2**20  # dense bytes written per interior assignment (progress granularity)


def _output_boxes(geometry: Geometry, rows_per_chunk: int) -> Iterator[tuple[list[tuple[int, int]], bool]]:
    """Boxes of output positions that tile the output, each flagged interior or border.

    Along each axis the interior is where every tap lands inside the input; the interior of the
    first axis is further cut into chunks of `rows_per_chunk` positions.
    """
    segments = []
    for i, axis in enumerate(geometry.axes):
        ranges = [positions_in_range(axis, r) for r in range(axis.kernel)]
        first, stop = max(r[0] for r in ranges), min(r[1] for r in ranges)
        if first >= stop:
            segments.append([((0, axis.output), False)])
            continue
        pieces = [((0, first), False)]
        step = rows_per_chunk if i == 0 else stop - first
        pieces += [((start, min(start + step, stop)), True) for start in range(first, stop, step)]
        pieces.append(((stop, axis.output), False))
        segments.append([piece for piece in pieces if piece[0][1] > piece[0][0]])
    for combination in itertools.product(*segments):
        yield [bounds for bounds, _ in combination], all(inside for _, inside in combination)


def _circular_placements(
    geometry: Geometry,
) -> Iterator[tuple[list[tuple[int, int]], list[int], tuple[int, ...]]]:
    """Where each folded tap of a circular operator lands: boxes of outputs with a fixed shift.

    Along an axis the buffer holds, for each residue ``p`` that some tap ``r*d - lo`` reaches
    modulo ``m``, the sum of those taps; output ``o`` places it at ``x = (o*s + p) mod m``. Cut at
    the wrap-arounds, each piece is a range of ``o`` with ``x = o*s + shift``. Distinct residues
    land on distinct ``x``, so the boxes of all combinations write disjoint entries.
    """
    per_axis = []
    for axis in geometry.axes:
        size, stride = axis.size, axis.stride
        residues = sorted({(r * axis.dilation - axis.lo) % size for r in range(axis.kernel)})
        pieces = []
        for residue in residues:
            for wrap in range(((axis.output - 1) * stride + residue) // size + 1):
                shift = residue - wrap * size  # x = o * s + shift on this piece
                first, stop = outputs_inside(axis, shift)
                if stop > first:
                    pieces.append(((first, stop), shift, residue))
        per_axis.append(pieces)
    for combination in itertools.product(*per_axis):
        yield (
            [bounds for bounds, _, _ in combination],
            [shift for _, shift, _ in combination],
            tuple(residue for _, _, residue in combination),
        )


# -- blocks of the dense operator ----------------------------------------------------------------
# `to_dask` and the zarr writer build the dense operator one block at a time, where it is needed:
# a block is allocated as zeros and receives only the kernel entries that fall inside it. This
# works from the kernel and the geometry alone (no view, no buffer), so it serves every padding
# mode, the modes without a view included.


def dense_block(
    kernel: np.ndarray, geometry: Geometry, bounds: Sequence[tuple[int, int]], *, transposed: bool = False
) -> np.ndarray:
    """The block ``W[start_0:stop_0, start_1:stop_1, ...]`` of the dense operator, as a new array.

    Parameters
    ----------
    kernel : (*k, C // groups, F) ndarray
        The channels-last kernel of this direction (already conjugated for an adjoint).
    geometry : Geometry
        The geometry of the forward convolution.
    bounds : sequence of (int, int)
        ``(start, stop)`` along every axis of the operator, in its public order: that of
        `Geometry.view_shape`, or, with `transposed`, input axes first.
    transposed : bool
        Whether the block is taken from the transposed operator.

    Returns
    -------
    block : ndarray
        C-contiguous, of `kernel`'s dtype; zeros wherever no kernel tap lands.
    """
    order = canonical_permutation(geometry, adjoint=transposed)  # public axis j is canonical order[j]
    block = np.zeros(tuple([stop - start for start, stop in bounds]), dtype=kernel.dtype)
    canonical_bounds: list[tuple[int, int]] = [(0, 0)] * len(order)
    for j, axis in enumerate(order):
        canonical_bounds[axis] = bounds[j]
    if block.size:
        _write_block_entries(block, block.transpose(np.argsort(order)), kernel, geometry, canonical_bounds)
    return block


def _tap_runs(
    axis: Axis, mode: PaddingMode, outputs: tuple[int, int], inputs: tuple[int, int], tap: int
) -> list:
    """Runs ``(o - o0, count, x - x0, slope)`` where `tap` of the block's outputs reads its inputs."""
    first, stop = outputs
    sources = mode.source(input_positions(axis, range(first, stop), range(tap, tap + 1))[:, 0], axis.size)
    inside = (sources >= inputs[0]) & (sources < inputs[1])
    return [(start, count, x - inputs[0], slope) for start, count, x, slope in affine_runs(sources, inside)]


def _group_pairs(
    geometry: Geometry, filters: tuple[int, int], channels: tuple[int, int]
) -> list[tuple[int, int, int, int, int]]:
    """``(group, f0, f1, c0, c1)``: the filters and channels of each group that the block holds."""
    fg, cg = geometry.group_filters, geometry.group_channels
    pairs: list[tuple[int, int, int, int, int]] = []
    if filters[0] >= filters[1] or channels[0] >= channels[1]:
        return pairs
    for group in range(
        max(filters[0] // fg, channels[0] // cg), min((filters[1] - 1) // fg, (channels[1] - 1) // cg) + 1
    ):
        f0, f1 = max(filters[0], group * fg), min(filters[1], (group + 1) * fg)
        c0, c1 = max(channels[0], group * cg), min(channels[1], (group + 1) * cg)
        if f0 < f1 and c0 < c1:
            pairs.append((group, f0, f1, c0, c1))
    return pairs


def _write_block_entries(
    block: np.ndarray,
    canonical: np.ndarray,
    kernel: np.ndarray,
    geometry: Geometry,
    bounds: list[tuple[int, int]],
) -> None:
    """Write the kernel entries that fall in a zeroed block (`canonical`: its ``(*o, F, *m, C)`` axes).

    Along each axis, tap ``r`` of output ``o`` reads input ``x = source(o*s + r*d - lo)``, which is
    affine in ``o`` on runs (one run for zero padding; a few where the padding wraps, reflects or
    clips). On a run with ``x = x0 + slope * (o - o0)`` the entries of the tap lie on one strided
    view of the block, stepping by ``step_o + slope * step_x``: one assignment per tap, run and
    group. Where several taps read one input entry (the folding modes), they add up.
    """
    n = geometry.ndim
    steps = [stride // block.itemsize for stride in canonical.strides]
    out_o, out_f, out_x, out_c = steps[:n], steps[n], steps[n + 1 : 2 * n + 1], steps[2 * n + 1]
    filters, channels = bounds[n], bounds[2 * n + 1]
    pairs = _group_pairs(geometry, filters, channels)
    per_axis = [
        [_tap_runs(axis, geometry.mode, bounds[i], bounds[n + 1 + i], tap) for tap in range(axis.kernel)]
        for i, axis in enumerate(geometry.axes)
    ]
    if not pairs or not all(any(runs) for runs in per_axis):
        return
    flat = block.reshape(-1)
    cg = geometry.group_channels
    for tap in kernel_taps(geometry):
        for runs in itertools.product(*[per_axis[i][r] for i, r in enumerate(tap)]):
            offset = sum(start * so + x * sx for (start, _, x, _), so, sx in zip(runs, out_o, out_x))
            along = [so + slope * sx for (_, _, _, slope), so, sx in zip(runs, out_o, out_x)]
            counts = [count for _, count, _, _ in runs]
            for group, f0, f1, c0, c1 in pairs:
                place = offset + (f0 - filters[0]) * out_f + (c0 - channels[0]) * out_c
                target = strided_view(flat, place, (*counts, f1 - f0, c1 - c0), (*along, out_f, out_c))
                values = kernel[tap][c0 - group * cg : c1 - group * cg, f0:f1].T
                if geometry.mode.folds:
                    target += values
                else:
                    target[...] = values


def block_hits(
    geometry: Geometry, chunks: Sequence[Sequence[int]], *, transposed: bool = False
) -> np.ndarray:
    """Which blocks of a chunk grid over the dense operator hold a kernel entry.

    `chunks` gives the block sizes along each axis of the operator in its public order (as
    dask's ``Array.chunks``). Returns a boolean array with one entry per block; the others are
    all zeros. Computed from the geometry alone, axis by axis.
    """
    order = canonical_permutation(geometry, adjoint=transposed)
    canonical: list[Sequence[int]] = [()] * len(order)
    for j, position in enumerate(order):
        canonical[position] = chunks[j]
    n = geometry.ndim
    edges = [np.cumsum([0, *sizes]) for sizes in canonical]
    factors = []  # one boolean (o-blocks, x-blocks) table per spatial axis, then (F-blocks, C-blocks)
    for i, axis in enumerate(geometry.axes):
        outputs = np.arange(axis.output)[:, None] * axis.stride
        sources = geometry.mode.source(
            outputs + (np.arange(axis.kernel) * axis.dilation - axis.lo), axis.size
        )
        rows = np.broadcast_to(
            np.searchsorted(edges[i], np.arange(axis.output), "right")[:, None] - 1, sources.shape
        )
        inside = sources >= 0
        table = np.zeros((len(canonical[i]), len(canonical[n + 1 + i])), dtype=bool)
        table[rows[inside], np.searchsorted(edges[n + 1 + i], sources[inside], "right") - 1] = True
        factors.append(table)
    filter_edges, channel_edges = edges[n].tolist(), edges[2 * n + 1].tolist()
    table = np.array(
        [
            [
                bool(_group_pairs(geometry, (f0, f1), (c0, c1)))
                for c0, c1 in zip(channel_edges, channel_edges[1:])
            ]
            for f0, f1 in zip(filter_edges, filter_edges[1:])
        ],
        dtype=bool,
    ).reshape(len(canonical[n]), len(canonical[2 * n + 1]))
    # The canonical (*o, F, *m, C) grid is the product of the tables, axes interleaved.
    hits = np.ones((1,) * (2 * n + 2), dtype=bool)
    for i, factor in enumerate([*factors, table]):
        first, second = (i, n + 1 + i) if i < n else (n, 2 * n + 1)
        shape = [1] * (2 * n + 2)
        shape[first], shape[second] = factor.shape
        hits = hits & factor.reshape(shape)
    return hits.transpose(order)
