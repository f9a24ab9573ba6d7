"""When two convolutions in a row are one convolution, and its kernel.

Correlating with ``K1`` and then with ``K2`` reads the input at ``o + r2*d2 + r1*d1`` (stride 1):
one correlation whose kernel has, at offset ``t``, the sum over ``r1*d1 + r2*d2 == t`` of the
channel products ``K1[r1] @ K2[r2]``, the kernels' convolution. That holds on the whole output
when neither pads (both 'valid'), and when both wrap around the same grid (circular, output
grid equal to the input grid): the padding amounts then add up, and so do the wraps.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ._conv import canonical_kernel
from ._geometry import Geometry, make_geometry

__all__ = ["compose_convolutions"]


def _fusable(geometry: Geometry) -> bool:
    return geometry.groups == 1 and all(axis.stride == 1 for axis in geometry.axes)


def compose_convolutions(
    second: np.ndarray, second_geometry: Geometry, first: np.ndarray, first_geometry: Geometry
) -> tuple[np.ndarray, Geometry] | None:
    """Kernel and geometry of ``second @ first`` when it is one convolution, else None.

    Kernels come in their geometry's layout and so does the result.
    """
    if not (_fusable(first_geometry) and _fusable(second_geometry)):
        return None
    if first_geometry.layout != second_geometry.layout:
        return None
    both_valid = all(axis.lo == axis.hi == 0 for axis in (*first_geometry.axes, *second_geometry.axes))
    both_circular = (
        first_geometry.circular
        and second_geometry.circular
        and first_geometry.spatial_output == first_geometry.spatial_input
        and second_geometry.spatial_output == second_geometry.spatial_input
    )
    if not (both_valid or both_circular):
        return None
    if not _fused_kernel_is_small(first_geometry, second_geometry):
        return None
    layout = first_geometry.layout
    k1 = canonical_kernel(first, layout)
    k2 = canonical_kernel(second, layout)
    dilations = []
    for i, (a1, a2) in enumerate(zip(first_geometry.axes, second_geometry.axes)):
        if a1.dilation == a2.dilation:
            dilations.append(a1.dilation)
        else:  # different dilations: spell both kernels out at dilation 1 along this axis
            k1, k2 = _undilate(k1, i, a1.dilation), _undilate(k2, i, a2.dilation)
            dilations.append(1)
    kernel = _convolve_kernels(k1, k2)
    if layout == "channels_first":
        n = kernel.ndim - 2
        kernel = kernel.transpose(n + 1, n, *range(n))
    padding: Any
    if both_circular:
        padding = [
            (a1.lo + a2.lo, a1.hi + a2.hi) for a1, a2 in zip(first_geometry.axes, second_geometry.axes)
        ]
        mode = "circular"
    else:
        padding, mode = "valid", "zeros"
    geometry = make_geometry(
        kernel.shape,
        first_geometry.input_shape,
        padding=padding,
        padding_mode=mode,
        dilation=tuple(dilations),
        layout=layout,
    )
    return kernel, geometry


def _fused_kernel_is_small(first: Geometry, second: Geometry) -> bool:
    """Whether the fused kernel has at most as many taps as the two kernels' taps multiplied.

    It has that many sums at most; more taps are zeros spelled out between the taps of axes
    with different dilations (a dilation of 2**40 would spell 2**40 of them), and the lazy
    product is then the cheaper operator.
    """
    taps = 1
    for a1, a2 in zip(first.axes, second.axes):
        if a1.dilation == a2.dilation:
            taps *= a1.kernel + a2.kernel - 1
        else:
            taps *= a1.extent + a2.extent - 1
    return taps <= first.taps * second.taps


def _undilate(kernel: np.ndarray, axis: int, dilation: int) -> np.ndarray:
    """The kernel at dilation 1 along `axis`: zeros between its taps."""
    if dilation == 1:
        return kernel
    shape = list(kernel.shape)
    shape[axis] = (shape[axis] - 1) * dilation + 1
    spelled = np.zeros(shape, dtype=kernel.dtype)
    index = [slice(None)] * kernel.ndim
    index[axis] = slice(None, None, dilation)
    spelled[tuple(index)] = kernel
    return spelled


def _convolve_kernels(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """``K[t, c, g] = sum over r1 + r2 == t of sum_f K1[r1, c, f] K2[r2, f, g]`` (channels-last)."""
    n = k1.ndim - 2
    taps = tuple(a + b - 1 for a, b in zip(k1.shape[:n], k2.shape[:n]))
    dtype = np.result_type(k1.dtype, k2.dtype)
    kernel = np.zeros((*taps, k1.shape[n], k2.shape[n + 1]), dtype=dtype)
    for r2 in itertools.product(*map(range, k2.shape[:n])):
        window = tuple(slice(r, r + size) for r, size in zip(r2, k1.shape[:n]))
        kernel[window] += np.matmul(k1, k2[r2]).astype(dtype, copy=False)
    return kernel
