"""Applying the operator and its adjoint to data without ever building the dense operator.

All functions here work in the canonical channels-last order: inputs ``(B, *m, C)``, outputs
``(B, *o, F)`` and kernels ``(*k, C // groups, F)``; `ConvOperator` moves the axes of the
channels-first layout before and after. Two strategies compute the convolution:

* *tap GEMM*: one matrix product of every (padded) input pixel with all taps of the kernel,
  ``(pixels, C) @ (C, taps * F)``, followed by one strided slice-add per tap. No input copy,
  and large GEMMs; it computes ``stride ** N`` times more products than needed.
* *im2col*: copy the receptive field of every output pixel into a row (a strided window view
  made contiguous) and do one product ``(outputs, taps * C) @ (taps * C, F)``. Best for strides
  and for few input channels, where the tap GEMM's products are too thin.

The adjoint (transposed convolution) is the tap GEMM read backwards: one product per pixel of
``y`` with all taps, then a strided slice-add of each tap into the padded input.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._geometry import Geometry
from ._layout import kernel_taps

__all__ = ["convolve", "convolve_adjoint"]


def _tap_slices(geometry: Geometry, tap: tuple[int, ...]) -> tuple[slice, ...]:
    """For one tap, the slice of the padded input that each output position reads."""
    return tuple(
        slice(r * axis.dilation, r * axis.dilation + (axis.output - 1) * axis.stride + 1, axis.stride)
        for r, axis in zip(tap, geometry.axes)
    )


def _pad(x: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Pad the spatial axes of ``(B, *m, C)`` (zeros, or wrap-around for circular)."""
    pads = [(0, 0), *geometry.pads, (0, 0)]
    if not any(lo or hi for lo, hi in geometry.pads):
        return x
    return np.pad(x, pads, mode="wrap" if geometry.circular else "constant")


def _unpad(xp: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Adjoint of `_pad`: crop the zero padding, or fold wrapped entries back onto the input."""
    if not geometry.circular:
        crop = tuple(slice(axis.lo, axis.lo + axis.size) for axis in geometry.axes)
        index = (slice(None), *crop)
        return xp[index]
    for i, axis in enumerate(geometry.axes, start=1):
        size, padded = axis.size, xp.shape[i]
        blocks = -(-padded // size)
        widths = [(0, 0)] * xp.ndim
        widths[i] = (0, blocks * size - padded)
        grid = np.pad(xp, widths).reshape(*xp.shape[:i], blocks, size, *xp.shape[i + 1 :])
        # Padded entry p holds input entry (p - lo) mod m.
        xp = np.roll(grid.sum(axis=i), -axis.lo, axis=i)
    return xp


def _use_im2col(geometry: Geometry) -> bool:
    if any(axis.stride > 1 for axis in geometry.axes):
        return True
    return geometry.group_channels * geometry.taps <= 64 and geometry.group_channels < 8


def convolve(kernel: np.ndarray, geometry: Geometry, x: np.ndarray) -> np.ndarray:
    """Convolve a batch ``x`` of shape ``(B, *m, C)``; returns ``(B, *o, F)``."""
    dtype = np.result_type(kernel.dtype, x.dtype)
    xp = _pad(x.astype(dtype, copy=False), geometry)
    kernel = kernel.astype(dtype, copy=False)
    if _use_im2col(geometry):
        return _convolve_im2col(kernel, geometry, xp)
    return _convolve_tap_gemm(kernel, geometry, xp)


def _convolve_tap_gemm(kernel: np.ndarray, geometry: Geometry, xp: np.ndarray) -> np.ndarray:
    groups, cg, fg, taps = geometry.groups, geometry.group_channels, geometry.group_filters, geometry.taps
    batch, padded = xp.shape[0], xp.shape[1:-1]
    pixels = batch * math.prod(padded)
    # (G, pixels, Cg) @ (G, Cg, taps * Fg): every pixel times every tap of every filter.
    columns = xp.reshape(pixels, groups, cg).transpose(1, 0, 2)
    weights = kernel.reshape(geometry.taps, cg, groups, fg).transpose(2, 1, 0, 3)
    products = np.matmul(columns, weights.reshape(groups, cg, taps * fg))
    products = products.reshape(groups, batch, *padded, taps, fg)
    out = np.empty((batch, *geometry.spatial_output, groups, fg), dtype=xp.dtype)
    for t, tap in enumerate(kernel_taps(geometry)):
        index = (slice(None), slice(None), *_tap_slices(geometry, tap), t)
        part = np.moveaxis(products[index], 0, -2)
        if t == 0:
            out[...] = part
        else:
            out += part
    return out.reshape(batch, *geometry.spatial_output, geometry.filters)


def _convolve_im2col(kernel: np.ndarray, geometry: Geometry, xp: np.ndarray) -> np.ndarray:
    groups, cg, fg, n = geometry.groups, geometry.group_channels, geometry.group_filters, geometry.ndim
    batch = xp.shape[0]
    extents = tuple(axis.extent for axis in geometry.axes)
    windows = sliding_window_view(xp, extents, axis=tuple(range(1, n + 1)))  # (B, *w, C, *ke)
    windows = windows[
        (slice(None), *(slice(None, None, axis.stride) for axis in geometry.axes), slice(None))
        + tuple(slice(None, None, axis.dilation) for axis in geometry.axes)
    ]
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


def convolve_adjoint(kernel: np.ndarray, geometry: Geometry, y: np.ndarray) -> np.ndarray:
    """Apply the adjoint (transposed convolution) to ``y`` of shape ``(B, *o, F)``.

    `kernel` must already be conjugated for a complex adjoint. Returns ``(B, *m, C)``.
    """
    dtype = np.result_type(kernel.dtype, y.dtype)
    y = y.astype(dtype, copy=False)
    kernel = kernel.astype(dtype, copy=False)
    groups, cg, fg, taps = geometry.groups, geometry.group_channels, geometry.group_filters, geometry.taps
    batch = y.shape[0]
    outputs = batch * math.prod(geometry.spatial_output)
    # (G, outputs, Fg) @ (G, Fg, taps * Cg): every output times every tap, back onto channels.
    rows = y.reshape(outputs, groups, fg).transpose(1, 0, 2)
    weights = kernel.reshape(taps, cg, groups, fg).transpose(2, 3, 0, 1).reshape(groups, fg, taps * cg)
    products = np.matmul(rows, weights).reshape(groups, batch, *geometry.spatial_output, taps, cg)
    padded = tuple(axis.size + axis.lo + axis.hi for axis in geometry.axes)
    xp = np.zeros((batch, *padded, groups, cg), dtype=dtype)
    for t, tap in enumerate(kernel_taps(geometry)):
        index = (slice(None), *_tap_slices(geometry, tap))
        target = xp[index]
        target += np.moveaxis(products[..., t, :], 0, -2)
    xp = xp.reshape(batch, *padded, geometry.channels)
    return np.ascontiguousarray(_unpad(xp, geometry))
