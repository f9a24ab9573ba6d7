"""Stride-1 depthwise correlation (one channel and one filter per group) and its adjoint.

A depthwise layer has no sum over channels, so a matrix product would multiply mostly zeros;
here the taps are vectorized multiply-adds: one `numpy.einsum` over a strided view of all the
taps of a block, which keeps one pass per tap with no temporary as long as its innermost loop
runs along the contiguous output, or (channels-first, BLAS dtypes) one small GEMM per row. The
products live on the flat padded grid, where output ``q`` reads entry ``q + shift(tap)``. The
two layouts get there differently:

* channels-last: the channels are innermost, so a tap is a shift by a multiple of ``C`` entries
  and the kernel, tiled along an output row of ``(pixels, C)``, is the same for every row: the
  forward product runs row by row straight into the output, the adjoint over the flat batch;
* channels-first: every ``(image, channel)`` row of the batch is a flat grid and the kernel one
  number per row and tap. For the BLAS dtypes, one axis's taps are one GEMM per row over copies
  of the row shifted by each of them, and the other axes' taps flat shifted adds of its products
  (`_by_row_gemms`). Otherwise one `numpy.einsum` per product: a tap along the last
  axis shifts by one entry, as the output does, and einsum would run those taps innermost (a few
  entries per loop), so they split into even and odd taps: two products whose taps are two
  entries apart, then one sum. The forward runs on the input's grid and its real outputs are
  copied out.

The adjoint of a stride-1 layer is the correlation of ``y`` zero-padded by ``extent - 1`` with
the flipped kernel. Laid on the padded input's grid with ``y`` in the leading corner of every
image, the zeros after one image's last output row are the padding before the next image's
first one, so ``y`` is embedded once (after ``reach`` zeros) and the products land on the
padded input itself: nothing is cropped.

Work arrays come from `_memory.scratch`; channels-first blocks are whole images or channels of one
image, about `_COLUMNS_BYTES` of shifted rows and products or `_BLOCK_BYTES` of einsum rows.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator

import numpy as np

from ._geometry import Axis, flat_grid
from ._memory import scratch

__all__ = ["BLAS_DTYPES", "depthwise_adjoint", "depthwise_correlate", "depthwise_suits"]

_COLUMNS_BYTES = 2**22  # channels-first, BLAS dtypes: work arrays per block (fewer calls: faster)
_BLOCK_BYTES = 2**20  # channels-first: rows per block (fewer, larger calls measured faster); tile bound
_TILE_ENTRIES = 2**13  # channels-last: entries per block, the width of the tiled kernel
_SHORT_ROWS = 384  # channels-first einsum products: fewest outputs per row on the grid
# float32, float64, complex64, complex128 in native byte order: `numpy.matmul` and SciPy's GEMM run
# BLAS for these (`_apply` shares the set)
BLAS_DTYPES = frozenset(np.dtype(char) for char in "fdFD")
_LABELS = "abdefghiklmnopqstuvwxy"  # einsum labels of the tap axes ("c", "j", "r", "z" are taken)


def depthwise_suits(
    kernel: np.ndarray,
    groups: int,
    dtype: np.dtype,
    axes: tuple[Axis, ...] = (),
    channels_first: bool = False,
) -> bool:
    """Whether the depthwise products serve this layer: one channel and one filter per group, numbers.

    Channels-first, each product runs along one row of the padded grid. The `numpy.einsum`
    products of rows with fewer than `_SHORT_ROWS` outputs (small images, wide kernels) spend more
    in the loop around them than in them, and the im2col product serves them better; the row
    GEMMs of the BLAS dtypes beat im2col down to 4 x 4 images (measured: 8 x 32 x 4 x 4, 3x3,
    float32, 63 against 123 us forward; within 10% either way on a few tiny 3-D and float64 ones).
    """
    dtype = np.dtype(dtype)
    if not (groups > 1 and kernel.shape[-2] == 1 and kernel.shape[-1] == groups and dtype.kind in "iufc"):
        return False
    if not (channels_first and axes) or dtype in BLAS_DTYPES:
        return True
    padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    return math.prod(padded) - _grid(padded, axes)[1] >= _SHORT_ROWS


def _grid(padded: tuple[int, ...], axes: tuple[Axis, ...]) -> tuple[list[int], int]:
    """Tap stride per axis of the flat padded grid (in pixels), and how far an output's window reaches."""
    steps, reach = flat_grid(padded, axes)
    return [axis.dilation * step for axis, step in zip(axes, steps)], reach


def depthwise_correlate(
    kernel: np.ndarray, axes: tuple[Axis, ...], xp: np.ndarray, channels_first: bool
) -> np.ndarray:
    """Stride-1 depthwise correlation of the padded batch `xp`; a new C-ordered array.

    Parameters
    ----------
    kernel : (*k, 1, C) ndarray
        One filter per channel, in the dtype of `xp`.
    axes : tuple of Axis
        The stride-1 axes; `xp`'s spatial sizes are ``output + extent - 1``.
    xp : (B, *P, C) or (B, C, *P) ndarray
        The padded batch.
    channels_first : bool
        The layout of `xp` and of the result.

    Returns
    -------
    (B, *o, C) or (B, C, *o) ndarray
        ``out[o, c] = sum_r xp[o + r * dilation, c] kernel[r, 0, c]``, in `xp`'s dtype.
    """
    xp = np.ascontiguousarray(xp)
    kernel = kernel.reshape(*kernel.shape[:-2], kernel.shape[-1])  # (*k, C)
    crop = tuple(slice(0, axis.output) for axis in axes)
    if channels_first:
        return _by_rows(kernel, axes, xp.reshape(-1), xp.shape[:2], crop)
    return _output_rows(kernel, axes, xp)


def depthwise_adjoint(
    kernel: np.ndarray, axes: tuple[Axis, ...], y: np.ndarray, channels_first: bool
) -> np.ndarray:
    """Stride-1 depthwise adjoint of ``y`` onto the padded input: ``xp[p] = sum_r y[p - r*d] K[r]``.

    `kernel` is ``(*k, 1, C)`` (conjugated by the caller for a complex adjoint); returns a new
    C-ordered ``(B, *P, C)`` or ``(B, C, *P)`` with ``P = output + extent - 1``, in `y`'s layout.
    """
    from ._apply import _look_back_buffer  # (`_apply` imports this module)

    n = len(axes)
    flipped = kernel[(slice(None, None, -1),) * n].reshape(*kernel.shape[:n], kernel.shape[-1])
    padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    strides, _ = _grid(padded, axes)
    batch = y.shape[0]
    channels = y.shape[1] if channels_first else y.shape[-1]
    shape = (batch, channels, *padded) if channels_first else (batch, *padded, channels)
    # y in the leading corner of every image, after `reach` zeros: the zero padding of all of them.
    source, _ = _look_back_buffer(y, axes, channels_first)
    if channels_first:
        return _by_rows(flipped, axes, source, (batch, channels), None, padded=padded)
    result = np.empty(shape, dtype=y.dtype)
    _interleaved(flipped, strides, source, result.reshape(-1))
    return result


def _interleaved(kernel: np.ndarray, strides: list[int], source: np.ndarray, target: np.ndarray) -> None:
    """Channels-last: ``target[j] = sum_t source[j + shift_t * C] K[t, j mod C]`` over a flat batch.

    With the channels innermost, entry ``j = q * C + c`` reads entry ``j + shift_t * C``: per
    block of ``nb`` entries (a multiple of ``C``) the windows of all taps are one strided view,
    and the kernel tiled over the block is the same for every block::

        source  ..[block n   ][block n+1 ]..      view (blocks, *k, nb), strides (nb, *shifts*C, 1)
        tap t     [n + shift_t*C ...      ]
        kernel    [K[t,0..C-1] K[t,0..C-1] ...]   (*k, nb), the same for every block
    """
    taps_shape, channels = kernel.shape[:-1], kernel.shape[-1]
    item, length = source.itemsize, target.size
    # A block of at least one pixel; the tile stays cache-sized whatever the number of taps.
    entries = min(_TILE_ENTRIES, _BLOCK_BYTES // (math.prod(taps_shape) * item))
    nb = min(max(1, entries // channels) * channels, length)
    tiled = scratch("tile", (*taps_shape, -(-nb // channels), channels), source.dtype)
    np.copyto(tiled, kernel[..., None, :])
    tile = tiled.reshape(*taps_shape, -1)[..., :nb]
    tap_strides = tuple(stride * channels * item for stride in strides)
    blocks, taps = length // nb, _LABELS[: len(strides)]
    for start, count, width in ((0, blocks, nb), (blocks * nb, 1, length - blocks * nb)):
        if count == 0 or width == 0:
            continue
        windows = np.ndarray(  # (bounds checked by `numpy.ndarray`)
            (count, *taps_shape, width),
            dtype=source.dtype,
            buffer=source,
            offset=start * item,
            strides=(nb * item, *tap_strides, item),
        )
        products = target[start : start + count * width].reshape(count, width)
        np.einsum(f"n{taps}j,{taps}j->nj", windows, tile[..., :width], out=products)


def _output_rows(kernel: np.ndarray, axes: tuple[Axis, ...], xp: np.ndarray) -> np.ndarray:
    """Channels-last forward, straight into the outputs: one output row ``(o_last, C)`` at a time.

    An output row is ``o_last * C`` contiguous entries, and so is each tap's window of it in `xp`
    (``C`` channels per pixel on both sides); the kernel tiled along a row (or a block of one) is
    the same for every row. Nothing is computed off the output grid and nothing is cropped, and
    the tile of a row stays in the L1 cache where a block of the flat batch's would not (measured:
    0.43 -> 0.32 ms on 8 x 32 x 32 x 32, 3x3).
    """
    n, (batch, *padded, channels) = len(axes), xp.shape
    taps_shape, item = kernel.shape[:-1], xp.itemsize
    outputs = tuple(axis.output for axis in axes)
    steps = [math.prod(padded[i + 1 :]) * channels * item for i in range(n)]
    row = outputs[-1] * channels
    entries = min(_TILE_ENTRIES, _BLOCK_BYTES // (math.prod(taps_shape) * item))
    nb = min(row, max(1, entries // channels) * channels)  # entries per block of a row
    tiled = scratch("tile", (*taps_shape, -(-nb // channels), channels), xp.dtype)
    np.copyto(tiled, kernel[..., None, :])
    tile = tiled.reshape(*taps_shape, -1)[..., :nb]
    out = np.empty((batch, *outputs, channels), dtype=xp.dtype)
    rows = out.reshape(batch, *outputs[:-1], row)
    leading, taps = "ABDEFGHIKLMNOPQSTUVWXYZ"[: n - 1], _LABELS[:n]
    tap_strides = tuple(axis.dilation * step for axis, step in zip(axes, steps))
    blocks = row // nb
    for start, count, width in ((0, blocks, nb), (blocks * nb, 1, row - blocks * nb)):
        if count == 0 or width == 0:
            continue
        windows = np.ndarray(  # (bounds checked by `numpy.ndarray`)
            (batch, *outputs[:-1], count, *taps_shape, width),
            dtype=xp.dtype,
            buffer=xp,
            offset=start * item,
            strides=(math.prod(padded) * channels * item, *steps[:-1], nb * item, *tap_strides, item),
        )
        target = rows[..., start : start + count * width].reshape(batch, *outputs[:-1], count, width)
        np.einsum(f"z{leading}n{taps}j,{taps}j->z{leading}nj", windows, tile[..., :width], out=target)
    return out


def _by_rows(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    source: np.ndarray,
    batch_channels: tuple[int, int],
    crop: tuple[slice, ...] | None,
    padded: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Channels-first: ``out[r, q] = sum_t source[r * pixels + q + shift_t] K[t, c(r)]`` per row ``r``.

    Rows are the ``(image, channel)`` pairs, each a flat padded grid of ``pixels`` entries (`padded`,
    or the input's grid when `crop` takes the real outputs of the forward product). The kernel is one
    number per row and tap: `numpy.einsum`'s scalar-times-contiguous loop. A tap axis whose shift is
    one entry would tie with the output's own stride and run innermost, so its even and odd taps go
    to two products, two entries apart, whose sum is the output. The BLAS dtypes take
    `_by_row_gemms` when one row's work arrays fit in `_COLUMNS_BYTES`.
    """
    batch, channels = batch_channels
    dtype, item, n = source.dtype, source.itemsize, len(axes)
    if padded is None:
        padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    pixels = math.prod(padded)
    strides, reach = _grid(padded, axes)
    # Outputs per row on the grid: the forward's last real output is entry `pixels - reach - 1`.
    length = pixels - reach if crop is not None else pixels
    # `_by_row_gemms`: the axis whose taps the GEMM takes, among those with more than one tap (the
    # forward's first, the adjoint's last): a GEMM over one tap is a product of inner dimension 1,
    # which NumPy runs without BLAS (a 1 x 7 kernel, 'same', on 8 x 32 x 32 x 32: 3.4 ms on the
    # first axis, 1.1 on the last).
    several = [i for i, axis in enumerate(axes) if axis.kernel > 1] or [n - 1]
    gemm_axis = several[0] if crop is not None else several[-1]
    gemm_taps = kernel.shape[gemm_axis]
    outer = math.prod(kernel.shape[:n]) // gemm_taps
    # ... and the entries per row its products cover (the forward: every output's other taps).
    covered = length + reach - (gemm_taps - 1) * strides[gemm_axis] if crop is not None else pixels
    if dtype in BLAS_DTYPES and (outer + gemm_taps) * covered * item <= _COLUMNS_BYTES:
        return _by_row_gemms(kernel, strides, source, batch_channels, crop, padded, covered, gemm_axis)
    # Per product, per axis: (its taps, how many, their stride in entries, the first one's offset).
    parts: list[list[tuple[slice, int, int, int]]] = [[]]
    for axis, stride in zip(axes, strides):
        if stride == 1 and axis.kernel > 1:
            even, odd = (
                (slice(0, None, 2), (axis.kernel + 1) // 2, 2, 0),
                (slice(1, None, 2), axis.kernel // 2, 2, 1),
            )
            parts = [part + [even] for part in parts] + [part + [odd] for part in parts]
        else:
            parts = [part + [(slice(None), axis.kernel, stride, 0)] for part in parts]
    weights = np.ascontiguousarray(np.moveaxis(kernel, -1, 0))  # (C, *k): the same for every image
    spatial = padded if crop is None else tuple(axis.output for axis in axes)
    out = np.empty((batch, channels, *spatial), dtype=dtype)
    images, width = _block(batch, channels, _BLOCK_BYTES // (pixels * item))
    extra = len(parts) - (crop is None)  # work arrays: every product but the first straight into `out`
    sums = scratch("grid", (extra, images * width * pixels), dtype) if extra else None
    if sums is not None and crop is not None:
        # Past each row's outputs: added up whole (a strided add of the outputs alone runs about 3x
        # slower, measured), never read.
        sums.reshape(extra, images * width, pixels)[..., length:] = 0
    taps, row = _LABELS[:n], (channels * pixels * item, pixels * item)
    for first, last, low, high in _blocks(batch, channels, images, width):
        shape = (last - first, high - low, pixels)  # whole rows, contiguous
        flats = [] if crop is not None else [out.reshape(batch, channels, pixels)[first:last, low:high]]
        if sums is not None:
            flats += [sums[i, : math.prod(shape)].reshape(shape) for i in range(extra)]
        for part, flat in zip(parts, flats):
            # A view of every tap's window (bounds checked by `numpy.ndarray`): row by row, the
            # taps, then the outputs.
            windows = np.ndarray(
                (*shape[:2], *(count for _, count, _, _ in part), length),
                dtype=dtype,
                buffer=source,
                offset=((first * channels + low) * pixels + sum(offset for *_, offset in part)) * item,
                strides=(*row, *(stride * item for _, _, stride, _ in part), item),
            )
            index = (slice(low, high), *(piece for piece, *_ in part))
            np.einsum(f"zr{taps}j,r{taps}->zrj", windows, weights[index], out=flat[..., :length])
        total = flats[0].reshape(-1)
        for flat in flats[1:]:
            np.add(total, flat.reshape(-1), out=total)
        if crop is not None:  # (the last real output on the grid is entry `length - 1`)
            whole = flats[0].reshape(*shape[:2], *padded)
            out[first:last, low:high] = whole[(slice(None), slice(None)) + crop]
    return out


def _block(batch: int, channels: int, rows: int) -> tuple[int, int]:
    """Images and channels per block of about `rows` rows: whole images, or channels of one image."""
    rows = max(1, rows)
    return (min(batch, rows // channels), channels) if rows >= channels else (1, rows)


def _blocks(batch: int, channels: int, images: int, width: int) -> Iterator[tuple[int, int, int, int]]:
    """``(first, last, low, high)`` per block: images ``[first, last)``, channels ``[low, high)``."""
    for first in range(0, batch, images):
        for low in range(0, channels, width):
            yield first, min(first + images, batch), low, min(low + width, channels)


@functools.lru_cache(maxsize=64)
def _flat_offsets(taps_shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, ...]:
    """Flat offset of every tap of `taps_shape` on a grid with these tap `strides`, in the kernel's order."""
    taps = itertools.product(*(range(k) for k in taps_shape))
    return tuple(sum(tap * stride for tap, stride in zip(tap_index, strides)) for tap_index in taps)


def _by_row_gemms(
    kernel: np.ndarray,
    strides: list[int],
    source: np.ndarray,
    batch_channels: tuple[int, int],
    crop: tuple[slice, ...] | None,
    padded: tuple[int, ...],
    width_row: int,
    gemm_axis: int,
) -> np.ndarray:
    """`_by_rows` for the BLAS dtypes: `gemm_axis`'s taps by one GEMM per row, the others by shifts.

    With ``k_o`` taps along the other axes (flat offsets ``off_o``) and ``k_g`` along `gemm_axis`
    (shift ``d``), per row: copy the ``k_g`` shifted rows ``S[g, q] = row[q + g d]`` (one
    contiguous copy, ``k_g`` times the row), then ``Z = K_c (k_o, k_g) @ S`` (one GEMM) and
    ``out[q] = sum_o Z[o, q + off_o]``: flat adds over the block, whose entries past a row's
    outputs mix rows and are never read. The products cover `width_row` entries per row.

    * The forward takes the taps of the first axis that has several: its shifts are whole rows of
      the grid, so the offsets of the adds stay small and so does what the products cover,
      ``length + max(off_o)`` (960 entries per 32 x 32 row for 3x3 where the last axis's taps need
      1022: 4% faster on 8 x 32 x 32 x 32, 6-8% on smaller images or 5x5 kernels).
    * The adjoint takes the taps of the last axis that has several, and covers whole rows: the
      last ``reach`` entries of every row of its source are zeros (`depthwise_adjoint`), the taps
      reaching past a row read only those, and the flat adds read in their place the start of the
      next row's products, computed from the same zeros; its last add writes straight into the
      output.

    A copy of all ``k_o * k_g`` windows with one GEMV per row moves three times the data on a 3x3
    kernel: on 8 x 32 x 32 x 32, 3x3, float32, that is 0.40 ms forward where this was 0.31 (the
    `numpy.einsum` products: 0.44); one GEMM per channel over all images (blocks of channels)
    measured 5% slower than one per row. Blocks hold about `_COLUMNS_BYTES` of shifted rows and
    products.
    """
    batch, channels = batch_channels
    dtype, item, n = source.dtype, source.itemsize, len(strides)
    taps_shape, pixels = kernel.shape[:n], math.prod(padded)
    gemm_taps = taps_shape[gemm_axis]
    others = taps_shape[:gemm_axis] + taps_shape[gemm_axis + 1 :]
    offsets = _flat_offsets(others, tuple(strides[:gemm_axis] + strides[gemm_axis + 1 :]))
    outer = len(offsets)
    # weights[c, o, g]: per channel, the other taps in the kernel's order, then `gemm_axis`'s
    order = (n, *(axis for axis in range(n) if axis != gemm_axis), gemm_axis)
    weights = np.ascontiguousarray(kernel.transpose(order)).reshape(channels, outer, gemm_taps)
    spatial = padded if crop is None else tuple(axis.stop for axis in crop)
    out = np.empty((batch, channels, *spatial), dtype=dtype)
    images, width = _block(batch, channels, _COLUMNS_BYTES // ((outer + gemm_taps) * width_row * item))
    rows = images * width
    shifted = scratch("columns", (rows, gemm_taps, width_row), dtype)
    products = scratch("grid", (outer, rows, width_row), dtype)
    steps = [math.prod(padded[i + 1 :]) * item for i in range(n)]
    for first, high_image, low, high in _blocks(batch, channels, images, width):
        shape, count = (high_image - first, high - low), (high_image - first) * (high - low)
        windows = np.ndarray(  # the row shifted by each tap of `gemm_axis` (bounds checked)
            (*shape, gemm_taps, width_row),
            dtype=dtype,
            buffer=source,
            offset=(first * channels + low) * pixels * item,
            strides=(channels * pixels * item, pixels * item, strides[gemm_axis] * item, item),
        )
        block = shifted[:count].reshape(*shape, gemm_taps, width_row)
        np.copyto(block, windows)
        target = products[:, :count].reshape(outer, *shape, width_row).transpose(1, 2, 0, 3)
        if crop is None and outer == 1:  # (the adjoint of a kernel along `gemm_axis` only)
            target = out.reshape(batch, channels, 1, pixels)[first:high_image, low:high]
        np.matmul(weights[low:high], block, out=target)
        if crop is None and outer == 1:
            continue
        flat = products[:, :count].reshape(outer, -1)
        total = flat[0]
        with np.errstate(all="ignore"):  # (the forward's entries mixing rows may be anything)
            for o in range(1, outer):
                size = total.size - offsets[o]
                if crop is None and o == outer - 1:  # the adjoint's last add: into the output
                    result = out.reshape(batch, channels, pixels)[first:high_image, low:high].reshape(-1)
                    np.add(total[:size], flat[o, offsets[o] :], out=result[:size])
                    result[size:] = total[size:]
                    break
                np.add(total[:size], flat[o, offsets[o] : offsets[o] + size], out=total[:size])
        if crop is None:
            continue
        # Output q of row r is entry r * width_row + q of `total`.
        sums = np.ndarray(
            (*shape, *spatial),
            dtype=dtype,
            buffer=products,
            strides=(shape[1] * width_row * item, width_row * item, *steps),
        )
        out[first:high_image, low:high] = sums
    return out
