"""Scale-out on Dask: the dense operator as a lazy dask array, zarr output, and ``op @ dask_array``.

Everything here needs the optional extra ``dask`` (``pip install stridedop[dask]``: dask[array],
distributed and zarr); the imports happen inside the functions, so ``import stridedop`` never
loads Dask, and a missing package raises an ImportError naming the extra.

* `to_dask`: one blockwise layer whose function builds any block from the kernel and geometry
  (`dense_block`), stored once in the graph; a block outside the band is a calloc'ed zero array
  on which nothing is written, so it costs nothing until touched.
* `write_zarr`: the same blocks written into a zarr array chunk by chunk, in threads, skipping
  the chunks outside the band when the store's fill value is 0.
* `apply`: ``op @ x`` for a dask array ``x``. Each spatial axis is padded at the array's outer
  border the way the padding mode says (slices of ``x`` itself: a wrap, a mirror or an edge), cut
  into blocks aligned with the stride, and each block is extended by the halo its outputs read
  (right side only, ``extent - stride``) with `dask.array.overlap.overlap`. A 'valid' convolution
  of each extended block gives its output block. The adjoint reads a left halo of
  ``(extent - 1) // stride`` outputs instead and folds the padded border back with the mode.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._buffer import canonical_permutation
from ._dense import block_hits, dense_block
from ._geometry import Axis, Geometry, as_numeric_array
from ._memory import INTP_MAX, refused_allocation
from ._modes import PaddingMode, affine_runs, padding_mode
from ._view import find_operator_view

__all__ = [
    "DenseBlocks",
    "apply",
    "default_chunks",
    "operator_chunks",
    "is_dask_array",
    "is_zarr_array",
    "require",
    "to_dask",
    "write_zarr",
    "write_zarr_store",
]

EXTRA = "pip install stridedop[dask]"


def require(module: str, what: str) -> Any:
    """Import `module`, or raise ImportError saying that `what` needs the extra ``dask``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise ImportError(
            f"{what} needs {package}, part of stridedop's optional extra `dask` (dask[array], "
            f"distributed, zarr); install it with `{EXTRA}`"
        ) from error


def is_dask_array(value: Any) -> bool:
    """Whether `value` is a dask array (checked without importing dask)."""
    return type(value).__module__.startswith("dask") and hasattr(value, "chunks")


def is_zarr_array(value: Any) -> bool:
    """Whether `value` is a zarr array (checked without importing zarr)."""
    return type(value).__module__.startswith("zarr") and hasattr(value, "chunks")


# -- the dense operator by blocks ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DenseBlocks:
    """What builds any block of one dense operator: its kernel, geometry and direction.

    `to_dask`'s graph holds one of these, once (pickled: the kernel plus a few hundred bytes of
    geometry).
    """

    kernel: np.ndarray  # channels-last (*k, C // groups, F), conjugated for a conjugated direction
    geometry: Geometry
    transposed: bool

    @classmethod
    def of(cls, operator: Any) -> DenseBlocks:
        """The blocks of a `ConvOperator` in its direction."""
        state = operator._state
        return cls(state.oriented_kernel(operator._conjugated), state.geometry, operator._transposed)

    @property
    def shape(self) -> tuple[int, ...]:
        order = canonical_permutation(self.geometry, adjoint=self.transposed)
        return tuple([self.geometry.canonical_shape[axis] for axis in order])

    def block(self, bounds: Sequence[tuple[int, int]]) -> np.ndarray:
        """The dense block ``W[start:stop, ...]`` (a new array)."""
        return dense_block(self.kernel, self.geometry, bounds, transposed=self.transposed)

    def hits(self, chunks: Sequence[Sequence[int]]) -> np.ndarray:
        """Which blocks of the chunk grid `chunks` hold kernel entries."""
        return block_hits(self.geometry, chunks, transposed=self.transposed)


def dense_blocks_of(a: Any) -> DenseBlocks | None:
    """The `DenseBlocks` behind a `ConvOperator` or its view (``W.operator``); else None."""
    from ._operator import ConvOperator

    if isinstance(a, ConvOperator):
        return DenseBlocks.of(a)
    view = find_operator_view(a)
    operator = getattr(view, "operator", None)
    if view is a and isinstance(operator, ConvOperator):  # the whole view, not a slice of it
        return DenseBlocks.of(operator)
    return None


def _shared(value: Any, name: str) -> Any:
    """`value` as one node of the graph, that every block's task reads.

    On a distributed cluster it then travels to each worker once, not with every task.
    """
    import dask

    return dask.delayed(value, name=name, traverse=False)


def _geometry_token(geometry: Geometry) -> str:
    """Everything that tells one geometry from another, as text for `dask.base.tokenize`."""
    return f"{geometry.axes!r} {geometry.describe()} {geometry.channels} {geometry.filters}"


def _build_block(
    blocks: DenseBlocks, edges: tuple[tuple[int, ...], ...], block_id: tuple[int, ...] = ()
) -> np.ndarray:
    """Block `block_id` of the chunk grid whose boundaries along each axis are `edges`."""
    return blocks.block([(edge[i], edge[i + 1]) for edge, i in zip(edges, block_id)])


def _block_bounds(chunks: Sequence[Sequence[int]], index: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple([(sum(sizes[:i]), sum(sizes[: i + 1])) for sizes, i in zip(chunks, index)])


def to_dask(operator: Any, chunks: Any = "auto") -> Any:
    """The dense operator as a lazy `dask.array.Array`; see `ConvOperator.to_dask`.

    One blockwise layer: the function, the `DenseBlocks` and the chunk boundaries are stored
    once, whatever the number of blocks. A block outside the band is a calloc'ed zero array
    (`dense_block` finds no tap landing in it and writes nothing).
    """
    da = require("dask.array", "`to_dask`")
    from dask.base import tokenize

    blocks = DenseBlocks.of(operator)
    shape, dtype = operator.shape, operator.dtype
    chunks = da.core.normalize_chunks(chunks, shape, dtype=dtype)
    edges = tuple([tuple(np.cumsum([0, *sizes]).tolist()) for sizes in chunks])
    token = tokenize(blocks.kernel, _geometry_token(blocks.geometry), blocks.transposed, chunks)
    return da.map_blocks(
        _build_block,
        _shared(blocks, f"stridedop-operator-{token}"),
        edges,
        chunks=chunks,
        dtype=dtype,
        meta=np.empty((0,) * len(shape), dtype=dtype),
        name=f"stridedop-dense-{token}",
    )


# -- zarr output --------------------------------------------------------------------------------------
def write_zarr(
    a: Any,
    out: Any,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> Any:
    """Write `a` (a `ConvOperator`, a view of one, or any array) into the zarr array `out`.

    Chunk by chunk (shard by shard for a sharded array), in `workers` threads. When the array's
    fill value is 0 and nothing is stored in it yet, chunks outside the operator's band (or, for
    any other array, chunks that are all zeros) are not written at all. `progress(done, total)`
    is called after each chunk. Returns `out`.
    """
    blocks = dense_blocks_of(a)
    if blocks is not None:
        shape, dtype = blocks.shape, blocks.kernel.dtype
    else:
        a = a if hasattr(a, "shape") and hasattr(a, "dtype") else np.asarray(a)
        shape, dtype = tuple(a.shape), np.dtype(a.dtype)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"`out` has shape {tuple(out.shape)}, but the array to materialize has {shape}")
    if np.dtype(out.dtype) != dtype:
        raise TypeError(f"`out` has dtype {out.dtype}, but the array to materialize has {dtype}")
    if getattr(out, "read_only", False):
        raise ValueError("`out` is read-only; open the zarr array in a writable mode")
    grid = tuple(getattr(out, "shards", None) or out.chunks)
    chunks = [
        tuple([min(step, size - start) for start in range(0, size, step)]) if size else (0,)
        for size, step in zip(shape, grid)
    ]
    fill = out.fill_value
    skip_empty = fill is not None and bool(np.all(np.asarray(fill) == 0)) and out.nchunks_initialized == 0
    indices: Iterator[tuple[int, ...]] | list[tuple[int, ...]]
    if blocks is not None and skip_empty:
        hits = blocks.hits(chunks)
        indices = [tuple(index) for index in np.argwhere(hits).tolist()]
    else:
        indices = list(itertools.product(*[range(len(sizes)) for sizes in chunks]))

    def write(index: tuple[int, ...]) -> None:
        bounds = _block_bounds(chunks, index)
        where = tuple([slice(start, stop) for start, stop in bounds])
        if blocks is not None:
            block = blocks.block(bounds)
        else:
            block = np.asarray(a[where], dtype=dtype)
            if skip_empty and not block.any():
                return
        out[where] = block

    _run_bounded(write, indices, _thread_count(workers), progress)
    return out


def default_chunks(
    shape: Sequence[int], itemsize: int, target: int = 2**20, split_first: Sequence[int] = ()
) -> tuple[int, ...]:
    """Chunk sizes of at most `target` bytes: halve the longest axis until the chunk fits.

    The axes in `split_first` are halved first (down to 1), then all of them. For an operator,
    these are its spatial axes, output and input alike: along each of them the band (outputs
    near the inputs they read) then crosses few chunks, and the chunks away from it hold no
    kernel entry and are never written.
    """
    chunks = [max(1, size) for size in shape]
    for axes in (list(split_first), list(range(len(chunks)))):
        while math.prod(chunks) * itemsize > target and any(chunks[axis] > 1 for axis in axes):
            longest = max(axes, key=lambda axis: chunks[axis])
            chunks[longest] = -(-chunks[longest] // 2)
    return tuple(chunks)


def operator_chunks(operator: Any, target: int = 2**20) -> tuple[int, ...]:
    """`default_chunks` for the dense `operator`, its spatial axes split first."""
    blocks = DenseBlocks.of(operator)
    n = blocks.geometry.ndim
    order = canonical_permutation(blocks.geometry, adjoint=blocks.transposed)
    spatial = [j for j, axis in enumerate(order) if axis != n and axis != 2 * n + 1]
    return default_chunks(operator.shape, operator.dtype.itemsize, target, spatial)


def write_zarr_store(
    path: str,
    operator: Any,
    chunks: Sequence[int] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Write the dense `operator` to a new zarr store at `path`, atomically.

    The store is written under a hidden temporary name in the same folder and renamed to `path`
    only once every chunk is in (an existing store at `path` is replaced then). Any failure,
    including Ctrl-C and SIGTERM, removes the temporary store, so `path` never holds a partial
    operator. `chunks` defaults to `operator_chunks`; the fill value is 0, so only the chunks in
    the band are stored. Returns the zarr array at `path`.
    """
    zarr = require("zarr", "writing a .zarr store")
    path = os.path.abspath(path.rstrip(os.sep))
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.partial-{os.getpid()}")
    shape, dtype = operator.shape, operator.dtype
    chunks = operator_chunks(operator) if chunks is None else tuple(chunks)
    if len(chunks) != len(shape) or min(chunks, default=1) < 1:
        raise ValueError(
            f"`chunks` must give one positive size per axis of the operator {shape}, got {chunks}"
        )
    with _signals_raise():
        try:
            array = zarr.open_array(
                store=temporary, mode="w-", shape=shape, chunks=chunks, dtype=dtype, fill_value=0
            )
            write_zarr(operator, array, progress=progress)
            if os.path.lexists(path):
                retired = os.path.join(folder, f".{name}.replaced-{os.getpid()}")
                os.rename(path, retired)
                os.rename(temporary, path)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.rename(temporary, path)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    return zarr.open_array(path, mode="r")


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While writing, SIGTERM and SIGHUP raise SystemExit, so that the cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {}
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _thread_count(workers: int | None) -> int:
    if workers is not None:
        return max(1, int(workers))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _run_bounded(
    job: Callable[[Any], None],
    items: Sequence[Any],
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Run `job` on every item in `workers` threads, at most `workers` at a time in flight.

    Bounding the jobs in flight bounds the memory: each holds one block. The first failure
    (or Ctrl-C) stops the submitting and is raised once the running jobs have finished.
    """
    total = len(items)
    done = 0
    if progress is not None:
        progress(0, total)
    pending: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        iterator = iter(items)
        try:
            while True:
                while len(pending) < workers:
                    item = next(iterator, _END)
                    if item is _END:
                        break
                    pending.add(pool.submit(job, item))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # raises the job's error
                    done += 1
                    if progress is not None:
                        progress(done, total)
        except BaseException:  # stop submitting; the jobs already running finish first
            for future in pending:
                future.cancel()
            raise


_END = object()


# -- op @ x for dask arrays ------------------------------------------------------------------------
def apply(operator: Any, x: Any) -> Any:
    """``operator @ x`` for a dask array `x` of shape ``(*batch, *input_shape)``: a lazy dask array."""
    require("dask.array", "`op @ x` on a dask array")
    from ._algebra import ProductOperator, SumOperator
    from ._operator import ConvOperator

    as_numeric_array(np.empty(0, dtype=x.dtype), "x")  # the dtype check, with its message
    expected = tuple(operator.input_shape)
    n = len(expected)
    if x.ndim < n or tuple(x.shape[x.ndim - n :]) != expected:
        raise ValueError(f"`x` must have shape {expected} or (*batch, *{expected}), got {tuple(x.shape)}")
    if isinstance(operator, ConvOperator):
        with refused_allocation(lambda: _border_refusal(operator._state.geometry)):
            return _convolve(operator, x)
    if isinstance(operator, SumOperator):
        total = None
        for coefficient, part in operator.terms:
            term = coefficient * part.apply(x)
            total = term if total is None else total + term
        return total
    if isinstance(operator, ProductOperator):
        for factor in reversed(operator.factors):
            x = factor.apply(x)
        return x
    # Any other operator: blocks hold whole inputs, batch chunks stay independent.
    whole = {axis: -1 for axis in range(x.ndim - n, x.ndim)}
    x = x.rechunk(whole)
    dtype = np.result_type(operator.dtype, x.dtype)
    chunks = (*x.chunks[: x.ndim - n], *[(size,) for size in operator.output_shape])
    return x.map_blocks(
        _apply_block, operator, chunks=chunks, dtype=dtype, meta=np.empty((0,) * len(chunks), dtype=dtype)
    )


def _apply_block(block: np.ndarray, operator: Any) -> np.ndarray:
    return operator.apply(block)


def _on_grid(operator: Any, sizes: Sequence[int]) -> Any:
    """`operator`'s convolution, 'valid' on a (padded) grid of `sizes`, in the same direction."""
    from ._operator import ConvOperator

    state = operator._state
    axes = tuple(
        [
            Axis(size, axis.kernel, axis.stride, axis.dilation)
            for size, axis in zip(sizes, state.geometry.axes)
        ]
    )
    geometry = state.geometry.replace(axes=axes, mode=padding_mode("zeros"), padding="valid")
    valid = ConvOperator._from_kernel(state.kernel, geometry, state.method)
    return valid._direction(operator._transposed, operator._conjugated)


def _counts(total: int, target: int, minimum: int) -> tuple[int, ...]:
    """Split `total` into pieces of `target` (at least `minimum`), a shorter one merged if too short."""
    size = max(target, minimum, 1)
    counts = [size] * (total // size)
    remainder = total - size * len(counts)
    if remainder:
        if counts and remainder < minimum:
            counts[-1] += remainder
        else:
            counts.append(remainder)
    return tuple(counts) or (total,)


def _border_refusal(geometry: Geometry) -> str:
    """Why a dask array's padding ran out of memory: the graph lays the padded border out."""
    return (
        f"the padding {[(axis.lo, axis.hi) for axis in geometry.axes]} is laid out entry by entry on a "
        "dask array, more memory than this process may use; apply the operator to a NumPy array instead"
    )


def _convolve(operator: Any, x: Any) -> Any:
    """The convolution (or its adjoint) of a dask array, by overlapping blocks."""
    from dask.base import tokenize

    geometry = operator._state.geometry
    if any(axis.padded * 8 > INTP_MAX for axis in geometry.axes):  # the borders' int64 positions
        raise MemoryError("the padded axis is longer than NumPy can address")
    n = geometry.ndim
    lead = x.ndim - len(operator.input_shape)
    channels_first = geometry.layout == "channels_first"
    spatial = [lead + int(channels_first) + i for i in range(n)]
    channel = lead if channels_first else x.ndim - 1
    dtype = np.result_type(operator.dtype, x.dtype)
    x = x.astype(dtype).rechunk({channel: -1})
    token = tokenize(
        operator._state.kernel,
        _geometry_token(geometry),
        operator._transposed,
        operator._conjugated,
        x.name,
    )
    depth: dict[int, tuple[int, int]] = {}
    out_chunks = list(x.chunks)
    padded_chunks = list(x.chunks)
    if not operator._transposed:
        # Forward: pad at the border, then blocks of `stride * count` padded entries, each read
        # with the `extent - stride` entries that follow it.
        grid_chunks = list(x.chunks)
        for ax, axis in zip(spatial, geometry.axes):
            halo = max(axis.extent - axis.stride, 0)
            counts = _counts(axis.output, max(x.chunks[ax]) // axis.stride, -(-halo // axis.stride))
            cores = [count * axis.stride for count in counts]
            cores[-1] = axis.padded - sum(cores[:-1])
            grid_chunks[ax], out_chunks[ax] = tuple(cores), counts
            if len(counts) > 1 and halo:
                depth[ax] = (0, halo)
        for ax, axis in zip(spatial, geometry.axes):
            x = _pad_axis(x, ax, axis, geometry.mode)
        x = x.rechunk(tuple(grid_chunks))
        out_chunks[channel] = (geometry.filters,)
        return _halos(x, depth).map_blocks(
            _forward_block,
            _shared(operator, f"stridedop-operator-{token}"),
            tuple(spatial),
            chunks=tuple(out_chunks),
            dtype=dtype,
            meta=np.empty((0,) * x.ndim, dtype=dtype),
            name=f"stridedop-apply-{token}",
        )
    # Adjoint: blocks of `count` outputs, each read with the `(extent - 1) // stride` outputs
    # before it, scatter onto `stride * count` padded entries; then fold the border back.
    halos = []
    for ax, axis in zip(spatial, geometry.axes):
        halo = (axis.extent - 1) // axis.stride
        counts = _counts(axis.output, max(1, max(x.chunks[ax])), halo)
        cores = [count * axis.stride for count in counts]
        cores[-1] = axis.padded - sum(cores[:-1])
        out_chunks[ax], padded_chunks[ax] = counts, tuple(cores)
        applied = len(counts) > 1 and halo > 0
        halos.append(halo if applied else 0)
        if applied:
            depth[ax] = (halo, 0)
    x = x.rechunk(tuple(out_chunks))
    padded_chunks[channel] = (geometry.channels,)
    padded = _halos(x, depth).map_blocks(
        _adjoint_block,
        _shared(operator, f"stridedop-operator-{token}"),
        tuple(spatial),
        tuple(halos),
        chunks=tuple(padded_chunks),
        dtype=dtype,
        meta=np.empty((0,) * x.ndim, dtype=dtype),
        name=f"stridedop-apply-adjoint-{token}",
    )
    for ax, axis in zip(spatial, geometry.axes):
        padded = _fold_axis(padded, ax, axis, geometry.mode)
    return padded


def _halos(x: Any, depth: dict[int, tuple[int, int]]) -> Any:
    """Extend each block of `x` by ``depth[axis] = (before, after)`` entries of its neighbours.

    The chunks were chosen at least as long as the depth, so that dask never rechunks here;
    the array's outer border gets nothing ('none': the padding is already in place).
    """
    from dask.array.overlap import overlap

    if not depth:
        return x
    full = {axis: depth.get(axis, 0) for axis in range(x.ndim)}
    return overlap(x, depth=full, boundary="none", allow_rechunk=False)


def _forward_block(block: np.ndarray, operator: Any, spatial: tuple[int, ...]) -> np.ndarray:
    """The 'valid' convolution of one extended block of the padded input."""
    return _on_grid(operator, [block.shape[ax] for ax in spatial]).apply(block)


def _adjoint_block(
    block: np.ndarray,
    operator: Any,
    spatial: tuple[int, ...],
    halos: tuple[int, ...],
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """The adjoint of one block of outputs (with its halo), cropped to the block's padded entries."""
    info = (block_info or {})[None]
    location, target = info["chunk-location"], info["chunk-shape"]
    axes = operator._state.geometry.axes
    sizes = [(block.shape[ax] - 1) * axis.stride + axis.extent for ax, axis in zip(spatial, axes)]
    full = _on_grid(operator, sizes).apply(block)
    out = np.zeros(target, dtype=full.dtype)
    source = [slice(None)] * full.ndim
    destination = [slice(None)] * full.ndim
    for ax, axis, halo, size in zip(spatial, axes, halos, sizes):
        start = halo * axis.stride if location[ax] > 0 else 0
        stop = min(start + target[ax], size)
        source[ax], destination[ax] = slice(start, stop), slice(0, stop - start)
    out[tuple(destination)] = full[tuple(source)]
    return out


def _take_run(x: Any, ax: int, count: int, first: int, slope: int) -> Any:
    """``x`` at indices ``first + slope * i`` (``i < count``) along axis `ax`."""
    index: list[Any] = [slice(None)] * x.ndim
    if slope == 0:
        index[ax] = slice(first, first + 1)
        piece = x[tuple(index)]
        return piece if count == 1 else piece.repeat(count, axis=ax)
    last = first + slope * (count - 1)
    low, high = min(first, last), max(first, last)
    index[ax] = slice(low, high + 1, abs(slope))
    piece = x[tuple(index)]
    if slope < 0:
        index[ax] = slice(None, None, -1)
        piece = piece[tuple(index)]
    return piece


def _flank_runs(axis: Axis, mode: PaddingMode) -> list[tuple[int, int, int, int]]:
    """Runs ``(position, count, source, slope)`` of the padded border entries that read the input."""
    runs = []
    for first, stop in ((-axis.lo, 0), (axis.size, axis.size + axis.hi)):
        sources = mode.source(np.arange(first, stop), axis.size)
        for start, count, source, slope in affine_runs(sources, sources >= 0):
            runs.append((start + first + axis.lo, count, source, slope))
    return runs


def _pad_axis(x: Any, ax: int, axis: Axis, mode: PaddingMode) -> Any:
    """Pad axis `ax` of the dask array `x` by ``(lo, hi)`` as `mode` says (`numpy.pad` semantics)."""
    import dask.array as da

    if not (axis.lo or axis.hi):
        return x
    pieces = []
    cursor = 0  # position in the padded axis
    for position, count, source, slope in [*_flank_runs(axis, mode), (axis.lo, axis.size, 0, 1)]:
        pieces.append((position, _take_run(x, ax, count, source, slope)))
    pieces.sort(key=lambda item: item[0])
    parts = []
    for position, piece in pieces:
        if position > cursor:  # zero padding
            parts.append(_zeros_like_along(x, ax, position - cursor))
        parts.append(piece)
        cursor = position + piece.shape[ax]
    if cursor < axis.padded:
        parts.append(_zeros_like_along(x, ax, axis.padded - cursor))
    return da.concatenate(parts, axis=ax)


def _zeros_like_along(x: Any, ax: int, length: int) -> Any:
    import dask.array as da

    shape = list(x.shape)
    shape[ax] = length
    chunks = list(x.chunks)
    chunks[ax] = (length,)
    return da.zeros(tuple(shape), dtype=x.dtype, chunks=tuple(chunks))


def _fold_axis(padded: Any, ax: int, axis: Axis, mode: PaddingMode) -> Any:
    """The adjoint of `_pad_axis`: crop, and add each border entry onto the input entry it reads.

    The input axis is cut where the border's contributions start and stop; each piece is the
    cropped entries plus the contributions covering it, and the pieces are joined again.
    """
    import dask.array as da

    def along(start: int | None, stop: int | None, step: int | None = None) -> tuple[slice, ...]:
        return (slice(None),) * ax + (slice(start, stop, step),)

    core = padded[along(axis.lo, axis.lo + axis.size)]
    contributions = []  # (first, stop, piece): `piece` adds onto input entries [first, stop)
    for position, count, source, slope in _flank_runs(axis, mode):
        piece = padded[along(position, position + count)]
        if slope == 0:
            contributions.append((source, source + 1, piece.sum(axis=ax, keepdims=True, dtype=padded.dtype)))
        elif abs(slope) == 1:
            first = min(source, source + slope * (count - 1))
            contributions.append((first, first + count, piece if slope > 0 else piece[along(None, None, -1)]))
        else:  # a run across a wrap-around: entry by entry
            for i in range(count):
                target = source + slope * i
                contributions.append((target, target + 1, piece[along(i, i + 1)]))
    if not contributions:
        return core
    cuts = sorted(
        {0, axis.size, *[first for first, _, _ in contributions], *[stop for _, stop, _ in contributions]}
    )
    pieces = []
    for first, stop in zip(cuts[:-1], cuts[1:]):
        piece = core[along(first, stop)]
        for low, high, addition in contributions:
            if low <= first and stop <= high:
                piece = piece + addition[along(first - low, stop - low)]
        pieces.append(piece)
    return da.concatenate(pieces, axis=ax).rechunk(core.chunks)
