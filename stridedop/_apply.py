"""Applying the operator and its adjoint to data without ever building the dense operator.

Inputs are batches ``(B, *m, C)`` (channels-last) or ``(B, C, *m)`` (channels-first), kernels are
always channels-last ``(*k, C // groups, F)``. The strategies, chosen per geometry:

* *flat im2col* (stride 1): pad the input and flatten its batch and spatial axes into one pixel
  axis. Output pixel ``q`` (on the padded grid) reads the window of pixels ``q + shift(tap)``,
  where ``shift`` is the tap's offset in the flattened grid, so the im2col matrix is one
  strided view of the flat input (rows overlap in memory). It is copied block by block into a
  small buffer that stays in cache and multiplied by the kernel matrix ``(taps * C, F)``: one
  large GEMM per block. Output pixels that fall off the real output grid are computed (a few
  percent) and dropped. Channels-first runs the transposed product, with the same windows, so
  that every copy is contiguous and the result comes out channels-first; channels-last inputs
  with few channels are moved to channels-first for it, since their windows are too thin.
* *strided im2col* (stride > 1): the windows of the output grid itself, from
  ``sliding_window_view``, copied once and multiplied by the kernel matrix.
* *tap GEMM* (the adjoint at stride > 1): one product of every output pixel with all taps,
  then a strided slice-add of each tap into the padded input.

The adjoint at stride 1 is a correlation of the zero-padded ``y`` with the flipped kernel whose
channel axes are swapped, so it uses the flat im2col too; with few input channels (few rows for
that product) it is a *scatter* instead: one GEMM for every tap of every pixel of ``y``, then one
contiguous slice-add per tap on the flat padded input.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ._buffer import kernel_taps
from ._geometry import Axis, Geometry
from ._modes import pad, pad_adjoint

__all__ = ["convolve", "convolve_adjoint"]

_BLOCK_BYTES = 2**20  # size of one block of the im2col matrix: stays in the L2/L3 cache
_FEW_CHANNELS = 4  # input channels per group up to which stride-1 products go channels-first


def _flat_grid(padded: tuple[int, ...], axes: tuple[Axis, ...]) -> tuple[list[int], int]:
    """Pixel steps of the flattened padded grid, and how far past a pixel its window reaches."""
    steps = [math.prod(padded[i + 1 :]) for i in range(len(padded))]
    return steps, sum((axis.extent - 1) * step for axis, step in zip(axes, steps))


def _spatial_pads(geometry: Geometry, channels_first: bool) -> list[tuple[int, int]]:
    """``(lo, hi)`` for every axis of a batch: the spatial ones, none on batch and channels."""
    spatial = list(geometry.pads)
    return [(0, 0), (0, 0), *spatial] if channels_first else [(0, 0), *spatial, (0, 0)]


def _pad(x: np.ndarray, geometry: Geometry, channels_first: bool) -> np.ndarray:
    """Pad the spatial axes of a batch the way the geometry's padding mode says."""
    return pad(x, _spatial_pads(geometry, channels_first), geometry.mode)


def _unpad(xp: np.ndarray, geometry: Geometry, channels_first: bool) -> np.ndarray:
    """Adjoint of `_pad`: crop zero padding, or fold padded entries back onto what they read."""
    return pad_adjoint(xp, _spatial_pads(geometry, channels_first), geometry.mode)


def convolve(kernel: np.ndarray, geometry: Geometry, x: np.ndarray, channels_first: bool) -> np.ndarray:
    """Convolve a batch ``x``; returns ``(B, *o, F)`` or ``(B, F, *o)``."""
    dtype = np.result_type(kernel.dtype, x.dtype)
    kernel = kernel.astype(dtype, copy=False)
    x = x.astype(dtype, copy=False)
    if all(axis.stride == 1 for axis in geometry.axes):
        if channels_first:
            return _flat_im2col(kernel, geometry.axes, geometry.groups, _pad(x, geometry, True), True)
        if geometry.group_channels <= _FEW_CHANNELS:
            # Few channels: the channels-first product copies whole rows; move the arrays there.
            xp = _pad(np.moveaxis(x, -1, 1), geometry, True)
            result = _flat_im2col(kernel, geometry.axes, geometry.groups, xp, True)
            return np.ascontiguousarray(np.moveaxis(result, 1, -1))
        return _flat_im2col(kernel, geometry.axes, geometry.groups, _pad(x, geometry, False), False)
    if channels_first:
        xp = _pad(np.moveaxis(x, 1, -1), geometry, False)
        return np.ascontiguousarray(np.moveaxis(_strided_im2col(kernel, geometry, xp), -1, 1))
    return _strided_im2col(kernel, geometry, _pad(x, geometry, False))


def _flat_im2col(
    kernel: np.ndarray, axes: tuple[Axis, ...], groups: int, xp: np.ndarray, channels_first: bool
) -> np.ndarray:
    """Stride-1 correlation of the padded batch `xp` by blocked im2col over the flat pixel grid."""
    # The windows below are strides into C-ordered memory; np.pad, for one, keeps the memory order
    # of its input, and a reshape that merges no axes keeps any strides.
    xp = np.ascontiguousarray(xp)
    n = len(axes)
    *taps_shape, group_channels, filters = kernel.shape
    group_filters = filters // groups
    rows = math.prod(taps_shape) * group_channels
    batch = xp.shape[0]
    padded = xp.shape[2:] if channels_first else xp.shape[1:-1]
    pixels = math.prod(padded)
    grid_steps, reach = _flat_grid(padded, axes)
    shifts = [axis.dilation * step for axis, step in zip(axes, grid_steps)]
    channels = groups * group_channels
    item, dtype = xp.itemsize, xp.dtype
    block = max(64, _BLOCK_BYTES // (groups * rows * item))
    # Channels-first: (F, rows) @ (rows, pixels), each im2col row a contiguous copy.
    # Channels-last: (pixels, rows) @ (rows, F), each im2col row a window of taps * C entries.
    weights = kernel.reshape(*taps_shape, group_channels, groups, group_filters)
    weights = np.moveaxis(weights, n + 1, 0)  # (G, *k, Cg, Fg)
    if channels_first:
        weights = np.ascontiguousarray(np.moveaxis(weights, -1, 1)).reshape(groups, group_filters, rows)
        buffer = np.empty((groups, *taps_shape, group_channels, block), dtype=dtype)
    else:
        weights = np.ascontiguousarray(weights).reshape(groups, rows, group_filters)
        buffer = np.empty((groups, block, *taps_shape, group_channels), dtype=dtype)

    if channels_first:  # one image at a time: (C, pixels), the pixels contiguous
        out = np.empty((batch, groups, group_filters, pixels), dtype=dtype)
        images = [(xp[b].reshape(channels, pixels), pixels, 1, pixels, out[b]) for b in range(batch)]
    else:  # the whole batch as one flat grid: (B * pixels, C)
        out = np.empty((batch * pixels, groups, group_filters), dtype=dtype)
        flat = xp.reshape(batch * pixels, channels)
        images = [(flat, 1, channels, batch * pixels, out.transpose(1, 2, 0))]
    for image, channel_step, pixel_step, count, target in images:
        length = count - reach  # the pixels q whose windows fit inside the image
        # windows[g, *r, c, q] = pixel q + shift(r), channel g * Cg + c
        windows = as_strided(
            image,
            shape=(groups, *taps_shape, group_channels, length),
            strides=(
                group_channels * channel_step * item,
                *(shift * pixel_step * item for shift in shifts),
                channel_step * item,
                pixel_step * item,
            ),
            writeable=False,
        )
        for start in range(0, length, block):
            stop = min(start + block, length)
            if channels_first:
                columns = buffer[..., : stop - start]
                np.copyto(columns, windows[..., start:stop])
                products = columns.reshape(groups, rows, stop - start)
                np.matmul(weights, products, out=target[..., start:stop])
            else:
                columns = buffer[:, : stop - start]
                np.copyto(columns, np.moveaxis(windows[..., start:stop], -1, 1))
                products = columns.reshape(groups, stop - start, rows)
                np.matmul(products, weights, out=np.swapaxes(target[..., start:stop], 1, 2))
    crop = tuple(slice(0, axis.output) for axis in axes)
    if channels_first:
        index = (slice(None), slice(None), *crop)
        return np.ascontiguousarray(out.reshape(batch, filters, *padded)[index])
    index = (slice(None), *crop)
    return np.ascontiguousarray(out.reshape(batch, *padded, filters)[index])


def _strided_im2col(kernel: np.ndarray, geometry: Geometry, xp: np.ndarray) -> np.ndarray:
    """Correlation with strides of the padded channels-last batch `xp` by one im2col copy."""
    groups, cg, fg, n = geometry.groups, geometry.group_channels, geometry.group_filters, geometry.ndim
    batch = xp.shape[0]
    extents = tuple(axis.extent for axis in geometry.axes)
    windows = sliding_window_view(xp, extents, axis=tuple(range(1, n + 1)))  # (B, *w, C, *ke)
    index = (
        slice(None),
        *(slice(None, None, axis.stride) for axis in geometry.axes),
        slice(None),
        *(slice(None, None, axis.dilation) for axis in geometry.axes),
    )
    windows = windows[index]
    # (B, *o, C, *k) -> rows (G, B * outputs, taps * Cg) in the kernel's (tap, channel) order;
    # the one copy of the input happens here.
    outputs = batch * math.prod(geometry.spatial_output)
    rows = np.ascontiguousarray(np.moveaxis(windows, n + 1, -1))
    rows = rows.reshape(outputs, geometry.taps, groups, cg).transpose(2, 0, 1, 3)
    rows = rows.reshape(groups, outputs, geometry.taps * cg)
    weights = kernel.reshape(geometry.taps * cg, groups, fg).transpose(1, 0, 2)
    out = np.matmul(rows, weights)  # (G, outputs, Fg)
    out = out.transpose(1, 0, 2)
    return out.reshape(batch, *geometry.spatial_output, geometry.filters)


def convolve_adjoint(
    kernel: np.ndarray, geometry: Geometry, y: np.ndarray, channels_first: bool
) -> np.ndarray:
    """Apply the adjoint (transposed convolution) to a batch ``y`` of outputs.

    `kernel` must already be conjugated for a complex adjoint. Returns ``(B, *m, C)`` or
    ``(B, C, *m)``.
    """
    dtype = np.result_type(kernel.dtype, y.dtype)
    y = y.astype(dtype, copy=False)
    kernel = kernel.astype(dtype, copy=False)
    if all(axis.stride == 1 for axis in geometry.axes):
        if geometry.group_channels <= _FEW_CHANNELS:
            # Channels-first rows are contiguous: move the (small) arrays there and back.
            if channels_first:
                xp = _adjoint_by_scatter(kernel, geometry, y)
            else:
                xp = np.moveaxis(_adjoint_by_scatter(kernel, geometry, np.moveaxis(y, -1, 1)), 1, -1)
        else:
            xp = _adjoint_by_correlation(kernel, geometry, y, channels_first)
    else:
        if channels_first:
            y = np.moveaxis(y, 1, -1)
        xp = _adjoint_tap_gemm(kernel, geometry, y)
        if channels_first:
            xp = np.moveaxis(xp, -1, 1)
    return np.ascontiguousarray(_unpad(xp, geometry, channels_first))


def _adjoint_by_correlation(
    kernel: np.ndarray, geometry: Geometry, y: np.ndarray, channels_first: bool
) -> np.ndarray:
    """Stride-1 adjoint into the padded input: ``xp[p] = sum_r y[p - r*d] K[r]^T``.

    That is a correlation of ``y`` zero-padded by ``extent - 1`` on both sides with the kernel
    flipped along its taps, its channel axes swapped group by group.
    """
    n, groups = geometry.ndim, geometry.groups
    cg, fg = geometry.group_channels, geometry.group_filters
    flipped = kernel[(slice(None, None, -1),) * n]
    # (*k, Cg, G * Fg) -> (*k, Fg, G * Cg): within each group, inputs and outputs trade places.
    swapped = flipped.reshape(*geometry.spatial_kernel, cg, groups, fg)
    swapped = swapped.transpose(*range(n), n + 2, n + 1, n).reshape(*geometry.spatial_kernel, fg, groups * cg)
    spatial = [(axis.extent - 1, axis.extent - 1) for axis in geometry.axes]
    pads = [(0, 0), (0, 0), *spatial] if channels_first else [(0, 0), *spatial, (0, 0)]
    axes = tuple(
        Axis(axis.output + 2 * (axis.extent - 1), axis.kernel, 1, axis.dilation) for axis in geometry.axes
    )
    return _flat_im2col(swapped, axes, groups, np.pad(y, pads), channels_first)


def _adjoint_by_scatter(kernel: np.ndarray, geometry: Geometry, y: np.ndarray) -> np.ndarray:
    """Stride-1 adjoint of a channels-first batch ``y`` into the padded input, for few channels.

    ``xp[q + shift(r)] += K[r]^T y[q]``: `y` is placed on the flat padded grid (zeros elsewhere),
    one GEMM per image gives every tap of every pixel, and each tap is added back with one
    contiguous slice-add per channel row. With few input channels this beats the correlation,
    whose GEMM would have only C output rows.
    """
    groups = geometry.groups
    cg, fg, taps = geometry.group_channels, geometry.group_filters, geometry.taps
    batch, dtype = y.shape[0], y.dtype
    padded = tuple(axis.size + axis.lo + axis.hi for axis in geometry.axes)
    pixels = math.prod(padded)
    grid_steps, reach = _flat_grid(padded, geometry.axes)
    shifts = [
        sum(r * axis.dilation * step for r, axis, step in zip(tap, geometry.axes, grid_steps))
        for tap in kernel_taps(geometry)
    ]
    grid = np.zeros((batch, groups, fg, *padded), dtype=dtype)
    index = (slice(None), slice(None), slice(None), *(slice(0, axis.output) for axis in geometry.axes))
    grid[index] = y.reshape(batch, groups, fg, *geometry.spatial_output)
    grid = grid.reshape(batch, groups, fg, pixels)
    length = pixels - reach
    # (*k, Cg, G * Fg) -> (G, taps * Cg, Fg)
    grouped = np.moveaxis(kernel.reshape(taps, cg, groups, fg), 2, 0)
    weights = np.ascontiguousarray(grouped).reshape(groups, taps * cg, fg)
    xp = np.zeros((batch, groups, cg, pixels), dtype=dtype)
    for b in range(batch):
        products = np.matmul(weights, grid[b, :, :, :length]).reshape(groups, taps, cg, length)
        for t, shift in enumerate(shifts):
            xp[b, :, :, shift : shift + length] += products[:, t]
    return xp.reshape(batch, groups * cg, *padded)


def _adjoint_tap_gemm(kernel: np.ndarray, geometry: Geometry, y: np.ndarray) -> np.ndarray:
    """Adjoint into the padded channels-last input: one GEMM, then a slice-add per tap."""
    groups, cg, fg, taps = geometry.groups, geometry.group_channels, geometry.group_filters, geometry.taps
    batch = y.shape[0]
    outputs = batch * math.prod(geometry.spatial_output)
    # (G, outputs, Fg) @ (G, Fg, taps * Cg): every output times every tap, back onto channels.
    rows = y.reshape(outputs, groups, fg).transpose(1, 0, 2)
    weights = kernel.reshape(taps, cg, groups, fg).transpose(2, 3, 0, 1).reshape(groups, fg, taps * cg)
    products = np.matmul(rows, weights).reshape(groups, batch, *geometry.spatial_output, taps, cg)
    padded = tuple(axis.size + axis.lo + axis.hi for axis in geometry.axes)
    xp = np.zeros((batch, *padded, groups, cg), dtype=y.dtype)
    for t, tap in enumerate(kernel_taps(geometry)):
        window = tuple(
            slice(r * axis.dilation, r * axis.dilation + (axis.output - 1) * axis.stride + 1, axis.stride)
            for r, axis in zip(tap, geometry.axes)
        )
        index = (slice(None), *window)
        target = xp[index]
        target += np.moveaxis(products[..., t, :], 0, -2)
    return xp.reshape(batch, *padded, geometry.channels)
