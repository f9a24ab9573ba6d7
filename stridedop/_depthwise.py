"""Stride-1 depthwise correlation (one channel and one filter per group) and its adjoint.

A depthwise layer has no sum over channels, so a matrix product would multiply mostly zeros;
here every tap is a vectorized multiply-add: one `numpy.einsum` over a strided view of all the
taps of a block, which keeps one pass per tap with no temporary as long as its innermost loop
runs along the contiguous output. The products live on the flat padded grid, where output
``q`` reads entry ``q + shift(tap)``. The two layouts get there differently:

* channels-last: the channels are innermost, so a tap is a shift by a multiple of ``C`` entries
  and the kernel, tiled along an output row of ``(pixels, C)``, is the same for every row: the
  forward product runs row by row straight into the output, the adjoint over the flat batch;
* channels-first: every ``(image, channel)`` row of the batch is a flat grid and the kernel one
  number per row and tap. A tap along the last axis shifts by one entry, as the output does;
  `numpy.einsum` would then run those taps innermost (a few entries per loop), so they split
  into even and odd taps: two products whose taps are two entries apart, then one sum.

The adjoint of a stride-1 layer is the correlation of ``y`` zero-padded by ``extent - 1`` with
the flipped kernel. Laid on the padded input's grid with ``y`` in the leading corner of every
image, the zeros after one image's last output row are the padding before the next image's
first one, so ``y`` is embedded once (after ``reach`` zeros) and the products land on the
padded input itself: nothing is cropped.

Work arrays come from `_apply._scratch`; channels-first blocks hold about `_BLOCK_BYTES` of rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._geometry import Axis, flat_grid

__all__ = ["depthwise_adjoint", "depthwise_correlate", "depthwise_suits"]

_BLOCK_BYTES = 2**20  # channels-first: rows per block (fewer, larger calls measured faster); tile bound
_TILE_ENTRIES = 2**13  # channels-last: entries per block, the width of the tiled kernel
_SHORT_ROWS = 384  # channels-first: fewest outputs per row on the grid for the products by rows
_LABELS = "abdefghiklmnopqstuvwxyz"  # einsum labels of the tap axes ("c", "j", "r" are taken)

Scratch = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


def depthwise_suits(
    kernel: np.ndarray,
    groups: int,
    dtype: np.dtype,
    axes: tuple[Axis, ...] = (),
    channels_first: bool = False,
) -> bool:
    """Whether the depthwise products serve this layer: one channel and one filter per group, numbers.

    Channels-first, each product runs along one row of the padded grid: rows with fewer than
    `_SHORT_ROWS` outputs (small images, wide kernels) spend more in the loop around the products
    than in them, and the im2col product serves them better (measured).
    """
    if not (
        groups > 1 and kernel.shape[-2] == 1 and kernel.shape[-1] == groups and np.dtype(dtype).kind in "iufc"
    ):
        return False
    if not (channels_first and axes):
        return True
    padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    return math.prod(padded) - _grid(padded, axes)[1] >= _SHORT_ROWS


def _scratch() -> Scratch:
    from ._apply import _scratch as scratch  # the work arrays the other strategies share

    return scratch


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
    n = len(axes)
    flipped = kernel[(slice(None, None, -1),) * n].reshape(*kernel.shape[:n], kernel.shape[-1])
    padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    strides, reach = _grid(padded, axes)
    batch = y.shape[0]
    channels = y.shape[1] if channels_first else y.shape[-1]
    shape = (batch, channels, *padded) if channels_first else (batch, *padded, channels)
    lead = reach if channels_first else reach * channels
    # y in the leading corner of every image, after `reach` zeros: the zero padding of all of them.
    source = _scratch()("padded", (lead + math.prod(shape),), y.dtype)
    source.fill(0)
    corner = tuple(slice(0, axis.output) for axis in axes)
    embedded = source[lead:].reshape(shape)
    embedded[(slice(None), slice(None), *corner) if channels_first else (slice(None), *corner)] = y
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
    tiled = _scratch()("tile", (*taps_shape, -(-nb // channels), channels), source.dtype)
    np.copyto(tiled, kernel[..., None, :])
    tile = tiled.reshape(*taps_shape, -1)[..., :nb]
    tap_strides = tuple(stride * channels * item for stride in strides)
    blocks, taps = length // nb, _LABELS[: len(strides)]
    for start, count, width in ((0, blocks, nb), (blocks * nb, 1, length - blocks * nb)):
        if count == 0 or width == 0:
            continue
        windows = as_strided(
            source[start:],
            shape=(count, *taps_shape, width),
            strides=(nb * item, *tap_strides, item),
            writeable=False,
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
    tiled = _scratch()("tile", (*taps_shape, -(-nb // channels), channels), xp.dtype)
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
        windows = as_strided(
            xp.reshape(-1)[start:],
            shape=(batch, *outputs[:-1], count, *taps_shape, width),
            strides=(math.prod(padded) * channels * item, *steps[:-1], nb * item, *tap_strides, item),
            writeable=False,
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
    to two products, two entries apart, whose sum is the output.
    """
    batch, channels = batch_channels
    dtype, item, n = source.dtype, source.itemsize, len(axes)
    if padded is None:
        padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    pixels, rows = math.prod(padded), batch * channels
    strides, reach = _grid(padded, axes)
    length = pixels - reach if crop is not None else pixels  # outputs per row on the grid
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
    # (*k, C) -> (rows, *k): the kernel of every (image, channel) row.
    weights = np.ascontiguousarray(
        np.broadcast_to(np.moveaxis(kernel, -1, 0), (batch, channels, *kernel.shape[:n]))
    )
    weights = weights.reshape(rows, *kernel.shape[:n])
    if crop is None:
        out = np.empty((batch, channels, *padded), dtype=dtype)
        out_rows = out.reshape(rows, pixels)
    else:
        out = np.empty((batch, channels, *(axis.output for axis in axes)), dtype=dtype)
        out_rows = out.reshape(rows, *out.shape[2:])
    per_block = max(1, min(rows, _BLOCK_BYTES // (pixels * item)))
    extra = len(parts) - (crop is None)  # work arrays: every product but the first straight into `out`
    sums = _scratch()("grid", (extra, per_block, pixels), dtype) if extra else None
    if sums is not None and crop is not None:
        sums[..., length:] = 0  # (past each row's outputs: added up whole, then dropped)
    taps = _LABELS[:n]
    for start in range(0, rows, per_block):
        stop = min(start + per_block, rows)
        targets = [] if crop is not None else [out_rows[start:stop]]
        targets += [sums[i, : stop - start] for i in range(extra)] if sums is not None else []
        for part, target in zip(parts, targets):
            windows = as_strided(
                source[start * pixels + sum(offset for *_, offset in part) :],
                shape=(stop - start, *(count for _, count, _, _ in part), length),
                strides=(pixels * item, *(stride * item for _, _, stride, _ in part), item),
                writeable=False,
            )
            index = (slice(start, stop), *(piece for piece, *_ in part))
            np.einsum(f"r{taps}j,r{taps}->rj", windows, weights[index], out=target[:, :length])
        total = targets[0].reshape(-1)
        for target in targets[1:]:
            np.add(total, target.reshape(-1), out=total)
        if crop is not None:
            out_rows[start:stop] = targets[0].reshape(stop - start, *padded)[(slice(None),) + crop]
    return out
