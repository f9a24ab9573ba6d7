"""Applying the operator and its adjoint to data without ever building the dense operator.

Inputs are batches ``(B, *m, C)`` (channels-last) or ``(B, C, *m)`` (channels-first), kernels are
always channels-last ``(*k, C // groups, F)``. Two methods, as in `scipy.signal.correlate`:

* ``"direct"``: spatial-domain products, with a strategy per geometry, dtype and batch;
* ``"fft"``: products of spectra, for large kernels on real and complex floats.

`resolve_method` turns ``"auto"`` into one of them from a cost model of both.

Direct strategies, forward direction (output ``y[o] = sum_r x[o * stride + r * dilation] K[r]``
on the padded input):

* *1x1 kernel*: one matrix product on the batch as it is.
* *tap GEMM* (stride 1, enough channels, BLAS floats, SciPy installed): pad the input and flatten
  its spatial axes (channels-last: and its batch) into one pixel axis, so that output pixel ``q``
  reads pixel ``q + shift(tap)`` for each tap. Every tap is then one GEMM of a contiguous slice
  of the flat input with the tap's ``(C, F)`` matrix, accumulated in place (BLAS ``beta = 1``,
  through `scipy.linalg.blas`) into the output. Nothing is copied but the padding; output pixels
  that fall off the real output grid are computed (a few percent) and dropped.
* *taps as channels* (stride 1, no groups, inputs up to `_WIDE_BYTES`; channels-last with few
  channels and a wide kernel, channels-first for tap GEMMs of up to `_WIDE_ROWS` rows): the last
  axis's taps are copied into channels, then tap GEMMs.
* *depthwise taps* (stride 1, one channel and one filter per group; `._depthwise`): channels-last,
  one vectorized multiply-add per tap (`numpy.einsum` on a strided view of the taps) with the
  kernel tiled along the channels; channels-first, row by ``(image, channel)`` row: for the BLAS
  dtypes one small GEMM per row over the row's copies shifted by the last axis's taps, then flat
  shifted adds; otherwise `numpy.einsum`, rows of a few hundred outputs or more (shorter ones go
  to the flat im2col).
* *flat im2col* (stride 1, otherwise): the same windows, copied block by block into a small
  buffer and multiplied by the kernel matrix ``(taps * C, F)``. With few channels per group
  the channels-first form copies whole rows.
* *strided im2col* (stride > 1): the windows of the output grid itself, copied block by block,
  in either layout; small images go several to a block (`_strided_blocks`). Channels-first, an
  input that is padded anyway (or copied many times over) is padded into its phases along the
  last axis instead, when the stride is no wider than the kernel, so that the copies read
  contiguous runs (`_split_last_axis`).

Adjoint (``xp[o * stride + r * dilation] += K[r]^T y[o]``, then `_unpad`; `_adjoint_strategy`
picks one). Tap ``r`` of output ``o`` lands on entry ``o + (r * d) // s`` of phase ``(r * d) mod s``
of the padded input, so on a grid holding `y` every tap writes one shifted stretch of its phase:

* *tap GEMM* (no groups, enough input channels, BLAS floats, SciPy installed; channels-first with
  strides or on two or more axes): ``y`` channels-last on the flat grid; each tap accumulates one
  GEMM (BLAS ``beta = 1``) straight into the ``(pixels, C)`` stretch it writes;
* *taps as channels* (the same with few input channels, stride 1 along the last axis, up to
  `_WIDE_BYTES`): the tap GEMMs of the layer whose channels are ``(c, r)`` for the last axis's
  taps ``r``, then one shifted add per ``r`` folds them back;
* *scatter* (strides or few input channels, more than one filter per group): ``y`` channels-first
  on the flat grid; per block one GEMM gives every tap, then one contiguous slice-add per tap;
* *correlation* (stride 1, otherwise): the correlation of ``y`` with the flipped kernel whose
  channel axes are swapped, through the flat stride-1 strategies above, ``y`` laid once in the
  corner of every image of the padded input's grid: each position looks back into the zeros
  after the previous image (`_looking_back`; nothing computed past the input, nothing cropped).
  With zero padding wider than that, ``y`` padded by ``extent - 1 - lo`` and ``extent - 1 - hi``
  gives only the input's own entries. Depthwise kernels take their own products, the same way;
* *polyphase* (strides with one filter per group): each phase of the padded input receives the
  taps of one residue and is a stride-1 adjoint of ``y``, planned as above.

With strides the phases are then written back into the padded input.

Memory: every strategy works in blocks of about `_BLOCK_BYTES`; besides the input and the output
it holds a padded copy of one of them. Work arrays up to `SCRATCH_BYTES` in all are kept per
thread and reused (`_memory.scratch`): fresh pages cost more than the products for small layers.

Circular padding by more than the input's size, or with a dilated kernel wider than the input,
is laid out near the input (`_circular_axis`): the padded input stays within about twice the
input, or the output, whatever the dilation and the amounts.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import itertools
import math
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._buffer import fold_axis
from ._depthwise import BLAS_DTYPES
from ._depthwise import depthwise_adjoint as _depthwise_adjoint
from ._depthwise import depthwise_correlate as _depthwise_taps
from ._depthwise import depthwise_suits as _depthwise_suits
from ._geometry import Axis, Geometry, flat_grid
from ._memory import INTP_MAX, scratch
from ._modes import pad, pad_adjoint

__all__ = ["METHODS", "convolve", "convolve_adjoint", "resolve_method"]

METHODS = ("auto", "direct", "fft")

_BLOCK_BYTES = 2**20  # one block of work: stays in the L2/L3 cache
_TAP_BLOCK_BYTES = 2**18  # tap GEMMs: the block of input and output that every tap rereads (L2)
_TAP_IMAGE_BYTES = 2**19  # channels-first tap GEMMs: largest image (input and output) every tap rereads
_GAP_BYTES = 64  # channels-first tap GEMMs: zeros between channel rows that are a multiple of ...
_SET_BYTES = 4096  # ... this many bytes long (addresses this far apart share a cache set)
_COLUMNS_BYTES = 2**17  # im2col: the columns of one group's block (measured on the layer table)
_IMAGES_BYTES = 2**20  # strided im2col: images within `_COLUMNS_BYTES` go whole, this many bytes a block
_SCATTER_BYTES = 2**23  # scatter adjoint: products per block (each tap's add is a call per block;
# past `SCRATCH_BYTES` with the other work arrays, a block is allocated per call: measured faster still)
_SPLIT_TAPS = 8  # channels-first strided im2col: split an unpadded input from this many taps per stride
_FEW_CHANNELS = 4  # channels per group up to which stride-1 products go channels-first
_TAP_GEMM_CHANNELS = 8  # channels per group from which one GEMM per tap beats im2col
_WIDE_BYTES = 16 * 2**20  # largest copy of the input with the taps of one axis as channels
_WIDE_ROWS = 64  # channels-first tap GEMMs: move taps into channels up to this many rows per tap
_SHORT_RUN = 64  # entries: zeroing runs this short one by one costs more than zeroing everything
_PIXELS_BYTES = 2**15  # channels-first 1x1 products: input of one image a block of pixels reads
_TILE_BYTES = 2**15  # transposing copies: the part of each image one tile reads (the L1 cache)
_TILE_BATCH = 4  # ... for batches of at least this many images (fewer pay more in calls than they save)

_Value = TypeVar("_Value")


# -- the planner ----------------------------------------------------------------------------------
def resolve_method(method: Any, geometry: Geometry, dtype: Any) -> str:
    """``"direct"`` or ``"fft"``: the method `method` names, or the planner's choice for ``"auto"``.

    Parameters
    ----------
    method : {"auto", "direct", "fft"}
        ``"auto"`` compares the cost of both methods for this geometry and dtype.
    geometry : Geometry
        The convolution.
    dtype : numpy.dtype
        The kernel's dtype; the FFT serves real and complex floats only.

    Returns
    -------
    str
        ``"direct"`` or ``"fft"``.

    Raises
    ------
    ValueError
        If `method` is not one of `METHODS`, or is ``"fft"`` for an integer or bool dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from stridedop._geometry import make_geometry
    >>> large = make_geometry((31, 31, 1, 1), (256, 256, 1), padding="same")
    >>> resolve_method("auto", large, np.float64), resolve_method("auto", large, np.int32)
    ('fft', 'direct')
    >>> resolve_method("AUTO", make_geometry((3, 3, 16, 16), (32, 32, 16)), np.float32)
    'direct'
    """
    if not isinstance(method, str) or method.lower() not in METHODS:
        choices = ", ".join(map(repr, METHODS))
        raise ValueError(f"`method` must be one of {choices}, got {method!r}")
    method, dtype = method.lower(), np.dtype(dtype)
    if method == "fft":
        if dtype.kind not in "fc":
            raise ValueError(
                f"`method`='fft' needs a floating or complex kernel, got dtype {dtype}; "
                "use method='direct' or 'auto'"
            )
        return "fft"
    if method == "direct" or dtype.kind not in "fc":
        return "direct"
    return "fft" if _fft_cost(geometry, dtype) < _direct_cost(geometry, dtype) else "direct"


def _direct_cost(geometry: Geometry, dtype: np.dtype) -> float:
    """Rough seconds of the direct method for one input: multiply-adds times their unit cost."""
    cg, fg = geometry.group_channels, geometry.group_filters
    outputs = math.prod(geometry.spatial_output)
    taps = math.prod(axis.kernel for axis in _direct_axes(geometry))
    unit = 1.5e-11 * (dtype.itemsize / 4 if dtype.kind == "f" else dtype.itemsize / 2)
    # Few channels per group: small products and elementwise work, far from the BLAS peak.
    unit *= 1 + 24 / (cg * fg)
    return outputs * taps * cg * geometry.filters * unit


def _fft_cost(geometry: Geometry, dtype: np.dtype) -> float:
    """Rough seconds of the FFT method for one input: transforms plus the spectral products."""
    lengths = _fft_lengths(geometry.axes, geometry.circular)
    size = math.prod(lengths)
    scale = (dtype.itemsize / 8 if dtype.kind == "f" else dtype.itemsize / 8) + 0.5
    transforms = (geometry.channels + geometry.filters) * size * math.log2(max(size, 2)) * 2.5e-10 * scale
    # Real inputs: half the frequencies. The spectra are also read and written once more each.
    frequencies = size / 2 if dtype.kind == "f" else size
    products = frequencies * geometry.group_channels * geometry.filters * 2.0e-9 * scale
    # A fixed cost per call (planning the transforms, the Python around them): tiny problems, where
    # the FFT's rounding would also replace the direct method's exact small-integer sums, go direct.
    overhead = 2e-5
    return overhead + transforms + products + (geometry.channels + geometry.filters) * size * 1e-9


# -- padding --------------------------------------------------------------------------------------
def _circular_axis(axis: Axis) -> Axis:
    """A circular axis as the direct strategies lay it on the padded input: at most ~2x the input.

    Tap ``r`` of output ``o`` reads input ``(o * s + r * d - lo) mod m``, so whole periods of
    padding change nothing: ``lo`` is taken modulo ``m``, the stride too (``m`` for a multiple of
    ``m``), and the high side padded just enough. A dilated kernel wider than the input folds: the
    taps that land on the same residue add up into one tap of a kernel of size ``m``, with
    dilation 1 and no low padding. Either way the padded input has ``(o - 1) * s' + extent``
    entries per axis with ``s' <= m``, whatever the stride, dilation or padding amounts. Axes
    padded by at most ``m`` are returned as they are.
    """
    return _circular_layout(axis)[0]


def _circular_layout(axis: Axis) -> tuple[Axis, bool]:
    """`_circular_axis`, and whether its kernel folds (a new kernel of size ``m``)."""
    if axis.lo + axis.hi <= axis.size:
        return axis, False
    lo, stride = axis.lo % axis.size, axis.stride % axis.size or axis.size
    high = (axis.output - 1) * stride + axis.extent - axis.size - lo
    if axis.extent <= axis.size and high >= 0:
        return Axis(axis.size, axis.kernel, stride, axis.dilation, lo, high), False
    return Axis(axis.size, axis.size, stride, 1, 0, (axis.output - 1) * stride), True


def _per_geometry(function: Callable[[Geometry], _Value]) -> Callable[[Geometry], _Value]:
    """`function` of a geometry, computed once per geometry and kept in its instance dict.

    A geometry is immutable, and its own derived values are cached properties kept there too;
    these are the ones the products need on every call (a few microseconds of Python each). Keys
    start with ``_cached``, which pickles of a geometry leave out (`Geometry.__getstate__`).
    """
    name = f"_cached {function.__module__}.{function.__qualname__}"

    @functools.wraps(function)
    def cached(geometry: Geometry) -> _Value:
        fields = geometry.__dict__
        if name not in fields:
            fields[name] = function(geometry)  # (frozen: written straight into the dict)
        return fields[name]

    return cached


@_per_geometry
def _direct_axes(geometry: Geometry) -> tuple[Axis, ...]:
    """The axes the direct strategies pad and slide over (circular ones kept near the input).

    An axis of one tap gets dilation 1: its dilation changes nothing, and a large one would not
    fit in the byte steps of the strided windows over it (C's long).
    """
    axes = tuple(_circular_axis(axis) for axis in geometry.axes) if geometry.circular else geometry.axes
    if all(axis.dilation == axis.tap_dilation for axis in axes):
        return axes
    return tuple(
        Axis(axis.size, axis.kernel, axis.stride, axis.tap_dilation, axis.lo, axis.hi) for axis in axes
    )


def _fold_circular(
    kernel: np.ndarray, geometry: Geometry, dtype: np.dtype
) -> tuple[np.ndarray, tuple[Axis, ...]]:
    """The kernel and axes the direct strategies work with: folded along wide circular axes.

    Taps fold in the kernel's own dtype (as the view's buffer folds them), then the kernel is
    cast to `dtype`, the dtype of the products.
    """
    axes = _direct_axes(geometry)
    for i, axis in enumerate(geometry.axes):
        if geometry.circular and _circular_layout(axis)[1]:
            kernel = fold_axis(kernel, i, axis)  # the view's own fold: same sums, same dtype
    return kernel.astype(dtype, copy=False), axes


def _spatial_pads(geometry: Geometry, channels_first: bool) -> list[tuple[int, int]]:
    """``(lo, hi)`` for every axis of a batch: the spatial ones, none on batch and channels."""
    pads = _batch_pads(geometry)
    return list(pads.first if channels_first else pads.last)


class _BatchPads(NamedTuple):
    last: tuple[tuple[int, int], ...]  # channels-last batch ``(B, *m, C)``
    first: tuple[tuple[int, int], ...]  # channels-first batch ``(B, C, *m)``
    padded: bool  # whether any side of any axis is padded


@_per_geometry
def _batch_pads(geometry: Geometry) -> _BatchPads:
    """`_spatial_pads` in both layouts, and whether anything is padded."""
    spatial = tuple((axis.lo, axis.hi) for axis in _direct_axes(geometry))
    padded = any(lo or hi for lo, hi in spatial)
    return _BatchPads(((0, 0), *spatial, (0, 0)), ((0, 0), (0, 0), *spatial), padded)


def _pad(x: np.ndarray, geometry: Geometry, channels_first: bool) -> np.ndarray:
    """Pad the spatial axes of a batch the way the geometry's padding mode says."""
    if not _batch_pads(geometry).padded:
        return _contiguous(x, 2 if channels_first else 1)
    return pad(x, _spatial_pads(geometry, channels_first), geometry.mode)


def _unpad(xp: np.ndarray, geometry: Geometry, channels_first: bool) -> np.ndarray:
    """Adjoint of `_pad`: crop zero padding, or fold padded entries back onto what they read."""
    return pad_adjoint(xp, _spatial_pads(geometry, channels_first), geometry.mode)


# -- entry points ---------------------------------------------------------------------------------
def _prepared(
    kernel: np.ndarray, geometry: Geometry, data: np.ndarray, method: str
) -> tuple[str, np.ndarray, np.ndarray, bool]:
    """The resolved method, the kernel and batch for it, and whether the batch is empty.

    The batch takes the common dtype; the kernel too for the FFT, while the direct method casts
    it after folding (`_fold_circular`).
    """
    method = resolve_method(method, geometry, kernel.dtype)
    dtype = np.result_type(kernel.dtype, data.dtype)
    padded = data.shape[0] * math.prod([axis.padded for axis in geometry.axes]) * geometry.channels
    if not geometry.circular and padded * dtype.itemsize > INTP_MAX:  # (circular padding folds instead)
        raise MemoryError(f"the padded batch ({padded} entries) is larger than NumPy can address")
    if method == "fft":
        kernel = kernel.astype(dtype, copy=False)
    return method, kernel, data.astype(dtype, copy=False), data.size == 0


def _zero_batch(
    batch: int, dtype: np.dtype, channels: int, spatial: tuple[int, ...], channels_first: bool
) -> np.ndarray:
    """Zeros of shape ``(batch, channels, *spatial)`` or ``(batch, *spatial, channels)``."""
    shape = (batch, channels, *spatial) if channels_first else (batch, *spatial, channels)
    return np.zeros(shape, dtype=dtype)


def _moveaxis(array: np.ndarray, source: int, destination: int) -> np.ndarray:
    """``np.moveaxis`` of one axis, as a plain transpose: 0.3 us against its 3 us of argument handling.

    The products move the channel axis a few times a call (a few percent of a small layer's time).
    """
    order = list(range(array.ndim))
    order.insert(destination % array.ndim, order.pop(source))
    return array.transpose(order)


def _channels_last(x: np.ndarray, channels_first: bool) -> np.ndarray:
    return _moveaxis(x, 1, -1) if channels_first else x


def _back(result: np.ndarray, channels_first: bool) -> np.ndarray:
    """A channels-last result in the caller's layout, C-ordered."""
    return _contiguous(_moveaxis(result, -1, 1), 2) if channels_first else np.ascontiguousarray(result)


def _contiguous(batch: np.ndarray, axis: int) -> np.ndarray:
    """`batch` if it is C-ordered, else `_copy_of` it."""
    return batch if batch.flags.c_contiguous else _copy_of(batch, axis)


def _copy_of(batch: np.ndarray, axis: int) -> np.ndarray:
    """A new C-ordered copy of `batch`, by `_copy_tiled` along `axis`."""
    out = np.empty(batch.shape, batch.dtype)
    _copy_tiled(out, batch, axis)
    return out


def _copy_tiled(target: np.ndarray, source: np.ndarray, axis: int) -> None:
    """``target[...] = source`` for batches, in tiles along `axis` when the copy moves the channels.

    NumPy walks the target in order, so a copy that moves the channels (innermost source axis
    not contiguous) reads every source cache line of an image once per channel: within a tile of
    `_TILE_BYTES` of each image, along its first spatial `axis`, those reads stay in the L1 cache.
    Measured on float32: 0.66 times the time of one copy on 8 x 30 x 30 x 32 and 8 x 1024 x 16,
    0.75 on 4 x 64 x 64 x 32; more calls than that saves on 1 or 2 images.
    """
    rows = source.shape[axis]
    row_bytes = source[0].nbytes // max(1, rows)
    step = max(1, _TILE_BYTES // max(1, row_bytes))
    if source.strides[-1] == source.itemsize or len(source) < _TILE_BATCH or step >= rows:
        target[...] = source
        return
    tile = [slice(None)] * source.ndim
    for start in range(0, rows, step):
        tile[axis] = slice(start, start + step)
        target[tuple(tile)] = source[tuple(tile)]


def _by_fft(
    kernel: np.ndarray, geometry: Geometry, data: np.ndarray, channels_first: bool, *, adjoint: bool
) -> np.ndarray:
    """Either direction by FFT.

    Zero and circular padding happen inside the transform; the other padding modes pad (or fold
    back) around the 'valid' correlation on the padded grid.
    """
    data = _channels_last(data, channels_first)
    if _fft_pads_itself(geometry):
        return _back(_fft_apply(kernel, geometry, data, adjoint), channels_first)
    valid = geometry.valid_on_padded()
    if adjoint:
        return _back(_unpad(_fft_apply(kernel, valid, data, True), geometry, False), channels_first)
    return _back(_fft_apply(kernel, valid, _pad(data, geometry, False), False), channels_first)


Trimmed = tuple[Geometry | None, tuple[slice, ...], tuple[slice, ...]]


@_per_geometry
def _trimmed(geometry: Geometry) -> Trimmed | None:
    """The outputs whose windows reach the input, as a geometry of their own; None if they all do.

    With zero padding wider than the kernel's extent, an output whose window lies in the padding
    alone is zero. Returns the geometry of the others on the input entries they read (`None` if
    there are none), with their slices of the output and of the input, per spatial axis: a huge
    padding then costs nothing (it was laid out in full).
    """
    if geometry.mode.name != "zeros" or all(a.lo < a.extent and a.hi < a.extent for a in geometry.axes):
        return None
    axes, outputs, inputs = [], [], []
    for axis in geometry.axes:
        stride, extent = axis.stride, axis.extent
        first = max(0, -((extent - 1 - axis.lo) // stride))  # ceil((lo - extent + 1) / stride)
        stop = min(axis.output, (axis.size - 1 + axis.lo) // stride + 1)
        if first >= stop:
            return None, (), ()
        start = first * stride - axis.lo  # the first window's first position
        low, high = max(0, start), min(axis.size, (stop - 1) * stride - axis.lo + extent)
        lo = low - start
        hi = (stop - first - 1) * stride + extent - (high - low) - lo
        axes.append(Axis(high - low, axis.kernel, stride, axis.dilation, lo, hi))
        outputs.append(slice(first, stop))
        inputs.append(slice(low, high))
    sub = geometry.replace(axes=tuple(axes), padding=[(axis.lo, axis.hi) for axis in axes])
    return sub, tuple(outputs), tuple(inputs)


def _on_trimmed(
    product: Callable[..., np.ndarray],
    kernel: np.ndarray,
    geometry: Geometry,
    trimmed: Trimmed,
    data: np.ndarray,
    channels_first: bool,
    method: str,
    *,
    adjoint: bool,
) -> np.ndarray:
    """`product` (`convolve` or its adjoint) of a batch through `_trimmed`: zeros elsewhere."""
    sub, outputs, inputs = trimmed
    source, target = (outputs, inputs) if adjoint else (inputs, outputs)
    if adjoint:
        channels, spatial = geometry.channels, geometry.spatial_input
    else:
        channels, spatial = geometry.filters, geometry.spatial_output
    dtype = np.result_type(kernel.dtype, data.dtype)
    result = _zero_batch(data.shape[0], dtype, channels, spatial, channels_first)
    if sub is not None:
        result[_spatial_index(target, channels_first)] = product(
            kernel, sub, data[_spatial_index(source, channels_first)], channels_first, method
        )
    return result


def _spatial_index(slices: tuple[slice, ...], channels_first: bool) -> tuple[slice, ...]:
    """The index of a batch that takes `slices` of its spatial axes."""
    whole = slice(None)
    return (whole, whole, *slices) if channels_first else (whole, *slices, whole)


def convolve(
    kernel: np.ndarray, geometry: Geometry, x: np.ndarray, channels_first: bool, method: str = "auto"
) -> np.ndarray:
    """Convolve a batch ``x``; returns ``(B, *o, F)`` or ``(B, F, *o)``."""
    trimmed = _trimmed(geometry)
    if trimmed is not None:
        return _on_trimmed(convolve, kernel, geometry, trimmed, x, channels_first, method, adjoint=False)
    method, kernel, x, empty = _prepared(kernel, geometry, x, method)
    if empty:
        return _zero_batch(x.shape[0], x.dtype, geometry.filters, geometry.spatial_output, channels_first)
    if method == "fft":
        return _by_fft(kernel, geometry, x, channels_first, adjoint=False)
    kernel, axes = _fold_circular(kernel, geometry, x.dtype)
    if all(axis.stride == 1 for axis in axes):
        if not channels_first and _moves_to_first(kernel, axes, geometry.groups, x):
            xp = _pad(_moveaxis(x, -1, 1), geometry, True)
            return _back(_stride1(kernel, axes, geometry.groups, xp, True, out_first=False), False)
        return _stride1(kernel, axes, geometry.groups, _pad(x, geometry, channels_first), channels_first)
    if channels_first:
        if geometry.mode.name == "zeros":  # (padded on the way)
            return _strided_im2col_first(kernel, axes, geometry.groups, x, _batch_pads(geometry).first[2:])
        pads = ((0, 0),) * len(axes)
        return _strided_im2col_first(kernel, axes, geometry.groups, _pad(x, geometry, True), pads)
    return _strided_im2col(kernel, axes, geometry.groups, _pad(x, geometry, False))


def convolve_adjoint(
    kernel: np.ndarray, geometry: Geometry, y: np.ndarray, channels_first: bool, method: str = "auto"
) -> np.ndarray:
    """Apply the adjoint (transposed convolution) to a batch ``y`` of outputs.

    `kernel` must already be conjugated for a complex adjoint. Returns ``(B, *m, C)`` or
    ``(B, C, *m)``.
    """
    trimmed = _trimmed(geometry)
    if trimmed is not None:
        return _on_trimmed(
            convolve_adjoint, kernel, geometry, trimmed, y, channels_first, method, adjoint=True
        )
    method, kernel, y, empty = _prepared(kernel, geometry, y, method)
    if empty:
        return _zero_batch(y.shape[0], y.dtype, geometry.channels, geometry.spatial_input, channels_first)
    if method == "fft":
        return _by_fft(kernel, geometry, y, channels_first, adjoint=True)
    kernel, axes = _fold_circular(kernel, geometry, y.dtype)
    zeros = geometry.mode.name == "zeros"  # the adjoint of zero padding crops: compute no more
    xp, reused = _adjoint_onto_padded(kernel, axes, geometry.groups, y, channels_first, interior=zeros)
    # With `interior` most strategies give the input's own entries; the others the padded input.
    if (xp.shape[2:] if channels_first else xp.shape[1:-1]) != tuple(axis.size for axis in axes):
        xp = _unpad(xp, geometry, channels_first)
    # Most adjoint strategies leave their result in a reused work array: copy it out.
    axis = 2 if channels_first else 1  # the first spatial axis
    return _copy_of(xp, axis) if reused else _contiguous(xp, axis)


# -- stride-1 strategies --------------------------------------------------------------------------
@functools.cache
def _blas() -> ModuleType | None:
    """SciPy's BLAS wrappers (GEMM with accumulation), or None without SciPy."""
    try:
        return importlib.import_module("scipy.linalg.blas")
    except ImportError:
        return None


def _row_taps_suit(dtype: np.dtype, group_channels: int, group_filters: int, row: int, output: int) -> bool:
    """Whether a channels-first 1-D batch (channel rows of `row` entries) takes `_row_taps`.

    BLAS dtypes, enough channels per group, and one image's output of a group within a block of
    work (`_BLOCK_BYTES`). BLAS reads the channel rows in place, so rows a multiple of
    `_SET_BYTES` long share cache sets: there the tap GEMMs, which lay the rows out with gaps,
    keep the layers they suit. Measured on 1-D layers of 8 to 128 channels: 0.43 to 0.96 times
    the time of the tap GEMMs and im2col; on rows of 4 and 8 KiB 1.02 to 1.11 times the tap GEMMs'
    (and 0.48 times im2col's); with 1 or 3 channels 1.3 to 3.4 times.
    """
    dtype = np.dtype(dtype)
    if dtype not in BLAS_DTYPES or group_channels < _TAP_GEMM_CHANNELS:
        return False
    if row * dtype.itemsize % _SET_BYTES == 0 and _tap_gemm_layout(dtype, group_channels, group_filters, row):
        return False
    return group_filters * output * dtype.itemsize <= _BLOCK_BYTES


def _row_taps(kernel: np.ndarray, axis: Axis, groups: int, xp: np.ndarray) -> np.ndarray:
    """Stride-1 correlation of a padded channels-first 1-D batch ``(B, C, P)``; returns ``(B, F, o)``.

    Along one axis the window of a tap is a plain slice, ``x[:, :, r*d : r*d + o]``, which BLAS
    reads in place: per group and block of images, one product per tap, ``(Fg, Cg) @ (b, Cg, o)``,
    added up. Nothing is copied, and a block's output stays in the cache (`_BLOCK_BYTES`).
    """
    taps, cg, filters = kernel.shape
    fg, batch, output, dilation = filters // groups, xp.shape[0], axis.output, axis.dilation
    # (k, Cg, G * Fg) -> (G, k, Fg, Cg)
    weights = np.ascontiguousarray(kernel.reshape(taps, cg, groups, fg).transpose(2, 0, 3, 1))
    grouped = xp.reshape(batch, groups, cg, xp.shape[-1])
    out = np.empty((batch, groups, fg, output), dtype=xp.dtype)
    images = max(1, _BLOCK_BYTES // (fg * output * xp.itemsize))
    term = scratch("tap term", (min(images, batch), fg, output), xp.dtype)
    for b in range(0, batch, images):
        source, target = grouped[b : b + images], out[b : b + images]
        part = term[: len(source)]
        for g in range(groups):
            np.matmul(weights[g, 0], source[:, g, :, :output], out=target[:, g])
            for r in range(1, taps):
                start = r * dilation
                np.matmul(weights[g, r], source[:, g, :, start : start + output], out=part)
                target[:, g] += part
    return out.reshape(batch, filters, output)


def _tap_gemm_layout(dtype: np.dtype, group_channels: int, group_filters: int, pixels: int) -> str | None:
    """Whether one accumulating GEMM per tap is the better stride-1 product, and in which layout.

    BLAS runs such a GEMM near its peak when the matrix it writes is tall: the channels-last form
    writes ``(F, pixels)`` (wants many filters), the channels-first form ``(pixels, F)`` per image
    (wants enough work per call, since it makes one call per image, group and tap).
    """
    dtype = np.dtype(dtype)
    if dtype not in BLAS_DTYPES or _blas() is None:
        return None
    if group_channels < _TAP_GEMM_CHANNELS or group_filters < _FEW_CHANNELS:
        return None
    if group_filters >= 16:
        return "last"
    if pixels * group_channels * group_filters >= 2**17 and _tap_gemm_first_fits(
        dtype, group_channels, group_filters, pixels
    ):
        return "first"
    return None


def _tap_gemm_first_fits(dtype: np.dtype, group_channels: int, group_filters: int, pixels: int) -> bool:
    """Whether the channels-first tap GEMMs suit images of `pixels`: their one block is a whole image.

    Each tap rereads a group's image and its output, which SciPy's BLAS wrappers cannot cut into
    blocks (their matrices are contiguous); past `_TAP_IMAGE_BYTES` (the L2 cache) the blocked
    im2col is faster (measured: 11 against 18 ms on 2 x 256 x 256, 16 -> 16 channels, 3x3; 4.9
    against 8.7 ms on 2 x 128 x 128 in float64).
    """
    return (group_channels + group_filters) * pixels * np.dtype(dtype).itemsize <= _TAP_IMAGE_BYTES


def _tap_shifts(axes: tuple[Axis, ...], steps: list[int]) -> list[int]:
    """Offset of every kernel tap (C order) on the flat padded grid."""
    per_axis = [[r * axis.dilation * step for r in range(axis.kernel)] for axis, step in zip(axes, steps)]
    return [sum(offsets) for offsets in itertools.product(*per_axis)]


def _crop_output(out: np.ndarray, axes: tuple[Axis, ...], channels_first: bool) -> np.ndarray:
    """The real outputs of a result laid on the padded grid: a new C-ordered array."""
    crop = tuple(slice(0, axis.output) for axis in axes)
    index = (slice(None), slice(None), *crop) if channels_first else (slice(None), *crop)
    return np.array(out[index], order="C", copy=True)


def _products(shape: tuple[int, ...], dtype: np.dtype, final: bool) -> np.ndarray:
    """Where a flat strategy writes its products: a new array, or a reused one to crop from.

    The products are `final` when every grid position is an output (`_every_position`), in the
    result's layout.
    """
    return np.empty(shape, dtype=dtype) if final else scratch("grid", shape, dtype)


def _every_position(axes: tuple[Axis, ...], padded: tuple[int, ...]) -> bool:
    """Whether every position of the flat grid `padded` is an output (`_looking_back`'s grids)."""
    return all(axis.output == size for axis, size in zip(axes, padded))


def _tap_gemm(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    xp: np.ndarray,
    extended: np.ndarray | None = None,
) -> np.ndarray:
    """Stride-1 correlation of the padded channels-last batch `xp`: one accumulating GEMM per tap.

    ``out[q] = sum_t xflat[q + shift_t] @ K_t``; in BLAS's column-major terms the C-ordered
    ``(pixels, F)`` output block is an ``(F, pixels)`` matrix ``C`` and each tap adds
    ``K_t^T @ X_t^T`` to it, every operand a contiguous slice (no copy). With `extended` (see
    `_stride1`) the slices run past `xp` into it.
    """
    xp = np.ascontiguousarray(xp)
    batch, padded, dtype = xp.shape[0], xp.shape[1:-1], xp.dtype
    *taps_shape, cg, filters = kernel.shape
    fg = filters // groups
    total = batch * math.prod(padded)
    steps, reach = flat_grid(padded, axes)
    shifts = _tap_shifts(axes, steps)
    length = total if _every_position(axes, padded) else total - reach
    flat = (extended if extended is not None else xp).reshape(-1, groups * cg)  # length + reach rows
    gemm = _blas().get_blas_funcs("gemm", dtype=dtype)  # type: ignore[union-attr]
    if groups == 1:
        sources = flat[None]
    else:
        sources = scratch("sources", (groups, len(flat), cg), dtype)
        np.copyto(sources, flat.reshape(-1, groups, cg).transpose(1, 0, 2))
    # (*k, Cg, G * Fg) -> (G, taps, Cg, Fg), each (Cg, Fg) matrix C-ordered.
    weights = kernel.reshape(len(shifts), cg, groups, fg).transpose(2, 0, 1, 3)
    weights = np.ascontiguousarray(weights)
    final = extended is not None and groups == 1 and _every_position(axes, padded)
    out = _products((groups, total, fg), dtype, final)
    block = max(256, _TAP_BLOCK_BYTES // ((cg + fg) * dtype.itemsize))
    for g in range(groups):
        source, target = sources[g], out[g]
        for start, stop in _output_blocks(batch, padded, axes, length, block):
            accumulator = target[start:stop].T
            for t, shift in enumerate(shifts):
                gemm(
                    1.0,
                    weights[g, t].T,
                    source[start + shift : stop + shift].T,
                    1.0 if t else 0.0,
                    accumulator,
                    overwrite_c=True,
                )
    result = out.transpose(1, 0, 2).reshape(batch, *padded, filters)
    return result if final else _crop_output(result, axes, False)


def _output_blocks(
    batch: int, padded: tuple[int, ...], axes: tuple[Axis, ...], length: int, block: int
) -> list[tuple[int, int]]:
    """Stretches ``[start, stop)`` of the flat grid of a batch that hold its outputs, about `block` long.

    An image's outputs lie within its first ``span`` pixels; a stretch takes whole images while
    they fit in `block` and ends at the last one's span, skipping the rows past its last output
    row (with 'valid' padding, a good share of an image). An image longer than `block` is cut.
    """
    pixels = math.prod(padded)
    steps, _ = flat_grid(padded, axes)
    span = min(pixels, sum((axis.output - 1) * step for axis, step in zip(axes, steps)) + 1)
    images = max(1, block // pixels)
    stretches: list[tuple[int, int]] = []
    for first in range(0, batch, images):
        start, end = first * pixels, min(length, (min(first + images, batch) - 1) * pixels + span)
        stretches.extend((s, min(s + block, end)) for s in range(start, end, block))
    return stretches


def _tap_gemm_first(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    xp: np.ndarray,
    extended: np.ndarray | None = None,
) -> np.ndarray:
    """`_tap_gemm` for a padded channels-first batch ``(B, C, *P)``; returns ``(B, F, *o)``.

    Per image and group, ``out[f, q] = sum_t sum_c K_t[c, f] x[c, q + shift_t]``. In BLAS's terms
    the ``(F, P)`` output is a column-major ``(P, F)`` matrix and the shifted input the column-major
    ``(P, C)`` matrix that starts `shift` entries into the image, with the image's own leading
    dimension: a contiguous stretch of memory once the batch has `reach` entries of slack at its
    end (`extended` has them). Rows read past an image's end belong to pixels that are dropped,
    or with `extended` (see `_stride1`), to the next image's look-back.
    """
    batch, channels, padded, dtype = xp.shape[0], xp.shape[1], xp.shape[2:], xp.dtype
    *taps_shape, cg, filters = kernel.shape
    fg = filters // groups
    pixels = math.prod(padded)
    steps, reach = flat_grid(padded, axes)
    shifts = _tap_shifts(axes, steps)
    size, rows = batch * channels * pixels, batch * channels
    # Channel rows a multiple of 4 KiB apart would put the GEMMs' columns in one cache set: past
    # each row, `_GAP_BYTES` of zeros (the 1-D table layer's adjoint: 0.43 -> 0.38 ms).
    pitch = pixels + (_GAP_BYTES // dtype.itemsize if pixels * dtype.itemsize % _SET_BYTES == 0 else 0)
    every = _every_position(axes, padded)
    if extended is not None and pitch == pixels:
        flat = extended
    else:
        # Looking back (`_looking_back`), the channel rows start `reach` entries into `extended`
        # and keep that margin; otherwise the entries past a row's outputs are never used.
        lead = reach if extended is not None and every else 0
        laid_out = xp if extended is None or not lead else extended[reach : reach + size]
        source = laid_out.reshape(rows, pixels)
        flat = scratch("flat", (lead + rows * pitch + reach,), dtype)
        flat[:lead] = 0
        laid = flat[lead : lead + rows * pitch].reshape(rows, pitch)
        laid[:, :pixels] = source
        laid[:, pixels:] = 0
        flat[lead + rows * pitch :] = 0
    gemm = _blas().get_blas_funcs("gemm", dtype=dtype)  # type: ignore[union-attr]
    # (*k, Cg, G * Fg) -> (G, taps, Fg, Cg): the transpose of each tap's (Cg, Fg) matrix, C-ordered.
    weights = np.ascontiguousarray(kernel.reshape(len(shifts), cg, groups, fg).transpose(2, 0, 3, 1))
    final = extended is not None and pitch == pixels and every
    out = _products((batch, groups, fg, pitch), dtype, final)
    for b in range(batch):
        for g in range(groups):
            base = (b * channels + g * cg) * pitch
            accumulator = out[b, g].T
            for t, shift in enumerate(shifts):
                window = flat[base + shift : base + shift + cg * pitch].reshape(cg, pitch).T
                gemm(1.0, window, weights[g, t].T, 1.0 if t else 0.0, accumulator, overwrite_c=True)
    result = out[..., :pixels].reshape(batch, filters, *padded)
    return result if final else _crop_output(result, axes, True)


def _flat_im2col(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    xp: np.ndarray,
    channels_first: bool,
    out_first: bool | None = None,
    extended: np.ndarray | None = None,
) -> np.ndarray:
    """Stride-1 correlation of the padded batch `xp` by blocked im2col over the flat pixel grid.

    A channels-first batch can give a channels-last result (``out_first=False``) at no cost: the
    GEMM writes its product in either order. With `extended` (see `_stride1`) the windows run
    past `xp` into it.
    """
    # The windows below are strides into C-ordered memory; np.pad, for one, keeps the memory order
    # of its input, and a reshape that merges no axes keeps any strides.
    xp = np.ascontiguousarray(xp)
    *taps_shape, group_channels, filters = kernel.shape
    n = len(taps_shape)
    group_filters = filters // groups
    rows = math.prod(taps_shape) * group_channels
    batch = xp.shape[0]
    padded = xp.shape[2:] if channels_first else xp.shape[1:-1]
    pixels = math.prod(padded)
    grid_steps, reach = flat_grid(padded, axes)
    shifts = [axis.dilation * step for axis, step in zip(axes, grid_steps)]
    channels = groups * group_channels
    item, dtype = xp.itemsize, xp.dtype
    count = pixels if channels_first else batch * pixels
    outputs = count if _every_position(axes, padded) else count - reach  # per flat image
    block = min(max(64, _COLUMNS_BYTES // (rows * item)), max(1, outputs))
    if outputs > 0:  # blocks of equal size: no short last one
        block = -(-outputs // -(-outputs // block))
    # Channels-first: (F, rows) @ (rows, pixels), each im2col row a contiguous copy.
    # Channels-last: (pixels, rows) @ (rows, F), each im2col row a window of taps * C entries.
    weights = kernel.reshape(*taps_shape, group_channels, groups, group_filters)
    weights = _moveaxis(weights, n + 1, 0)  # (G, *k, Cg, Fg)
    if channels_first:
        weights = np.ascontiguousarray(_moveaxis(weights, -1, 1)).reshape(groups, group_filters, rows)
        buffer = scratch("columns", (groups, *taps_shape, group_channels, block), dtype)
    else:
        weights = np.ascontiguousarray(weights).reshape(groups, rows, group_filters)
        buffer = scratch("columns", (groups, block, *taps_shape, group_channels), dtype)

    out_first = channels_first if out_first is None else out_first
    final = extended is not None and _every_position(axes, padded)
    if channels_first:  # one image at a time: (C, pixels), the pixels contiguous
        if out_first:
            out = _products((batch, groups, group_filters, pixels), dtype, final)
            targets = list(out)
        else:  # each image's (G, Fg, pixels) product written as (pixels, G, Fg)
            out = _products((batch, pixels, groups, group_filters), dtype, final)
            targets = [image.transpose(1, 2, 0) for image in out]
        pixel_step, channel_step, image_step = 1, pixels, channels * pixels
    else:  # the whole batch as one flat grid: (B * pixels, C)
        out = _products((batch * pixels, groups, group_filters), dtype, final)
        targets = [out.transpose(1, 2, 0)]
        pixel_step, channel_step, image_step = channels, 1, 0
    source = xp.reshape(-1) if extended is None else extended  # windows read into `extended`
    # windows[b, g, *r, c, q] = pixel q + shift(r), channel g * Cg + c of flat image b: the
    # pixels q < outputs whose windows fit inside the image (or its extension)
    windows = as_strided(
        source,
        shape=(len(targets), groups, *taps_shape, group_channels, outputs),
        strides=(
            image_step * item,
            group_channels * channel_step * item,
            *(shift * pixel_step * item for shift in shifts),
            channel_step * item,
            pixel_step * item,
        ),
        writeable=False,
    )
    for image_windows, target in zip(windows, targets):
        for start in range(0, outputs, block):
            stop = min(start + block, outputs)
            if channels_first:
                columns = buffer[..., : stop - start]
                np.copyto(columns, image_windows[..., start:stop])
                products = columns.reshape(groups, rows, stop - start)
                np.matmul(weights, products, out=target[..., start:stop])
            else:
                columns = buffer[:, : stop - start]
                np.copyto(columns, _moveaxis(image_windows[..., start:stop], -1, 1))
                products = columns.reshape(groups, stop - start, rows)
                np.matmul(products, weights, out=np.swapaxes(target[..., start:stop], 1, 2))
    shape = (batch, filters, *padded) if out_first else (batch, *padded, filters)
    return out.reshape(shape) if final else _crop_output(out.reshape(shape), axes, out_first)


def _taps_as_channels(
    kernel: np.ndarray, axes: tuple[Axis, ...], groups: int, xp: np.ndarray, channels_first: bool
) -> tuple[np.ndarray, tuple[Axis, ...], np.ndarray, np.ndarray | None]:
    """The same correlation with the last axis's taps moved into the channels.

    Input channel ``(g, c, r)`` of the new batch holds ``x[g, c]`` shifted by ``r * d`` along the
    last axis, cut to the outputs: a copy of ``k`` times the input (im2col copies ``prod(k)``
    times), after which the last axis has a kernel of size 1 and the channels are ``k`` times more.
    Returns the new layer's kernel, axes and batch (its groups are the same), and channels-first
    the flat buffer the batch starts, zeros past its end as far as its windows reach (for
    `_stride1`'s `extended`: the tap GEMMs read it without copying the batch again).
    """
    n, last = len(axes), axes[-1]
    *taps_shape, cg, filters = kernel.shape
    batch, channels = xp.shape[0], groups * cg
    outputs = last.output
    spatial = xp.shape[2:-1] if channels_first else xp.shape[1:-2]
    extended = None
    if channels_first:
        shape = (batch, groups, cg, last.kernel, *spatial, outputs)
        source = xp.reshape(batch, groups, cg, 1, *xp.shape[2:])
        _, reach = flat_grid((*spatial, outputs), _wide_axes(axes))
        extended = scratch("taps", (math.prod(shape) + reach,), xp.dtype)
        extended[math.prod(shape) :] = 0
        wide = extended[: math.prod(shape)].reshape(shape)
    else:
        shape = (batch, *spatial, outputs, groups, cg, last.kernel)
        source = xp.reshape(*xp.shape[:-1], groups, cg, 1)
        wide = scratch("taps", shape, xp.dtype)  # never returned: the products read it
    axis = -1 if channels_first else n
    for r in range(last.kernel):
        start = r * last.dilation
        window = [slice(None)] * source.ndim
        window[axis] = slice(start, start + outputs)
        tap = [slice(None)] * len(shape)
        tap[3 if channels_first else -1] = slice(r, r + 1)
        wide[tuple(tap)] = source[tuple(window)]
    wide_channels = channels * last.kernel
    if channels_first:
        wide = wide.reshape(batch, wide_channels, *spatial, outputs)
    else:
        wide = wide.reshape(batch, *spatial, outputs, wide_channels)
    return _wide_kernel(kernel), _wide_axes(axes), wide, extended


def _wide_kernel(kernel: np.ndarray) -> np.ndarray:
    """``(*k, Cg, F) -> (*k', 1, Cg * k_last, F)``: the last axis's taps as channels ``(c, r)``."""
    *taps_shape, cg, filters = kernel.shape
    moved = _moveaxis(kernel, len(taps_shape) - 1, len(taps_shape))
    return moved.reshape(*taps_shape[:-1], 1, cg * taps_shape[-1], filters)


def _wide_axes(axes: tuple[Axis, ...]) -> tuple[Axis, ...]:
    """The axes of `_wide_kernel`'s layer: the last one holds the outputs, with a kernel of 1."""
    return (*axes[:-1], Axis(axes[-1].output, 1))


def _moves_to_first(
    kernel: np.ndarray, axes: tuple[Axis, ...], groups: int, x: np.ndarray, pixels: int | None = None
) -> bool:
    """Whether `_stride1` runs a channels-last batch like `x` (unpadded) in channels-first form.

    The callers then pad straight into that form: one copy instead of a pad and a transpose.
    `pixels` is the grid's per image, by default the padded input's of `axes`.
    """
    cg, fg = kernel.shape[-2], kernel.shape[-1] // groups
    if (groups == 1 and kernel.size == cg * fg) or _depthwise_suits(kernel, groups, x.dtype):
        return False
    if pixels is None:
        pixels = math.prod(axis.output + axis.extent - 1 for axis in axes)
    layout = _tap_gemm_layout(x.dtype, cg, fg, pixels)
    if layout is not None:
        return layout == "first"
    if _wide_suits(kernel, axes, groups, x.dtype, x.nbytes, pixels):
        return False
    return cg <= _FEW_CHANNELS or groups > 1


def _wide_suits(
    kernel: np.ndarray, axes: tuple[Axis, ...], groups: int, dtype: np.dtype, nbytes: int, pixels: int
) -> bool:
    """Whether to move the last axis's taps into the channels (`_taps_as_channels`)."""
    cg, fg, last = kernel.shape[-2], kernel.shape[-1] // groups, axes[-1]
    return (
        groups == 1
        and last.kernel > 1
        and nbytes * last.kernel <= _WIDE_BYTES
        and _tap_gemm_layout(dtype, cg * last.kernel, fg, pixels) is not None
    )


def _stride1(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    xp: np.ndarray,
    channels_first: bool,
    out_first: bool | None = None,
    extended: np.ndarray | None = None,
) -> np.ndarray:
    """Stride-1 correlation of a padded batch: tap GEMM or flat im2col.

    The result is channels-first if `out_first` (by default: if the batch is), C-ordered in the
    batch's layout. The channels-first im2col writes either layout at no cost; in the other layout
    than the batch's, the other strategies give a strided view.

    With `extended`, the flat buffer that `xp` starts, which runs `reach` pixels of the grid past
    `xp`'s end: the products read past `xp` into it instead of copying the batch, which then
    stays in its layout. Where every position of the grid is an output (`_looking_back`), the
    products are the result.
    """
    first = channels_first if out_first is None else out_first
    cg, fg = kernel.shape[-2], kernel.shape[-1] // groups
    if extended is not None:
        return _stride1_extended(kernel, axes, groups, xp, channels_first, first, extended)
    if _depthwise_suits(kernel, groups, xp.dtype, axes, channels_first):
        return _in_layout(_depthwise_taps(kernel, axes, xp, channels_first), channels_first, first)
    if groups == 1 and kernel.size == cg * fg:  # a 1x1 kernel: one product, nothing copied
        weights = kernel.reshape(cg, fg)
        if channels_first:
            # (F, C) @ (C, pixels) per image, the pixels in blocks of `_PIXELS_BYTES` of input
            # per image: on whole 32 x 32 images of 64 channels BLAS took 1.4 times as long.
            source = xp.reshape(xp.shape[0], cg, -1)
            out = np.empty((xp.shape[0], fg, source.shape[-1]), np.result_type(weights, source))
            block = max(128, _PIXELS_BYTES // (cg * xp.itemsize))
            for start in range(0, source.shape[-1], block):
                np.matmul(weights.T, source[..., start : start + block], out=out[..., start : start + block])
            return _in_layout(out.reshape(xp.shape[0], fg, *xp.shape[2:]), True, first)
        return _in_layout(np.matmul(xp.reshape(-1, cg), weights).reshape(*xp.shape[:-1], fg), False, first)
    if channels_first and first and len(axes) == 1:
        if _row_taps_suit(xp.dtype, cg, fg, xp.shape[-1], axes[0].output):
            return _row_taps(kernel, axes[0], groups, xp)
    pixels = math.prod(xp.shape[2:] if channels_first else xp.shape[1:-1])
    layout = _tap_gemm_layout(xp.dtype, cg, fg, pixels)
    if layout == "last" and not channels_first:
        return _in_layout(_tap_gemm(kernel, axes, groups, xp), False, first)
    if layout == "last" and not _tap_gemm_first_fits(xp.dtype, cg, fg, pixels):
        layout = None  # channels-first, an image too large for one block of tap GEMMs
    if layout is not None:
        if channels_first and cg * axes[-1].kernel <= _WIDE_ROWS and len(axes) > 1:
            if _wide_suits(kernel, axes, groups, xp.dtype, xp.nbytes, pixels):
                # Fewer, larger GEMMs per image: the last axis's taps join the channels.
                wide_kernel, wide_axes, wide, extended = _taps_as_channels(kernel, axes, groups, xp, True)
                return _stride1(wide_kernel, wide_axes, groups, wide, True, first, extended=extended)
        if channels_first:
            return _in_layout(_tap_gemm_first(kernel, axes, groups, np.ascontiguousarray(xp)), True, first)
        moved = _tap_gemm_first(kernel, axes, groups, _contiguous(_moveaxis(xp, -1, 1), 2))
        return moved if first else _contiguous(_moveaxis(moved, 1, -1), 1)
    # (channels-first im2col copies whole rows: as fast as moving the taps, measured)
    if not channels_first and _wide_suits(kernel, axes, groups, xp.dtype, xp.nbytes, pixels):
        # Few channels, a wide kernel: copy the last axis's taps into channels, then tap GEMMs.
        wide_kernel, wide_axes, wide, _ = _taps_as_channels(kernel, axes, groups, xp, False)
        return _stride1(wide_kernel, wide_axes, groups, wide, False, first)
    if channels_first:
        return _flat_im2col(kernel, axes, groups, xp, True, out_first=first)
    if cg <= _FEW_CHANNELS or groups > 1:
        # Few channels per group: the channels-first product copies whole rows; move there.
        return _flat_im2col(kernel, axes, groups, _moveaxis(xp, -1, 1), True, out_first=first)
    return _in_layout(_flat_im2col(kernel, axes, groups, xp, False), False, first)


def _stride1_extended(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    xp: np.ndarray,
    channels_first: bool,
    out_first: bool,
    extended: np.ndarray,
) -> np.ndarray:
    """`_stride1` on a batch whose products read past its end (`extended`): tap GEMMs or im2col."""
    cg, fg = kernel.shape[-2], kernel.shape[-1] // groups
    pixels = math.prod(xp.shape[2:] if channels_first else xp.shape[1:-1])
    layout = _tap_gemm_layout(xp.dtype, cg, fg, pixels)
    if channels_first and layout is not None and _tap_gemm_first_fits(xp.dtype, cg, fg, pixels):
        out = _tap_gemm_first(kernel, axes, groups, xp, extended)
        return _in_layout(out, True, out_first)
    if not channels_first and layout == "last":
        return _in_layout(_tap_gemm(kernel, axes, groups, xp, extended), False, out_first)
    if channels_first:
        return _flat_im2col(kernel, axes, groups, xp, True, out_first=out_first, extended=extended)
    return _in_layout(_flat_im2col(kernel, axes, groups, xp, False, extended=extended), False, out_first)


def _in_layout(result: np.ndarray, channels_first: bool, out_first: bool) -> np.ndarray:
    """A batch `result` in the layout `out_first` asks for: itself, or a strided view of it."""
    if channels_first == out_first:
        return result
    return _moveaxis(result, 1, -1) if channels_first else _moveaxis(result, -1, 1)


def _steps(axes: tuple[Axis, ...], strides: tuple[int, ...], along: str) -> tuple[int, ...]:
    """Byte steps of strided windows: between outputs (``stride``) or taps (``dilation``) of each axis.

    0 along an axis of one output or one tap, whose step is never taken (and may not fit in
    C's long: a folded circular axis keeps its stride or dilation, however large).
    """
    if along == "output":
        return tuple(axis.stride * step if axis.output > 1 else 0 for axis, step in zip(axes, strides))
    return tuple(axis.dilation * step if axis.kernel > 1 else 0 for axis, step in zip(axes, strides))


def _strided_im2col(kernel: np.ndarray, axes: tuple[Axis, ...], groups: int, xp: np.ndarray) -> np.ndarray:
    """Correlation with strides of the padded channels-last batch `xp`, blocked im2col."""
    *taps_shape, cg, filters = kernel.shape
    fg, taps = filters // groups, math.prod(taps_shape)
    batch, outputs = xp.shape[0], tuple(axis.output for axis in axes)
    # windows[b, *o, g, *r, c] = xp[b, *(o * s + r * d), g * Cg + c]: the (tap, channel) order of
    # the kernel's rows; one strided view (NumPy's sliding_window_view, sliced and moved, took
    # 15 us more, 5% of the table's stride-2 layer)
    spatial, channel = xp.strides[1:-1], xp.strides[-1]
    windows = as_strided(
        xp,
        shape=(batch, *outputs, groups, *taps_shape, cg),
        strides=(
            xp.strides[0],
            *_steps(axes, spatial, "output"),
            cg * channel,
            *_steps(axes, spatial, "kernel"),
            channel,
        ),
        writeable=False,
    )
    weights = kernel.reshape(taps * cg, groups, fg).transpose(1, 0, 2)  # (G, taps * Cg, Fg)
    out = np.empty((batch, *outputs, groups, fg), dtype=xp.dtype)
    images, rows_per_block = _strided_blocks(outputs, taps * cg * xp.itemsize)
    columns = scratch("columns", (images * rows_per_block * math.prod(windows.shape[2:]),), xp.dtype)
    for b in range(0, batch, images):
        for start in range(0, outputs[0], rows_per_block):
            stop = min(start + rows_per_block, outputs[0])
            part = windows[b : b + images, start:stop]
            block = columns[: part.size].reshape(part.shape)
            np.copyto(block, part)  # the one copy of these windows
            block = block.reshape(-1, groups, taps * cg).transpose(1, 0, 2)
            target = out[b : b + images, start:stop].reshape(-1, groups, fg).transpose(1, 0, 2)
            np.matmul(block, weights, out=target)
    return out.reshape(batch, *outputs, filters)


def _strided_im2col_first(
    kernel: np.ndarray, axes: tuple[Axis, ...], groups: int, x: np.ndarray, pads: tuple[tuple[int, int], ...]
) -> np.ndarray:
    """`_strided_im2col` for a channels-first batch ``(B, C, *m)``; returns ``(B, F, *o)``.

    `x` is zero-padded by `pads` on the way (``(lo, hi)`` per spatial axis; other padding modes
    come already padded). Per block of images or output rows: ``(G, Fg, K) @ (G, K, pixels)``,
    the im2col rows copied from the windows, the product landing in place.

    With a stride along the last axis the windows read every ``s``-th entry of a row, which NumPy
    copies entry by entry. When the stride is at most the kernel's width (else most phases would
    go unread) and the input is padded anyway or copied many times over (`_SPLIT_TAPS`), the
    padded batch is split by the residue of its last axis instead (`_split_last_axis`): the
    windows of the taps of one residue read contiguous runs of their phase. The rows ``K`` hold
    the taps phase by phase (`_last_axis_phases`).
    """
    n, last = len(axes), axes[-1]
    *taps_shape, cg, filters = kernel.shape
    fg, taps = filters // groups, math.prod(taps_shape)
    batch, outputs = x.shape[0], tuple(axis.output for axis in axes)
    stride = last.stride if last.output > 1 else 1  # (one output: the stride is never taken)
    split_pays = any(lo or hi for lo, hi in pads) or taps >= _SPLIT_TAPS * stride
    phases = stride if split_pays and stride <= last.kernel else 1  # (a copy call per phase read)
    classes, order = _last_axis_phases(last.kernel, last.dilation, phases, tuple(taps_shape), cg)
    split = _split_last_axis(x, pads, phases, {taps.phase for taps in classes})
    # (*k, Cg, G * Fg) -> (G, Fg, K): the rows in the order of `classes`, with one phase (C, taps)
    if phases == 1:
        weights = kernel.reshape(taps, cg, groups, fg).transpose(2, 3, 1, 0).reshape(groups, fg, cg * taps)
    else:
        weights = np.ascontiguousarray(kernel.reshape(taps * cg, groups, fg)[order].transpose(1, 2, 0))
    windows = _phase_windows(split, axes, groups, classes, tuple(taps_shape[:-1]))
    out = np.empty((batch, groups, fg, *outputs), dtype=x.dtype)
    row_pixels = math.prod(outputs[1:])
    images, rows_per_block = _strided_blocks(outputs, taps * cg * x.itemsize)
    # A block's windows are copied at once, its products taken `rows_per_block` rows at a time.
    # With several phases (a copy call each) and one image a block, up to `_IMAGES_BYTES` of rows.
    rows_per_copy = outputs[0] if images > 1 else rows_per_block
    if images == 1 and phases > 1:
        block_bytes = rows_per_block * row_pixels * taps * cg * x.itemsize
        rows_per_copy = min(rows_per_block * max(1, _IMAGES_BYTES // block_bytes), outputs[0])
    columns = scratch("columns", (images, groups, taps * cg, rows_per_copy * row_pixels), x.dtype)
    rest = (slice(None),) * (n - 1)  # the output axes after the first
    for b in range(0, batch, images):
        images_here = min(images, batch - b)
        for first in range(0, outputs[0], rows_per_copy):
            stop = min(first + rows_per_copy, outputs[0])
            block = columns[:images_here, :, :, : (stop - first) * row_pixels]
            row = 0
            for window in windows:  # the one copy of these windows
                part = window[(slice(b, b + images_here), Ellipsis, slice(first, stop)) + rest]
                rows = math.prod(part.shape[2:-n])
                np.copyto(block[:, :, row : row + rows].reshape(part.shape), part)
                row += rows
            for start in range(first, stop, rows_per_block):
                end = min(start + rows_per_block, stop)
                source = block[..., (start - first) * row_pixels : (end - first) * row_pixels]
                target = out[b : b + images_here, :, :, start:end].reshape(images_here, groups, fg, -1)
                np.matmul(weights, source, out=target)
    return out.reshape(batch, filters, *outputs)


def _split_last_axis(
    x: np.ndarray, pads: tuple[tuple[int, int], ...], phases: int, used: set[int]
) -> np.ndarray:
    """A channels-first batch zero-padded by `pads`, split by the residue of its last axis.

    Returns ``(B, phases, C, *P_front, ceil(P_last / phases))`` with padded entry ``j`` of the
    last axis at ``[..., j % phases, ..., j // phases]``: a reused work array, or with one phase
    and no padding a view of `x` itself. Only the `used` phases are written, and of those no
    entry past the padded length.
    """
    padding = any(lo or hi for lo, hi in pads)
    if phases == 1 and not padding:
        return _contiguous(x, 2)[:, None]
    batch, channels, *sizes = x.shape
    padded = [size + lo + hi for size, (lo, hi) in zip(sizes, pads)]
    shape = (batch, phases, channels, *padded[:-1], -(-padded[-1] // phases))
    split = scratch("phases of the last axis", shape, x.dtype)
    if padding:
        split.fill(0)
    front = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads[:-1], sizes[:-1]))
    lo = pads[-1][0]
    for phase in used:
        source = x[..., (phase - lo) % phases :: phases]  # the entries that land in this phase
        entry = ((phase - lo) % phases + lo) // phases
        target: tuple[int | slice, ...] = (slice(None), phase, slice(None), *front)
        split[target + (slice(entry, entry + source.shape[-1]),)] = source
    return split


class _PhaseTaps(NamedTuple):
    """The taps of the last axis that read one phase of `_split_last_axis` (`_last_axis_phases`)."""

    phase: int  # the residue they read
    first: int  # the first of them; the others follow every ``q // gcd(q, d)`` taps
    number: int  # how many
    entry: int  # where the first tap's window starts in the phase, for output 0


@functools.lru_cache(maxsize=32)  # (each entry holds one index per tap and channel)
def _last_axis_phases(
    kernel: int, dilation: int, phases: int, taps_shape: tuple[int, ...], channels: int
) -> tuple[tuple[_PhaseTaps, ...], np.ndarray]:
    """The last axis's taps by the phase of `_split_last_axis` they read, for `_phase_windows`.

    Tap ``r`` reads padded entry ``o * s + r * d``: phase ``(r * d) mod q`` at ``o * s // q +
    (r * d) // q`` (``q`` is ``s`` or 1, so the first term is exact). The taps of one phase are
    every ``q // gcd(q, d)``-th from the first, their entries ``d // gcd(q, d)`` apart. Returns
    those taps for each phase read, and the kernel's ``(tap, channel)`` rows (C order over
    `taps_shape`) in the order of the windows: phase by phase, then channel by channel.
    """
    every = phases // math.gcd(phases, dilation)
    classes = tuple(
        _PhaseTaps((r * dilation) % phases, r, len(range(r, kernel, every)), (r * dilation) // phases)
        for r in range(min(every, kernel))
    )
    rows = np.arange(math.prod(taps_shape) * channels).reshape(-1, kernel, channels)
    order = np.concatenate([rows[:, taps.first :: every].transpose(2, 0, 1).ravel() for taps in classes])
    order.flags.writeable = False
    return classes, order


def _phase_windows(
    split: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    classes: tuple[_PhaseTaps, ...],
    front_taps: tuple[int, ...],
) -> list[np.ndarray]:
    """Per phase of `_last_axis_phases`, the windows ``(B, G, Cg, *k_front, taps, *o)`` it reads.

    `split` is a C-ordered batch from `_split_last_axis`. Each phase's windows read only entries
    of that phase within the padded length: the last entry read, ``(o - 1) * s + (k - 1) * d``,
    is below it. `numpy.ndarray` (faster here than `as_strided`) checks each view against the
    whole of `split` only, not against its phase.
    """
    last, phases = axes[-1], split.shape[1]
    batch, _, channels = split.shape[:3]
    cg = channels // groups
    item, spatial, step = split.itemsize, split.strides[3:-1], split.strides[-1]
    tap_step = last.dilation // math.gcd(phases, last.dilation) * step
    outputs = tuple(axis.output for axis in axes)
    channel = split.strides[2]
    before = (split.strides[0], cg * channel, channel, *_steps(axes[:-1], spatial, "kernel"))
    after = (*_steps(axes[:-1], spatial, "output"), last.stride // phases * step if last.output > 1 else 0)
    windows = []
    for taps in classes:
        window = np.ndarray(
            (batch, groups, cg, *front_taps, taps.number, *outputs),
            dtype=split.dtype,
            buffer=split,
            offset=taps.phase * split.strides[1] + taps.entry * item,
            strides=(*before, tap_step if taps.number > 1 else 0, *after),
        )
        window.flags.writeable = False
        windows.append(window)
    return windows


def _strided_blocks(outputs: tuple[int, ...], pixel_bytes: int) -> tuple[int, int]:
    """Images and leading output rows per block of strided im2col, with `pixel_bytes` of columns per group.

    About `_COLUMNS_BYTES` of columns a block per group, measured best for large images; images
    within that go whole, several to a block up to `_IMAGES_BYTES`: fewer, larger products.
    """
    row_bytes = math.prod(outputs[1:]) * pixel_bytes
    rows = max(1, _COLUMNS_BYTES // max(1, row_bytes))
    if rows < outputs[0]:
        return 1, rows
    return max(1, _IMAGES_BYTES // max(1, row_bytes * outputs[0])), outputs[0]


# -- adjoint strategies ---------------------------------------------------------------------------
def _transposed_stride1(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    y: np.ndarray,
    channels_first: bool,
    interior: bool = False,
) -> np.ndarray:
    """Stride-1 adjoint onto the padded input: ``xp[p] = sum_r y[p - r*d] K[r]^T``.

    That is a correlation of ``y`` zero-padded by ``extent - 1`` on both sides with the kernel
    flipped along its taps, its channel axes swapped group by group. Returns ``(B, *P, C)`` or
    ``(B, C, *P)`` with ``P = output + extent - 1``. With `interior`, only the input's own
    entries ``lo <= p < lo + size`` (what zero padding's adjoint keeps): ``y`` is padded by
    ``extent - 1 - lo`` and ``extent - 1 - hi`` instead (cut where that is negative), as a
    transposed convolution's ``padding`` does. Depthwise kernels take their own products,
    ``y`` laid once on the padded input's grid (`._depthwise`).
    """
    if _depthwise_suits(kernel, groups, y.dtype, axes, channels_first):
        return _depthwise_adjoint(kernel, axes, y, channels_first)
    n = len(axes)
    *taps_shape, cg, filters = kernel.shape
    fg = filters // groups
    flipped = kernel[(slice(None, None, -1),) * n]
    # (*k, Cg, G * Fg) -> (*k, Fg, G * Cg): within each group, inputs and outputs trade places.
    swapped = flipped.reshape(*taps_shape, cg, groups, fg)
    swapped = swapped.transpose(*range(n), n + 2, n + 1, n).reshape(*taps_shape, fg, groups * cg)
    spatial = [
        (axis.extent - 1 - axis.lo, axis.extent - 1 - axis.hi) if interior else (axis.extent - 1,) * 2
        for axis in axes
    ]
    cut = any(lo < 0 or hi < 0 for lo, hi in spatial)
    if cut:  # padded by more than the kernel reaches
        kept = tuple(slice(max(0, -lo), axis.output - max(0, -hi)) for (lo, hi), axis in zip(spatial, axes))
        y = y[(slice(None), slice(None), *kept) if channels_first else (slice(None), *kept)]
        spatial = [(max(0, lo), max(0, hi)) for lo, hi in spatial]
    pads = [(0, 0), (0, 0), *spatial] if channels_first else [(0, 0), *spatial, (0, 0)]
    sizes = y.shape[2:] if channels_first else y.shape[1:-1]
    grid = tuple(
        Axis(size + lo + hi, axis.kernel, 1, axis.dilation)
        for size, (lo, hi), axis in zip(sizes, spatial, axes)
    )
    if all(lo == hi == 0 for lo, hi in spatial):
        return _stride1(swapped, grid, groups, y, channels_first)
    if not cut and all(pads == (axis.extent - 1,) * 2 for pads, axis in zip(spatial, axes)):
        return _looking_back(swapped, axes, groups, y, channels_first)
    moved = not channels_first and _moves_to_first(swapped, grid, groups, y)
    if moved:  # pad straight into the channels-first form the products run in
        y, pads = _moveaxis(y, -1, 1), [(0, 0), (0, 0), *spatial]
    padded = scratch("padded", tuple(size + lo + hi for size, (lo, hi) in zip(y.shape, pads)), y.dtype)
    padded.fill(0)
    corner = tuple(slice(lo, lo + size) for size, (lo, _) in zip(y.shape, pads))
    _copy_tiled(padded[corner], y, 2 if channels_first or moved else 1)
    return _stride1(swapped, grid, groups, padded, channels_first or moved, out_first=channels_first)


def _looking_back(
    swapped: np.ndarray, axes: tuple[Axis, ...], groups: int, y: np.ndarray, channels_first: bool
) -> np.ndarray:
    """The correlation of `_transposed_stride1` with ``y`` on the padded input's own grid.

    ``xp[p] = sum_r y[p - r*d] K[r]^T`` looks back from ``p``: with ``y`` in the leading corner of
    every image's block of the padded grid ``P = output + extent - 1``, the zeros after one image
    are what the next one looks back into, and a margin of `reach` zeros before the first image
    serves it. The correlation of that buffer, started at the margin, gives every position of
    the grid: nothing is computed past the padded input and nothing is cropped (zero-padding
    ``y`` by ``extent - 1`` on both sides instead costs ``prod(P + extent - 1) / prod(P)`` times
    the products: 1.42 on the table's 3-D layer).
    """
    padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    grid = tuple(
        Axis(size + axis.extent - 1, axis.kernel, 1, axis.dilation) for size, axis in zip(padded, axes)
    )  # the correlation's axes: every grid position an output
    moved = not channels_first and _moves_to_first(swapped, grid, groups, y, math.prod(padded))
    if moved:  # lay y straight into the channels-first form the products run in
        y = _moveaxis(y, -1, 1)
    first = channels_first or moved
    extended, xp = _look_back_buffer(y, axes, first)
    return _stride1(swapped, grid, groups, xp, first, out_first=channels_first, extended=extended)


def _look_back_buffer(
    y: np.ndarray, axes: tuple[Axis, ...], channels_first: bool
) -> tuple[np.ndarray, np.ndarray]:
    """`y` laid for a look-back correlation (`_looking_back`, `._depthwise.depthwise_adjoint`).

    Returns a reused flat buffer: a margin of `reach` grid pixels of zeros, then every image's
    block of the padded grid ``P = output + extent - 1`` with ``y`` in its leading corner and
    zeros elsewhere; and the batch ``(B, C, *P)`` or ``(B, *P, C)`` that starts at the margin.
    """
    padded = tuple(axis.output + axis.extent - 1 for axis in axes)
    _, reach = flat_grid(padded, axes)
    batch, channels = y.shape[0], (y.shape[1] if channels_first else y.shape[-1])
    shape = (batch, channels, *padded) if channels_first else (batch, *padded, channels)
    lead = reach if channels_first else reach * channels
    extended = scratch("padded", (lead + math.prod(shape),), y.dtype)
    extended[:lead] = 0
    _in_corner(extended[lead:].reshape(shape), y, 2 if channels_first else 1, len(axes))
    return extended, extended[: math.prod(shape)].reshape(shape)


def _adjoint_strategy(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    dtype: np.dtype,
    channels_first: bool,
    nbytes: int,
) -> str:
    """Which adjoint strategy `_adjoint_onto_padded` runs (see there). Measured on the layer table.

    The tap GEMMs write ``(pixels, C)`` stretches: they want many input channels (the GEMM's rows).
    Channels-first they pay two transposes: worth it with strides, and with stride 1 on two or
    more axes, where the correlation's grid grows by ``extent - 1`` along every row and column
    (measured: 0.60 against 0.68 ms on the table's dilation-2 layer, 5.4 against 7.8 ms on 4 x
    64 x 64, 16 -> 32 channels, 5x5); in 1-D the correlation is the faster. With few channels,
    the last axis's taps can join them, in a copy of ``k_last`` times the padded input's `nbytes`.
    """
    cg, fg = kernel.shape[-2], kernel.shape[-1] // groups
    pixels = math.prod(axis.output + (axis.kernel - 1) * axis.dilation // axis.stride for axis in axes)
    strided = any(axis.stride > 1 for axis in axes)
    if groups == 1 and kernel.size > cg * fg:  # (a 1x1 kernel is one product in the correlation)
        tap_gemm = _tap_gemm_layout(dtype, fg, cg, pixels) == "last"
        if tap_gemm and (strided or not channels_first or len(axes) > 1):
            return "tap gemm"
        last = axes[-1]
        if (
            (strided or not channels_first)
            and last.stride == 1
            and last.kernel > 1
            and nbytes * last.kernel <= _WIDE_BYTES
            and _tap_gemm_layout(dtype, fg, cg * last.kernel, pixels) == "last"
        ):
            return "taps as channels"
    if fg > 1 and (strided or cg <= _FEW_CHANNELS):
        return "scatter"
    return "polyphase" if strided else "correlation"


def _adjoint_onto_padded(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    y: np.ndarray,
    channels_first: bool,
    interior: bool = False,
) -> tuple[np.ndarray, bool]:
    """The adjoint of ``y`` onto the padded input, in `y`'s layout, and whether it is a reused array.

    With `interior` the correlation, tap GEMM and scatter strategies give only the input's own
    entries (see `_transposed_stride1`, `_from_phases`); the other two the whole padded input.

    Each tap's products are written once, where they land: with enough channels and no groups
    by one accumulating GEMM per tap (*tap gemm*, `_adjoint_by_tap_gemm`), with few channels
    and a wide kernel after moving the last axis's taps into the channels (*taps as channels*,
    `_adjoint_taps_as_channels`); with strides or few input channels by one GEMM for all taps
    and slice-adds (*scatter*, `_adjoint_by_scatter`).
    Otherwise (stride 1 with many channels per group, or one filter per group) the adjoint is the
    correlation of the padded ``y`` with the flipped kernel (*correlation*, `_transposed_stride1`),
    whose GEMMs are then the larger; with strides and one filter per group, one such correlation
    per phase (*polyphase*, `_adjoint_polyphase`).
    """
    padded = math.prod(axis.size + axis.lo + axis.hi for axis in axes)
    nbytes = y.shape[0] * padded * groups * kernel.shape[-2] * y.itemsize
    strategy = _adjoint_strategy(kernel, axes, groups, y.dtype, channels_first, nbytes)
    if strategy == "tap gemm":
        return _adjoint_by_tap_gemm(kernel, axes, y, channels_first, interior)
    if strategy == "taps as channels":
        return _adjoint_taps_as_channels(kernel, axes, y, channels_first)
    if strategy == "scatter":
        return _adjoint_by_scatter(kernel, axes, groups, y, channels_first, interior)
    if strategy == "polyphase":
        xp = _adjoint_polyphase(kernel, axes, groups, _channels_last(y, channels_first))
        return (_moveaxis(xp, -1, 1) if channels_first else xp), True
    return _transposed_stride1(kernel, axes, groups, y, channels_first, interior), False


def _adjoint_taps_as_channels(
    kernel: np.ndarray, axes: tuple[Axis, ...], y: np.ndarray, channels_first: bool
) -> tuple[np.ndarray, bool]:
    """The adjoint of the layer of `_taps_as_channels` (tap GEMMs), then its taps folded back.

    Returns the padded input in `y`'s layout and whether it is a reused work array (or a view
    of one): a channels-last result without padding is folded straight into a new array. Stride
    1 along the last axis, no groups. Channel ``(c, r)`` of the wide result holds what tap ``r``
    of the last axis sends to channel ``c`` of the padded input from each output: one shifted
    add per tap.
    """
    last, channels = axes[-1], kernel.shape[-2]
    wide, _ = _adjoint_by_tap_gemm(_wide_kernel(kernel), _wide_axes(axes), y, channels_first)
    wide = _channels_last(wide, channels_first)  # (B, *P', o_last, C * k_last)
    wide = wide.reshape(*wide.shape[:-1], channels, last.kernel)
    shape = (*wide.shape[:-3], last.size + last.lo + last.hi, channels)
    final = not channels_first and all(axis.lo == axis.hi == 0 for axis in axes)
    xp = np.empty(shape, y.dtype) if final else scratch("wide", shape, y.dtype)
    xp[..., : last.output, :] = wide[..., 0]  # the first tap, then the others added
    xp[..., last.output :, :] = 0
    for r in range(1, last.kernel):
        start = r * last.dilation
        xp[..., start : start + last.output, :] += wide[..., r]
    return (_moveaxis(xp, -1, 1) if channels_first else xp), not final


@functools.lru_cache(maxsize=32)  # (each entry holds two ints per tap)
def _scatter_grid(
    axes: tuple[Axis, ...],
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[int, ...], tuple[int, ...]]:
    """Where the taps of a scatter (`_adjoint_by_scatter`, `_adjoint_by_tap_gemm`) land.

    Tap ``r`` of output ``o`` writes padded position ``o * s + r * d``: entry ``o + (r * d) // s``
    of phase ``(r * d) mod s`` (with stride 1, the one phase is the padded input itself). Every
    phase is laid on one grid of ``o + ((k - 1) * d) // s`` entries per axis, with `y` on its first
    ``o``; then each tap adds a contiguous stretch of the flat grid, shifted by its entry offset.

    Returns the grid's shape, the phases that receive taps, and per tap (C order) the number of
    its phase in that list and its shift on the flat grid. Cached: a Python loop over the taps,
    60 us for a 7x7 kernel (3% of the table's 7x7 stride-2 adjoint).
    """
    grid = tuple(axis.output + (axis.kernel - 1) * axis.dilation // axis.stride for axis in axes)
    steps, _ = flat_grid(grid, axes)
    per_axis = [
        [
            ((r * axis.dilation) % axis.stride, (r * axis.dilation) // axis.stride * step)
            for r in range(axis.kernel)
        ]
        for axis, step in zip(axes, steps)
    ]
    phases: dict[tuple[int, ...], int] = {}
    numbers, shifts = [], []
    for tap in itertools.product(*per_axis):
        phase = tuple(residue for residue, _ in tap)
        numbers.append(phases.setdefault(phase, len(phases)))
        shifts.append(sum(shift for _, shift in tap))
    return grid, tuple(phases), tuple(numbers), tuple(shifts)


def _on_grid(y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A channels-last batch ``(B, *o, F)`` on a zeroed grid, flattened to ``(pixels, F)``.

    Each image sits in the leading corner of its ``(*shape, F)`` block of a reused work array.
    """
    grid = scratch("grid", (y.shape[0], *shape, y.shape[-1]), y.dtype)
    _in_corner(grid, y, 1, len(shape))
    return grid.reshape(-1, y.shape[-1])


def _in_corner(images: np.ndarray, y: np.ndarray, front: int, n: int) -> None:
    """Write `y` in the leading corner of `images` along their `n` spatial axes, zeros elsewhere.

    The spatial axes follow the `front` leading ones (the batch, and channels-first the channels).
    The zeros go in one slab per axis, so that nothing is written twice, unless the gap after
    each row is shorter than `_SHORT_RUN` entries (measured: 2 floats per row of a channels-first
    grid took longer than a fill of the whole grid).
    """
    lead = (slice(None),) * front
    corner = tuple(slice(0, size) for size in y.shape[front : front + n])
    gap = (images.shape[front + n - 1] - y.shape[front + n - 1]) * math.prod(images.shape[front + n :])
    if 0 < gap < _SHORT_RUN:  # the zeros after each row are short runs: one fill writes faster
        images.fill(0)
    else:
        for i, size in enumerate(y.shape[front : front + n]):
            images[lead + corner[:i] + (slice(size, None),)] = 0
    _copy_tiled(images[lead + corner], y, front)


def _from_phases(
    phased: np.ndarray,
    axes: tuple[Axis, ...],
    phases: tuple[tuple[int, ...], ...],
    channels_first: bool,
    interior: bool = False,
) -> tuple[np.ndarray, bool]:
    """The padded batch from its phases ``(phases, B, C, *grid)``, and whether it is a reused array.

    With `interior`, only the input's own entries (padded positions ``lo`` to ``lo + size - 1``,
    what zero padding's adjoint keeps): with strides a new array, written straight from the
    phases. With stride 1 the one phase is the padded batch, and the result a view of `phased`.
    """
    batch, channels = phased.shape[1:3]
    padded = tuple(axis.size + axis.lo + axis.hi for axis in axes)
    lows = tuple(axis.lo if interior else 0 for axis in axes)
    sizes = tuple(axis.size for axis in axes) if interior else padded
    if all(axis.stride == 1 for axis in axes):
        crop = phased[0][(Ellipsis,) + tuple(slice(lo, lo + size) for lo, size in zip(lows, sizes))]
        return (crop if channels_first else _moveaxis(crop, 1, -1)), True
    shape = (batch, channels, *sizes) if channels_first else (batch, *sizes, channels)
    xp = np.empty(shape, phased.dtype) if interior else scratch("phases", shape, phased.dtype)
    xp.fill(0)  # positions no tap reaches: phases without taps, rows past the last window
    grid = phased.shape[3:]
    for number, phase in enumerate(phases):
        # Along each axis, the entries k of the phase (its first padded position p, then every
        # s-th) that are kept: first <= k < stop.
        kept = []
        for p, full, lo, size, a, g in zip(phase, padded, lows, sizes, axes, grid):
            stop = min(g, len(range(p, full, a.stride)), len(range(p, lo + size, a.stride)))
            kept.append((len(range(p, lo, a.stride)), stop, p - lo, a.stride))
        if any(first >= stop for first, stop, _, _ in kept):
            continue
        positions = tuple(slice(at + first * s, at + stop * s - s + 1, s) for first, stop, at, s in kept)
        source = phased[number][(Ellipsis,) + tuple(slice(first, stop) for first, stop, _, _ in kept)]
        if channels_first:
            xp[(slice(None), slice(None)) + positions] = source
        else:
            xp[(slice(None),) + positions] = _moveaxis(source, 1, -1)
    return xp, not interior


def _adjoint_by_scatter(
    kernel: np.ndarray,
    axes: tuple[Axis, ...],
    groups: int,
    y: np.ndarray,
    channels_first: bool,
    interior: bool = False,
) -> tuple[np.ndarray, bool]:
    """The adjoint of ``y`` onto the padded input, in `y`'s layout: one GEMM per block, then slice-adds.

    Returns it and whether it is a reused work array (or a view of one); with `interior` only
    the input's own entries (`_from_phases`).

    `y` is placed on the flat grid of `_scatter_grid` (zeros elsewhere); for each block of grid
    pixels one GEMM gives every tap, and each tap is added to its phase with one
    contiguous slice-add. With few input channels this beats the correlation, whose GEMM would
    have only C output rows; with strides it writes every tap once, where the polyphase adjoint
    pads `y` once per phase.
    """
    *taps_shape, cg, filters = kernel.shape
    fg, taps = filters // groups, math.prod(taps_shape)
    batch, dtype = y.shape[0], y.dtype
    outputs = tuple(axis.output for axis in axes)
    shape, phases, numbers, shifts = _scatter_grid(axes)
    total = batch * math.prod(shape)
    # The grid in y's layout (no transposing copy): the GEMM reads either as (G, Fg, pixels).
    if channels_first:
        grid = scratch("grid", (groups, fg, batch, *shape), dtype)
        placed = y.reshape(batch, groups, fg, *outputs).transpose(1, 2, 0, *range(3, 3 + len(axes)))
        _in_corner(grid, placed, 3, len(axes))
        flat = grid.reshape(groups, fg, total)
    else:
        flat = _on_grid(y, shape).reshape(total, groups, fg).transpose(1, 2, 0)
    # (*k, Cg, G * Fg) -> (G, taps * Cg, Fg)
    weights = np.ascontiguousarray(_moveaxis(kernel.reshape(taps, cg, groups, fg), 2, 0))
    weights = weights.reshape(groups, taps * cg, fg)
    phased = scratch("scatter", (len(phases), groups, cg, total), dtype)
    phased.fill(0)
    length = total - max(shifts)
    block = min(length, max(256, _SCATTER_BYTES // (groups * taps * cg * dtype.itemsize)))
    if length > 0:  # blocks of equal size: no short last one
        block = -(-length // -(-length // block))
    buffer = scratch("products", (groups, taps * cg, block), dtype)
    for start in range(0, length, block):
        stop = min(start + block, length)
        products = np.matmul(weights, flat[:, :, start:stop], out=buffer[:, :, : stop - start])
        products = products.reshape(groups, taps, cg, stop - start)
        for t, (number, shift) in enumerate(zip(numbers, shifts)):
            phased[number, :, :, start + shift : stop + shift] += products[:, t]
    phased = phased.reshape(len(phases), groups * cg, batch, *shape).swapaxes(1, 2)
    return _from_phases(phased, axes, phases, channels_first, interior)


def _adjoint_by_tap_gemm(
    kernel: np.ndarray, axes: tuple[Axis, ...], y: np.ndarray, channels_first: bool, interior: bool = False
) -> tuple[np.ndarray, bool]:
    """The adjoint of ``y`` onto the padded input, in `y`'s layout: one accumulating GEMM per tap.

    Returns it and whether it is a reused work array (or a view of one); with `interior` only
    the input's own entries (`_from_phases`). No groups; needs SciPy's BLAS and its dtypes.

    `_adjoint_by_scatter` with the channels innermost: `y` is laid on the flat grid of
    `_scatter_grid` as ``(pixels, F)`` and each tap accumulates ``y[q] @ K[r]^T`` straight into
    the ``(pixels, C)`` stretch of its phase that it writes (BLAS ``beta = 1``), so that neither
    `y` nor the result changes layout and no product is stored. A channels-last `y` whose grid
    pads only the first axis (`_adjoint_taps_as_channels`'s layer, 1-D) is read in place.
    """
    *taps_shape, channels, filters = kernel.shape
    batch, dtype = y.shape[0], y.dtype
    shape, phases, numbers, shifts = _scatter_grid(axes)
    image, outputs = math.prod(shape), tuple(axis.output for axis in axes)
    total = batch * image
    if not channels_first and shape[1:] == outputs[1:]:
        # The grid pads the first axis alone: each image of y is the leading stretch of its block
        # of the grid, whose GEMMs read it in place.
        flat = np.ascontiguousarray(y).reshape(batch, -1, filters)
        stretches = [(b * image, flat[b]) for b in range(batch)]
    else:
        flat = _on_grid(_channels_last(y, channels_first), shape)
        stretches = [(0, flat[: total - max(shifts)])]
    # (*k, C, F) -> (taps, F, C): each tap's K[r]^T C-ordered, so that its .T is K[r] for BLAS.
    weights = np.ascontiguousarray(kernel.reshape(len(shifts), channels, filters).transpose(0, 2, 1))
    phased = scratch("scatter", (len(phases), total, channels), dtype)
    # With one phase, the first tap (shift 0) writes where the block's GEMMs start and the other
    # taps add: blocks run last to first, so that no later block has added there before. Only
    # what lies past each stretch is zeroed. With several phases every GEMM adds onto zeros.
    overwrite = len(phases) == 1 and shifts[0] == 0
    if not overwrite:
        phased.fill(0)
    gemm = _blas().get_blas_funcs("gemm", dtype=dtype)  # type: ignore[union-attr]
    block = max(256, _TAP_BLOCK_BYTES // ((channels + filters) * dtype.itemsize))
    for offset, stretch in stretches:
        if overwrite:
            phased[0, offset + len(stretch) : offset + len(stretch) + max(shifts)] = 0
        for start in reversed(range(0, len(stretch), block)):
            stop = min(start + block, len(stretch))
            source = stretch[start:stop].T
            for t, (number, shift) in enumerate(zip(numbers, shifts)):
                target = phased[number, offset + start + shift : offset + stop + shift].T
                beta = 0.0 if overwrite and t == 0 else 1.0
                gemm(1.0, weights[t].T, source, beta, target, overwrite_c=True)
    phased = phased.reshape(len(phases), batch, *shape, channels)
    return _from_phases(_moveaxis(phased, -1, 2), axes, phases, channels_first, interior)


def _residue_taps(axis: Axis, phase: int) -> tuple[int, int, int, int] | None:
    """Taps of `axis` that land on padded positions ``phase (mod stride)``.

    Returns ``(first, step, count, offset)``: taps ``first + j * step`` for ``j < count``; they
    read phase positions ``o + offset + j * (dilation * step // stride)``. None if there are none.
    """
    stride, dilation = axis.stride, axis.dilation
    step = stride // math.gcd(stride, dilation)
    first = next((r for r in range(min(step, axis.kernel)) if r * dilation % stride == phase), None)
    if first is None:
        return None
    count = (axis.kernel - 1 - first) // step + 1
    return first, step, count, (first * dilation - phase) // stride


def _adjoint_polyphase(kernel: np.ndarray, axes: tuple[Axis, ...], groups: int, y: np.ndarray) -> np.ndarray:
    """Adjoint with strides of a channels-last batch `y`, onto the padded input ``(B, *P, C)``.

    Returns a reused work array.

    Padded position ``p = o * s + r * d`` falls in phase ``p mod s``. The taps of one phase form
    a kernel ``K[first::step]`` with dilation ``d * step / s``, and that phase of the padded input
    is the stride-1 transposed correlation of ``y`` with it, shifted by ``offset``: every phase is
    one dense stride-1 problem and one strided write.
    """
    n = len(axes)
    batch, channels = y.shape[0], groups * kernel.shape[-2]
    padded = tuple(axis.size + axis.lo + axis.hi for axis in axes)
    xp = scratch("polyphase", (batch, *padded, channels), y.dtype)
    xp.fill(0)
    # Padded positions p < P fall in phases p mod s: no more than P of them, whatever the stride.
    phases = [range(min(axis.stride, size)) for axis, size in zip(axes, padded)]
    for phase in itertools.product(*phases):
        found = [_residue_taps(axis, p) for axis, p in zip(axes, phase)]
        parts = [part for part in found if part is not None]
        if len(parts) < n:
            continue
        sub = kernel[tuple(slice(first, None, step) for first, step, _, _ in parts)]
        sub_axes = []
        for axis, (_, step, count, _) in zip(axes, parts):
            dilation = axis.dilation * step // axis.stride
            sub_axes.append(Axis(axis.output + (count - 1) * dilation, count, 1, dilation))
        part, _ = _adjoint_onto_padded(sub, tuple(sub_axes), groups, y, False)  # (B, *(o + ext' - 1), C)
        target = [slice(None)]
        for p, axis, (_, _, _, offset), size in zip(phase, axes, parts, part.shape[1 : n + 1]):
            target.append(slice(p + offset * axis.stride, p + (offset + size) * axis.stride, axis.stride))
        xp[tuple(target)] = part
    return xp


# -- the FFT method -------------------------------------------------------------------------------
@functools.cache
def _fft_module() -> ModuleType:
    """`scipy.fft` where installed (faster, keeps float32), else `numpy.fft`."""
    try:
        return importlib.import_module("scipy.fft")
    except ImportError:
        return np.fft


def _fast_length(n: int) -> int:
    """The smallest 2-3-5-smooth integer >= n."""
    best = 2 ** max(0, (n - 1).bit_length())
    power5 = 1
    while power5 < best:
        power3 = power5
        while power3 < best:
            length = power3
            while length < n:
                length *= 2
            best = min(best, length)
            power3 *= 3
        power5 *= 5
    return best


def _output_positions(axes: tuple[Axis, ...], lengths: tuple[int, ...]) -> tuple[Any, ...]:
    """Index of the outputs ``o * s`` (mod ``N``) on the transform grid: slices where they fit."""
    if all((axis.output - 1) * axis.stride < length for axis, length in zip(axes, lengths)):
        return (slice(None), *(slice(0, (axis.output - 1) * axis.stride + 1, axis.stride) for axis in axes))
    # o * s mod N as o * (s mod N) mod N: a stride past int64 changes nothing else
    positions = [np.arange(axis.output) * (axis.stride % n) % n for axis, n in zip(axes, lengths)]
    return (slice(None), *np.ix_(*positions))


def _fft_pads_itself(geometry: Geometry) -> bool:
    """Zero and circular padding happen inside the transform; the other modes pad first."""
    return geometry.mode.name in ("zeros", "circular")


def _fft_lengths(axes: tuple[Axis, ...], circular: bool) -> tuple[int, ...]:
    """Transform length per axis: the input's own for circular, else long enough not to wrap.

    With the input at positions ``[0, m)`` and zeros up to ``N``, tap ``r`` at ``(r*d - lo) mod
    N`` and output ``o`` read at ``o * s``, the reads that fall outside the input land on zeros
    as long as ``N >= m + max(lo, hi)``, ``N > (o - 1) * s`` and ``N >= extent``.
    """
    if circular:
        return tuple(axis.size for axis in axes)
    return tuple(
        _fast_length(max(axis.size + max(axis.lo, axis.hi), (axis.output - 1) * axis.stride + 1, axis.extent))
        for axis in axes
    )


_SPECTRA: dict[tuple[Any, ...], np.ndarray] = {}
_SPECTRA_LOCK = threading.Lock()
_SPECTRA_LIMIT = 8


def _kernel_spectrum(
    kernel: np.ndarray, axes: tuple[Axis, ...], lengths: tuple[int, ...], adjoint: bool
) -> np.ndarray:
    """Spectrum of the kernel laid on the transform grid, ``(*frequencies, Cg, F)``, cached.

    Tap ``r`` sits at ``(r * d - lo) mod N`` (folded taps add up). The forward direction
    correlates, so it takes ``conj(FFT(conj(kernel)))``; the adjoint convolves, with ``FFT(kernel)``.
    """
    digest = hashlib.blake2b(np.ascontiguousarray(kernel).tobytes(), digest_size=16).digest()
    key = (
        digest,
        kernel.shape,
        kernel.dtype.str,
        tuple((a.size, a.kernel, a.stride, a.dilation, a.lo, a.hi) for a in axes),
        lengths,
        adjoint,
    )
    spectrum = _SPECTRA.get(key)
    if spectrum is not None:
        return spectrum
    n = len(axes)
    laid = np.zeros((*lengths, *kernel.shape[n:]), dtype=kernel.dtype)
    # In Python ints: a dilation of a one-tap axis may be any size (NumPy's int64 would wrap).
    positions = np.ix_(
        *(
            [(r * axis.dilation - axis.lo) % length for r in range(axis.kernel)]
            for axis, length in zip(axes, lengths)
        )
    )
    np.add.at(laid, positions, kernel)
    fft, spatial = _fft_module(), tuple(range(n))
    if kernel.dtype.kind == "f":
        spectrum = fft.rfftn(laid, axes=spatial)
        spectrum = spectrum if adjoint else spectrum.conj()
    else:
        spectrum = fft.fftn(laid, axes=spatial) if adjoint else fft.fftn(laid.conj(), axes=spatial).conj()
    with _SPECTRA_LOCK:  # two threads must not evict the same entry
        if len(_SPECTRA) >= _SPECTRA_LIMIT:
            _SPECTRA.pop(next(iter(_SPECTRA)))
        _SPECTRA[key] = spectrum
    return spectrum


def _fft_dtype(dtype: np.dtype) -> np.dtype:
    """Half floats are transformed in single precision."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def _spectral_product(spectra: np.ndarray, spectrum: np.ndarray, groups: int) -> np.ndarray:
    """``out[b, w, g, f] = sum_c spectra[b, w, g, c] * spectrum[w, c, g, f]`` (flat frequencies ``w``)."""
    batch, frequencies = spectra.shape[:2]
    cg, fg = spectrum.shape[-2], spectrum.shape[-1] // groups
    inputs = spectra.reshape(batch, frequencies, groups, cg)
    weights = spectrum.reshape(frequencies, cg, groups, fg)
    if fg == 1 and cg == 1:
        return inputs[..., 0] * weights[:, 0, :, 0]
    out = np.zeros((batch, frequencies, groups, fg), dtype=np.result_type(spectra, spectrum))
    for c in range(cg):
        out += inputs[:, :, :, c, None] * weights[:, c]
    return out.reshape(batch, frequencies, groups * fg)


def _transform(x: np.ndarray, lengths: tuple[int, ...], real: bool) -> np.ndarray:
    fft, spatial = _fft_module(), tuple(range(1, len(lengths) + 1))
    return fft.rfftn(x, s=lengths, axes=spatial) if real else fft.fftn(x, s=lengths, axes=spatial)


def _inverse(spectra: np.ndarray, lengths: tuple[int, ...], real: bool) -> np.ndarray:
    fft, spatial = _fft_module(), tuple(range(1, len(lengths) + 1))
    return (
        fft.irfftn(spectra, s=lengths, axes=spatial) if real else fft.ifftn(spectra, s=lengths, axes=spatial)
    )


def _fft_apply(kernel: np.ndarray, geometry: Geometry, data: np.ndarray, adjoint: bool) -> np.ndarray:
    """The correlation of a channels-last batch by FFT, ``(B, *o, F)``, or its adjoint, ``(B, *m, C)``.

    Returns the input's dtype. The adjoint places ``y`` at the outputs' positions ``o * s`` of
    the transform grid, multiplies by the transposed spectrum and reads back ``[0, m)``.
    """
    dtype, axes, n = data.dtype, geometry.axes, geometry.ndim
    work = _fft_dtype(dtype)
    real = work.kind == "f"
    lengths = _fft_lengths(axes, geometry.circular)
    spectrum = _kernel_spectrum(kernel.astype(work, copy=False), axes, lengths, adjoint)
    groups, cg, fg = geometry.groups, geometry.group_channels, geometry.group_filters
    outputs = _output_positions(axes, lengths)
    if adjoint:
        inputs, results = geometry.filters, geometry.channels
        # (*w, Cg, G * Fg) -> (*w, Fg, G * Cg): the transposed product, group by group.
        spectrum = spectrum.reshape(-1, cg, groups, fg).transpose(0, 3, 2, 1).reshape(-1, fg, groups * cg)
        if not all(isinstance(part, slice) for part in outputs) or any(axis.stride > 1 for axis in axes):
            placed = np.zeros((data.shape[0], *lengths, inputs), dtype=work)
            if all(isinstance(part, slice) for part in outputs):
                placed[outputs] = data
            else:  # circular: outputs a whole period apart read the same position
                np.add.at(placed, outputs, data)
            data = placed
        # (otherwise the transform pads with zeros up to `lengths`)
        index: tuple[Any, ...] = (slice(None), *(slice(0, axis.size) for axis in axes))
    else:
        inputs, results = geometry.channels, geometry.filters
        spectrum = spectrum.reshape(-1, cg, groups * fg)
        index = outputs
    spectra = _transform(data.astype(work, copy=False), lengths, real)
    frequencies = spectra.shape[1 : n + 1]
    product = _spectral_product(spectra.reshape(data.shape[0], -1, inputs), spectrum, groups)
    full = _inverse(product.reshape(data.shape[0], *frequencies, results), lengths, real)
    return full[index].astype(dtype, copy=False)
