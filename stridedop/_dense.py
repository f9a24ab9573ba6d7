"""The dense-writing engine behind `materialize`: the guard before allocating, and the writers.

A view made by stridedop is copied by allocating zeros and writing only its kernel entries; any
other array by one NumPy copy. `stridedop.materialize` (in `_materialize`) is the public front.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ._buffer import BufferPlan, folded_kernel_view, kernel_taps, kernel_view, strided_view
from ._geometry import Geometry, outputs_inside, positions_in_range
from ._memory import available_memory, format_bytes
from ._view import find_operator_view

__all__ = ["check_allocation", "check_out", "fill_dense"]


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
        raise MemoryError(
            f"the dense array of shape {shape} and dtype {dtype} needs {format_bytes(needed)} "
            f"({needed} bytes), more than {what}. Alternatives: pass `out=` a memory map "
            "(numpy.lib.format.open_memmap), apply the operator without building it (`op @ x`, "
            "`op.H @ y`), or export it with `op.to_sparse()`"
        )


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
            return np.array(array, order="C", copy=True)
        out[...] = array
        if progress is not None:
            progress(1, 1)
        return out
    buffer, geometry, plan = found  # type: ignore[misc]
    if out is None:
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
        if interior:
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
