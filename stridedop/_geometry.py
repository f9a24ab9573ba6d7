"""Argument checking and the geometry of a convolution.

Everything a public function receives passes through here first: the kernel is checked for a
numeric dtype, and the shape, padding, padding mode, stride, dilation, groups and layout
arguments become one immutable `Geometry`. The rest of the package computes only with a
`Geometry`, never with raw arguments. Each kind of argument has one normalizer here.

All size arithmetic uses Python ints, which cannot overflow.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ._modes import PADDING_MODES, PaddingMode, PaddingModeName, padding_mode

LayoutName = Literal["channels_last", "channels_first"]
PaddingName = Literal["valid", "same", "full", "circular"]
Padding = PaddingName | int | Sequence[int] | Sequence[tuple[int, int]]
IntOrInts = int | Sequence[int]

LAYOUTS = ("channels_last", "channels_first")
MAX_SPATIAL_AXES = 31  # the operator view (*o, F, *m, C) has 2N + 2 axes; NumPy allows 64
PADDING_NAMES = ("valid", "same", "full", "circular")

__all__ = [
    "Axis",
    "CheckedGeometry",
    "Geometry",
    "IntOrInts",
    "LayoutName",
    "Padding",
    "PaddingModeName",
    "PaddingName",
    "as_int",
    "as_numeric_array",
    "brief",
    "check_geometry",
    "distinct_residues",
    "geometry_of",
    "input_positions",
    "make_geometry",
    "outputs_inside",
    "position_dtype",
    "positions_in_range",
]


def brief(value: Any) -> str:
    """A short description of `value` for an error message: never a whole array."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({type(value).__name__})"


def as_numeric_array(value: Any, name: str) -> np.ndarray:
    """Return `value` as an ndarray (no copy when possible) with a numeric or bool dtype.

    A masked array with masked entries is refused: `np.asarray` would silently drop its mask.
    """
    if type(value) is not np.ndarray:  # else the common case: neither masked nor to convert
        masked = np.ma.count_masked(value) if isinstance(value, np.ma.MaskedArray) else 0
        if masked:
            raise ValueError(
                f"`{name}` is a masked array with {masked} masked entries; "
                f"fill them first (`{name}.filled(0)`) or pass `{name}.data` to use the values under the mask"
            )
        value = np.asarray(value)
    if value.dtype.kind not in "biufc":
        raise TypeError(
            f"`{name}` has dtype {value.dtype}, which is not numeric; "
            "expected a bool, integer, floating or complex dtype"
        )
    return value


def as_int(value: Any, name: str) -> int:
    """Return `value` as a Python int, refusing bools, floats and strings with a clear message."""
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, (float, np.floating)):
        raise ValueError(f"`{name}` must be an integer, got the fractional value {value!r}")
    raise ValueError(f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}")


def _as_int_tuple(value: Any, name: str, length: int | None = None) -> tuple[int, ...]:
    """Return a sequence of ints as a tuple of Python ints; a single int gives `length` copies."""
    if type(value) is int:
        return (value,) * (1 if length is None else length)
    if isinstance(value, (str, bytes)):
        raise ValueError(f"`{name}` must be an integer or a sequence of integers, got the string {value!r}")
    if not isinstance(value, (tuple, list)) and np.ndim(value) == 0:
        number = as_int(value, name)
        return (number,) * (1 if length is None else length)
    items = tuple([as_int(item, name) for item in value])
    if length is not None and len(items) != length:
        raise ValueError(
            f"`{name}` must be one integer or {length} integers (one per spatial axis), "
            f"got {len(items)}: {value!r}"
        )
    return items


def _positive_ints(value: Any, name: str, length: int) -> tuple[int, ...]:
    """`length` ints ``>= 1``: `value` is one int for every axis or one per axis."""
    values = _as_int_tuple(value, name, length)
    if min(values) < 1:
        raise ValueError(f"`{name}` must be >= 1 on every axis, got {value!r}")
    return values


@dataclass(frozen=True, init=False)
class Axis:
    """One spatial axis: input size, kernel size, stride, dilation and padding amounts.

    Output position ``o`` with kernel tap ``r`` reads the (padded) input at
    ``o * stride + r * dilation - lo``. `extent` is the dilated kernel size
    ``(k - 1) * dilation + 1`` and `output` the number of output positions
    ``(m + lo + hi - extent) // stride + 1``.
    """

    size: int
    kernel: int
    stride: int
    dilation: int
    lo: int
    hi: int
    extent: int = field(init=False, compare=False, repr=False)
    output: int = field(init=False, compare=False, repr=False)

    def __init__(
        self, size: int, kernel: int, stride: int = 1, dilation: int = 1, lo: int = 0, hi: int = 0
    ) -> None:
        # Frozen: the fields go straight into the instance dict (a frozen dataclass's own __init__
        # calls object.__setattr__ once per field, several times slower).
        extent = (kernel - 1) * dilation + 1
        fields = self.__dict__
        fields["size"] = size
        fields["kernel"] = kernel
        fields["stride"] = stride
        fields["dilation"] = dilation
        fields["lo"] = lo
        fields["hi"] = hi
        fields["extent"] = extent
        fields["output"] = (size + lo + hi - extent) // stride + 1

    @property
    def padded(self) -> int:
        """Length of the padded axis, ``m + lo + hi``."""
        return self.size + self.lo + self.hi

    @property
    def tap_dilation(self) -> int:
        """The dilation between taps: 1 on an axis of one tap, whose dilation changes nothing."""
        return self.dilation if self.kernel > 1 else 1


@dataclass(frozen=True, eq=False, init=False)
class Geometry:
    """A fully checked convolution geometry; see `make_geometry`.

    Immutable: the values needed on every build are fields, the rest cached properties; the
    products keep a few more derived values in the instance dict (`_apply._per_geometry`).
    """

    axes: tuple[Axis, ...]
    channels: int
    filters: int
    groups: int
    mode: PaddingMode
    layout: LayoutName
    padding: Any  # the argument as given, kept for repr
    ndim: int = field(init=False)  # N, the number of spatial axes
    group_channels: int = field(init=False)
    group_filters: int = field(init=False)
    spatial_input: tuple[int, ...] = field(init=False)
    spatial_output: tuple[int, ...] = field(init=False)
    input_shape: tuple[int, ...] = field(init=False)
    output_shape: tuple[int, ...] = field(init=False)
    view_shape: tuple[int, ...] = field(init=False)
    canonical_shape: tuple[int, ...] = field(init=False)  # in the buffer's order: (*o, F, *m, C)
    dense_size: int = field(init=False)  # entries of the dense operator
    circular: bool = field(init=False)  # whether the input wraps around (the circular padding mode)

    def __init__(
        self,
        axes: tuple[Axis, ...],
        channels: int,
        filters: int,
        groups: int,
        mode: PaddingMode,
        layout: LayoutName,
        padding: Any,
    ) -> None:
        spatial_input = tuple([axis.size for axis in axes])
        spatial_output = tuple([axis.output for axis in axes])
        if layout == "channels_last":
            input_shape = (*spatial_input, channels)
            output_shape = (*spatial_output, filters)
        else:
            input_shape = (channels, *spatial_input)
            output_shape = (filters, *spatial_output)
        fields = self.__dict__  # frozen: written straight into the instance dict, see `Axis`
        fields["axes"] = axes
        fields["channels"] = channels
        fields["filters"] = filters
        fields["groups"] = groups
        fields["mode"] = mode
        fields["layout"] = layout
        fields["padding"] = padding
        fields["ndim"] = len(axes)
        fields["group_channels"] = channels // groups
        fields["group_filters"] = filters // groups
        fields["spatial_input"] = spatial_input
        fields["spatial_output"] = spatial_output
        fields["input_shape"] = input_shape
        fields["output_shape"] = output_shape
        fields["view_shape"] = view_shape = (*output_shape, *input_shape)
        fields["canonical_shape"] = (*spatial_output, filters, *spatial_input, channels)
        fields["dense_size"] = math.prod(view_shape)
        fields["circular"] = mode.name == "circular"

    def _key(self) -> tuple[Any, ...]:
        return (self.axes, self.channels, self.filters, self.groups, self.mode.name, self.layout)

    def __getstate__(self) -> dict[str, Any]:
        # Values other modules derive and keep in the instance dict (`_apply._per_geometry`) stay
        # out of pickles: they are recomputed, and a pickle need not name their private types.
        return {name: value for name, value in self.__dict__.items() if not name.startswith("_cached")}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def spatial_kernel(self) -> tuple[int, ...]:
        return tuple([axis.kernel for axis in self.axes])

    @property
    def stride(self) -> tuple[int, ...]:
        return tuple([axis.stride for axis in self.axes])

    @property
    def dilation(self) -> tuple[int, ...]:
        return tuple([axis.dilation for axis in self.axes])

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        return tuple([(axis.lo, axis.hi) for axis in self.axes])

    @property
    def taps(self) -> int:
        """Number of spatial kernel taps, prod(k)."""
        return math.prod(self.spatial_kernel)

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return math.prod(self.output_shape)

    def replace(self, **changes: Any) -> Geometry:
        """A copy with some fields changed (`axes`, `mode`, `layout`, ...)."""
        fields = {name: getattr(self, name) for name in ("axes", "channels", "filters", "groups")}
        fields.update(mode=self.mode, layout=self.layout, padding=self.padding)
        fields.update(changes)
        return Geometry(**fields)

    def valid_on_padded(self) -> Geometry:
        """The 'valid' geometry on the padded grid: this operator is it after the padding map."""
        axes = tuple([Axis(axis.padded, axis.kernel, axis.stride, axis.dilation) for axis in self.axes])
        return self.replace(axes=axes, mode=padding_mode("zeros"), padding="valid")

    @cached_property
    def nonzero_count(self) -> int:
        """Number of structural non-zeros (distinct input entries each output reads, per channel)."""
        # The axes are independent: the total is a product over axes times the channel pairs.
        # Zero and circular padding count in closed form, at no cost proportional to the kernel
        # or the input.
        total = self.filters * self.group_channels
        for axis in self.axes:
            if not self.mode.folds:
                total *= _pairs_inside(axis)
            elif self.circular:
                total *= axis.output * distinct_residues(axis)
            else:
                total *= _folded_nonzeros(axis, self.mode)
        return total

    def describe(self) -> str:
        """A one-line summary of the geometry, used by repr and the command line."""
        padding = self.padding if isinstance(self.padding, str) else list(self.pads)
        parts = [f"padding={padding!r}"]
        if self.mode.name != "zeros" and padding != "circular":
            parts.append(f"padding_mode={self.mode.name!r}")
        if any(s != 1 for s in self.stride):
            parts.append(f"stride={self.stride if len(set(self.stride)) > 1 else self.stride[0]}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"dilation={self.dilation if len(set(self.dilation)) > 1 else self.dilation[0]}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        parts.append(f"layout={self.layout!r}")
        return ", ".join(parts)


def _folded_nonzeros(axis: Axis, mode: PaddingMode) -> int:
    """Reflect and replicate: the distinct input entries each output reads, summed over outputs.

    Outputs whose taps all land inside the input read `kernel` distinct entries. Replicate counts
    the others in closed form. Reflect sums the border outputs over at most one period of the
    reflection (``2(m - 1)`` outputs' offsets) per border: by runs at dilation 1 (`_reflect_run_sum`),
    else by taps (`_reflect_tap_sum`, up to a few thousand distinct taps), else per output in
    closed form, a chunk at a time (`_reflect_chunk_sum`: only for dilated kernels with many taps
    and many border outputs).
    """
    size, kernel, stride, dilation, lo = axis.size, axis.kernel, axis.stride, axis.dilation, axis.lo
    if size == 1:
        return axis.output  # every tap reads the one entry
    if mode.name == "replicate":
        return _replicate_nonzeros(axis)
    first = min(axis.output, -(-lo // stride))  # the first output whose taps are all inside
    stop = min(axis.output, max(first, (size - 1 + lo - (kernel - 1) * dilation) // stride + 1))
    total = (stop - first) * kernel
    # The count depends on the offset o*s - lo modulo P = 2(m - 1) only: periodic in o.
    period = 2 * (size - 1)
    cycle = period // math.gcd(stride % period, period)
    for begin, end in ((0, first), (stop, axis.output)):
        repeats, rest = divmod(end - begin, cycle)
        if repeats:
            total += repeats * _reflect_sum(begin, begin + cycle, axis)
        total += _reflect_sum(begin, begin + rest, axis)
    return total


def _reflect_sum(begin: int, end: int, axis: Axis) -> int:
    """Sum of `_reflect_sources` over the outputs ``[begin, end)``: by runs, else a chunk at a time."""
    if axis.dilation == 1:
        total = _reflect_run_sum(begin, end, axis)
        if total is not None:
            return total
    total = _reflect_tap_sum(begin, end, axis)
    return _reflect_chunk_sum(begin, end, axis) if total is None else total


def _reflect_tap_sum(begin: int, end: int, axis: Axis) -> int | None:
    """Sum of `_reflect_sources` over the outputs ``[begin, end)`` by taps, or None if too many.

    Each output reads ``(2K - both + fixed) / 2`` entries (see `_reflect_sources`). ``fixed``
    counts the taps on 0 or ``P/2``; ``both`` is ``h(v)``, the taps whose partner ``v - r``
    (mod q) is also a tap, where ``v`` solves ``v * d = -2 * first (mod P)``. Summed over the
    outputs, each is a count of outputs on one residue class, in closed form (`_congruent`):
    O(K) of them for ``K = min(k, q)`` taps, whatever the number of outputs.
    """
    period = 2 * (axis.size - 1)
    stride, dilation, lo = axis.stride, axis.dilation, axis.lo
    q = period // math.gcd(dilation, period)
    count = min(axis.kernel, q)
    if 2 * count > _MAX_RUNS:
        return None
    fixed = 0
    for r in range(count):  # the output o reads entry 0 (or m - 1) through tap r: o*s = lo - r*d
        for target in (0, period // 2):
            fixed += _congruent(begin, end, stride, (target + lo - r * dilation) % period, period)
    both = 0
    for v in range(min(q, 2 * count - 1)):  # 2*first = 2*(o*s - lo) = -v*d (mod P)
        low = (v - count + 1) % q
        pairs = max(0, count - low) + max(0, low + count - q)
        if pairs:
            target = (2 * lo - v * dilation) % period
            both += pairs * _congruent(begin, end, 2 * stride, target, period)
    return (2 * count * (end - begin) - both + fixed) // 2


def _reflect_window(first: int, axis: Axis) -> int:
    """Distinct entries read by the window ``[first, first + k)`` (dilation 1) reflected at the ends.

    Reflection is a zigzag through the turning points ``j * (m - 1)``, monotone between them: a
    window holding a whole segment between two turning points reads all `m` entries, one holding
    a single turning point ``T`` reads ``max(T - first, last - T) + 1``, and one holding none
    reads `k` distinct entries.
    """
    turn, last = axis.size - 1, first + axis.kernel - 1
    low, high = -(-first // turn), last // turn  # the first and last turning points inside
    if high > low:
        return axis.size
    if high == low:
        point = low * turn
        return max(point - first, last - point) + 1
    return axis.kernel


_MAX_RUNS = 2**12  # runs summed in closed form before counting per output instead


def _reflect_run_sum(begin: int, end: int, axis: Axis) -> int | None:
    """Sum of `_reflect_window` over the outputs ``[begin, end)`` (dilation 1), or None if too long.

    As a function of the window's start ``a = o * s - lo`` the count is affine between breakpoints
    near each turning point ``T`` (``a = T + 1``: ``T`` leaves the window, ``a = T - k + 1``: it
    enters, ``a = T - (k - 1) / 2``: the longer side changes), so it is summed one run at a time as
    an arithmetic series: no cost proportional to the kernel or the number of outputs.
    """
    if end <= begin:
        return 0
    size, kernel, stride, lo = axis.size, axis.kernel, axis.stride, axis.lo
    turn = size - 1
    if kernel - 1 >= 2 * turn:  # every window holds a whole segment
        return (end - begin) * size
    first, last = begin * stride - lo, (end - 1) * stride - lo  # the windows' starts
    low, high = (first - kernel) // turn - 1, (last + kernel) // turn + 2  # turning points near
    if 4 * (high - low) > _MAX_RUNS:
        return None
    half = (kernel - 1) // 2
    breaks: set[int] = set()
    for j in range(low, high):
        point = j * turn
        breaks.update((point + 1, point - kernel + 1, point - half, point - half + 1))
    total, output = 0, begin
    for cut in [*sorted(b for b in breaks if first < b <= last), last + 1]:
        stop = min(end, -(-(cut + lo) // stride))  # the outputs whose window starts before `cut`
        count = stop - output
        if count > 0:
            value = _reflect_window(output * stride - lo, axis)
            slope = _reflect_window((output + 1) * stride - lo, axis) - value if count > 1 else 0
            total += count * value + slope * (count * (count - 1) // 2)
            output = stop
    return total


def _reflect_chunk_sum(begin: int, end: int, axis: Axis) -> int:
    """Sum of `_reflect_sources` over the outputs ``[begin, end)``, a chunk at a time."""
    period = 2 * (axis.size - 1)
    total = 0
    step, shift = axis.stride % period, axis.lo % period
    exact = end * period < 2**62  # else Python ints, which cannot overflow
    for start in range(begin, end, _BORDER_CHUNK):
        outputs = np.arange(start, min(end, start + _BORDER_CHUNK), dtype=np.int64 if exact else object)
        offsets = ((outputs * step - shift) % period).astype(np.int64)
        total += int(_reflect_sources(offsets, axis).sum())
    return total


_BORDER_CHUNK = 2**18  # outputs counted per vectorized step


def _congruent(begin: int, end: int, step: int, target: int, modulus: int) -> int:
    """``#{o in [begin, end) : o * step = target (mod modulus)}`` in closed form."""
    if end <= begin:
        return 0
    g = math.gcd(step, modulus)
    if target % g:
        return 0
    period = modulus // g
    solution = (target // g) * pow((step // g) % period, -1, period) % period if period > 1 else 0
    return (end - 1 - solution) // period - (begin - 1 - solution) // period


def _replicate_nonzeros(axis: Axis) -> int:
    """Replicate padding (``m >= 2``): the entries each output reads, summed, in closed form.

    Taps inside are distinct; all taps below the input read entry 0 and all above entry m - 1,
    one more entry each unless a tap lands on it exactly.
    """
    size, stride, dilation, lo, output = axis.size, axis.stride, axis.dilation, axis.lo, axis.output
    reach = (axis.kernel - 1) * dilation
    # Outputs with a tap below (o*s < lo), minus those with a tap exactly on 0 (o*s = lo - r*d).
    below = min(output, -(-lo // stride))
    on_first = _congruent(max(0, -(-(lo - reach) // stride)), below, stride, lo % dilation, dilation)
    # Outputs with a tap above (o*s + reach - lo >= m), minus those with a tap exactly on m - 1.
    above = min(output, max(0, -(-(size + lo - reach) // stride)))
    last_reaching = min(output, (size - 1 + lo) // stride + 1)
    on_last = _congruent(above, last_reaching, stride, (size - 1 + lo) % dilation, dilation)
    return _pairs_inside(axis) + (below - on_first) + (output - above - on_last)


def _reflect_sources(first: np.ndarray, axis: Axis) -> np.ndarray:
    """Distinct entries read by taps ``first + r*d`` reflected at the ends (``m >= 2``).

    Reflection reads ``min(t mod P, -t mod P)`` with ``P = 2(m - 1)``: the entries read are the
    orbits of ``x -> -x`` on ``Z_P`` that the residues ``R = {first + r*d mod P}`` meet, so their
    number is ``(2|R| - |R & -R| + fixed) / 2``, where ``fixed`` counts 0 and ``P/2`` in ``R``.
    With ``g = gcd(d, P)`` and ``q = P/g``, ``R`` has ``K = min(k, q)`` residues, and ``x`` is in
    ``R`` when ``r = (x - first)/g * inv(d/g) mod q`` is below ``K``.
    """
    period = 2 * (axis.size - 1)
    g = math.gcd(axis.dilation, period)
    q = period // g
    count = min(axis.kernel, q)
    inverse = pow((axis.dilation // g) % q, -1, q) if q > 1 else 0
    start = first % period

    def tap_of(target: Any) -> Any:
        """The tap reaching residue `target`, or q where none does."""
        difference = (target - start) % period
        return np.where(difference % g == 0, (difference // g) * inverse % q, q)

    fixed = (tap_of(0) < count).astype(np.int64) + (tap_of(period // 2) < count)
    # |R & -R|: taps r with some tap r' and (r + r') d = -2 first (mod P), i.e. r + r' = c (mod q);
    # for r in [0, K) the partners c - r (mod q) form a cyclic interval, counted against [0, K).
    twice = (-2 * start) % period
    c = np.where(twice % g == 0, (twice // g) * inverse % q, -1)
    low = (c - count + 1) % q
    overlap = np.maximum(0, np.minimum(low + count, count) - low) + np.maximum(
        0, np.minimum(low + count, q + count) - np.maximum(low, q)
    )
    both = np.where(c >= 0, overlap, 0)
    return (2 * count - both + fixed) // 2


def flat_grid(padded: tuple[int, ...], axes: tuple[Axis, ...]) -> tuple[list[int], int]:
    """Pixel steps of a padded grid flattened in C order, and how far past a pixel its window reaches."""
    steps = [math.prod(padded[i + 1 :]) for i in range(len(padded))]
    return steps, sum((axis.extent - 1) * step for axis, step in zip(axes, steps))


def position_dtype(axis: Axis) -> type:
    """int64, or Python ints (object) where an input position ``o * s + r * d - lo`` could overflow it.

    For index arithmetic over the outputs and taps of `axis` with NumPy: huge strides, dilations
    or padding amounts are valid arguments.
    """
    largest = max(axis.output * axis.stride, axis.kernel * axis.dilation, axis.lo)
    return np.int64 if largest < 2**62 else object


def input_positions(axis: Axis, outputs: range | None = None, taps: range | None = None) -> np.ndarray:
    """The input position ``o * s + r * d - lo`` that tap ``r`` of output ``o`` reads, as ``(o, r)``.

    Over every output and tap of `axis` by default, or over the given ranges of them; positions
    in the padding are outside ``[0, size)``. In int64, or Python ints where it could overflow
    (`position_dtype`).
    """
    wide = position_dtype(axis)
    outputs = range(axis.output) if outputs is None else outputs
    taps = range(axis.kernel) if taps is None else taps
    starts: np.ndarray = np.arange(outputs.start, outputs.stop, dtype=wide) * axis.stride - axis.lo
    return starts[:, None] + np.arange(taps.start, taps.stop, dtype=wide)[None, :] * axis.dilation


def outputs_inside(axis: Axis, shift: int) -> tuple[int, int]:
    """Half-open range ``[first, stop)`` of outputs ``o`` with ``0 <= o * stride + shift < size``."""
    first = max(0, -(shift // axis.stride))  # ceil(-shift / stride)
    stop = min(axis.output, (axis.size - 1 - shift) // axis.stride + 1)
    return first, max(first, stop)


def positions_in_range(axis: Axis, tap: int) -> tuple[int, int]:
    """Half-open range ``[first, stop)`` of output positions whose `tap` reads a real input entry.

    Output ``o`` reads input position ``o * stride + tap * dilation - lo``; positions outside
    ``[0, size)`` are padding.
    """
    return outputs_inside(axis, tap * axis.dilation - axis.lo)


def _floor_sum(count: int, divisor: int, slope: int, offset: int) -> int:
    """``sum((slope * i + offset) // divisor for i in range(count))`` in O(log) steps.

    For non-negative `slope` and `offset` and a positive `divisor` (the classic Euclid-like
    reduction: take out the whole multiples, then swap the roles of the axes).
    """
    total = 0
    while count > 0:
        if slope >= divisor:
            total += (count - 1) * count // 2 * (slope // divisor)
            slope %= divisor
        if offset >= divisor:
            total += count * (offset // divisor)
            offset %= divisor
        last = slope * count + offset
        if last < divisor:
            break
        count, offset = last // divisor, last % divisor
        divisor, slope = slope, divisor
    return total


def _outputs_reaching(axis: Axis, top: int) -> int:
    """``sum(#{o < output : o * stride <= top - r * dilation} for r in range(kernel))``."""
    output, stride, dilation = axis.output, axis.stride, axis.dilation
    # Taps r <= full reach every output, taps r >= empty reach none; in between, tap r reaches
    # (top - r * dilation) // stride + 1 outputs, summed below with r counted down from the top.
    full = min(axis.kernel, max(0, (top - (output - 1) * stride) // dilation + 1))
    empty = min(axis.kernel, max(full, top // dilation + 1)) if top >= 0 else full
    between = empty - full
    if between <= 0:
        return full * output
    base = top - (empty - 1) * dilation  # >= 0: the value at the last partial tap
    return full * output + between + _floor_sum(between, stride, dilation, base)


def _pairs_inside(axis: Axis) -> int:
    """Pairs (output, tap) of one zero-padded axis whose input ``o*s + r*d - lo`` is in ``[0, m)``."""
    return _outputs_reaching(axis, axis.size - 1 + axis.lo) - _outputs_reaching(axis, axis.lo - 1)


def distinct_residues(axis: Axis) -> int:
    """Distinct input positions ``(r * d - lo) mod m`` of a circular axis's taps.

    ``r * d mod m`` runs through the multiples of ``g = gcd(d, m)`` with period ``m / g``, all
    distinct within a period.
    """
    return min(axis.kernel, axis.size // math.gcd(axis.dilation, axis.size))


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _parse_padding(padding: Any, ndim: int) -> str | tuple[tuple[int, int], ...]:
    """The padding name (lower case), or one ``(lo, hi)`` pair of ints per spatial axis."""
    if isinstance(padding, str):
        name = padding.lower()
        if name not in PADDING_NAMES:
            raise ValueError(
                f"`padding` must be one of {', '.join(map(repr, PADDING_NAMES))} (any case), an int, "
                f"{ndim} ints or {ndim} (lo, hi) pairs; got {padding!r}"
            )
        return name
    if isinstance(padding, bytes) or padding is None:
        raise ValueError(f"`padding` must be a string, an int or a sequence, got {brief(padding)}")
    if not isinstance(padding, (tuple, list)) and np.ndim(padding) == 0:
        value = as_int(padding, "padding")
        pairs: tuple[tuple[int, int], ...] = ((value, value),) * ndim
    else:
        items = list(padding)
        if len(items) != ndim:
            raise ValueError(
                f"`padding` must give one entry per spatial axis ({ndim}), got {len(items)}: {brief(padding)}"
            )
        pairs_list = []
        for item in items:
            if isinstance(item, (str, bytes)):
                raise ValueError(f"`padding` entries must be ints or (lo, hi) pairs, got {item!r}")
            if not isinstance(item, (tuple, list)) and np.ndim(item) == 0:
                value = as_int(item, "padding")
                pairs_list.append((value, value))
            else:
                pair = tuple([as_int(v, "padding") for v in item])
                if len(pair) != 2:
                    raise ValueError(f"`padding` pairs must have two entries (lo, hi), got {brief(item)}")
                pairs_list.append((pair[0], pair[1]))
        pairs = tuple(pairs_list)
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"`padding` must be non-negative, got {brief(padding)}")
    return pairs


def _same_pads(size: int, extent: int, stride: int) -> tuple[int, int]:
    output = _ceil_div(size, stride)
    total = max((output - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _pads(
    parsed: str | tuple[tuple[int, int], ...], i: int, size: int, extent: int, stride: int
) -> tuple[int, int]:
    if parsed == "valid":
        return 0, 0
    if parsed in ("same", "circular"):
        return _same_pads(size, extent, stride)
    if parsed == "full":
        return extent - 1, extent - 1
    return parsed[i]  # type: ignore[return-value]


def _split_kernel_shape(kernel_shape: tuple[int, ...], layout: str) -> tuple[tuple[int, ...], int, int]:
    """(spatial kernel sizes, channels per group, filters) of a kernel shape in `layout`."""
    if layout == "channels_last":
        return kernel_shape[:-2], kernel_shape[-2], kernel_shape[-1]
    return kernel_shape[2:], kernel_shape[1], kernel_shape[0]


def _layout_hint(kernel_shape: tuple[int, ...], sizes: tuple[int, ...], layout: str, groups: int) -> str:
    """A sentence saying whether the other `layout` would read the kernel and input consistently."""
    other = "channels_first" if layout == "channels_last" else "channels_last"
    spatial, group_channels, filters = _split_kernel_shape(kernel_shape, other)
    given = sizes[-1] if other == "channels_last" else sizes[0]
    if given == group_channels * groups and filters % groups == 0:
        taps = "x".join(map(str, spatial))
        return (
            f"; with layout={other!r} the kernel reads as {filters} filters of {group_channels * groups} "
            f"channels with {taps} taps, which fits `input_shape` {sizes}: pass layout={other!r}"
        )
    return f" (layout={layout!r}; layout={other!r} would not fit either)"


def _sizes(input_shape: Any) -> tuple[int, ...]:
    """`input_shape` as a tuple of Python ints (an int is one size)."""
    if isinstance(input_shape, (str, bytes)):
        raise ValueError(f"`input_shape` must be a sequence of integers, got the string {input_shape!r}")
    if isinstance(input_shape, np.ndarray) and (input_shape.ndim != 1 or input_shape.dtype.kind not in "iu"):
        raise ValueError(
            f"`input_shape` must be a shape such as (32, 32, 3), got {brief(input_shape)}; "
            "to use an array's shape, pass x.shape"
        )
    if not isinstance(input_shape, (tuple, list)) and np.ndim(input_shape) == 0:
        input_shape = (input_shape,)
    return tuple([as_int(v, "input_shape") for v in input_shape])


def _spatial_input(
    kernel_shape: tuple[int, ...], input_shape: Any, layout: str, ndim: int, channels: int, groups: int
) -> tuple[int, ...]:
    """The spatial sizes of `input_shape`, checked against the kernel's channels."""
    if type(input_shape) is tuple and all([type(v) is int for v in input_shape]):
        sizes = input_shape  # the common case: a shape such as ``x.shape``
    else:
        sizes = _sizes(input_shape)
    if len(sizes) == ndim + 1:
        given_channels = sizes[-1] if layout == "channels_last" else sizes[0]
        if given_channels != channels:
            where = "last" if layout == "channels_last" else "first"
            detail = f" = {channels // groups} x groups={groups}" if groups > 1 else ""
            raise ValueError(
                f"`input_shape` {sizes} has {given_channels} channels on its {where} axis, but the "
                f"kernel of shape {kernel_shape} expects C = {channels}{detail}"
                + _layout_hint(kernel_shape, sizes, layout, groups)
            )
        spatial = sizes[:-1] if layout == "channels_last" else sizes[1:]
    elif len(sizes) == ndim:
        spatial = sizes
    else:
        raise ValueError(
            f"`input_shape` must have {ndim + 1} entries (with the channel axis) or {ndim} "
            f"(spatial sizes only) for a kernel with {ndim} spatial axes, got {sizes}"
        )
    return spatial  # (each size is checked to be >= 1 with its axis, in `check_geometry`)


# The checked geometry arguments, in plain values: ``(axes, channels, filters, groups, mode, layout,
# padding)`` with one ``(size, kernel, stride, dilation, lo, hi)`` tuple per spatial axis. A view is
# planned from it without building the `Geometry` object (see `_conv`).
CheckedGeometry = tuple[
    tuple[tuple[int, int, int, int, int, int], ...], int, int, int, PaddingMode, LayoutName, Any
]


def make_geometry(
    kernel_shape: tuple[int, ...],
    input_shape: Any,
    *,
    padding: Any = "valid",
    padding_mode: Any = "zeros",
    stride: Any = 1,
    dilation: Any = 1,
    groups: Any = 1,
    layout: Any = "channels_last",
) -> Geometry:
    """Check every geometry argument against the kernel shape and return a `Geometry`.

    Raises `ValueError` naming the offending argument and what would be accepted.
    """
    arguments = (padding, padding_mode, stride, dilation, groups, layout)
    return geometry_of(check_geometry(kernel_shape, input_shape, *arguments))


def geometry_of(checked: CheckedGeometry) -> Geometry:
    """The `Geometry` of arguments checked by `check_geometry`."""
    axes, channels, filters, groups, mode, layout, padding = checked
    return Geometry(tuple([Axis(*axis) for axis in axes]), channels, filters, groups, mode, layout, padding)


def check_geometry(
    kernel_shape: tuple[int, ...],
    input_shape: Any,
    padding: Any,
    padding_mode: Any,
    stride: Any,
    dilation: Any,
    groups: Any,
    layout: Any,
) -> CheckedGeometry:
    """`make_geometry`'s checks: the arguments as plain values (`CheckedGeometry`), or ValueError."""
    if type(layout) is not str or layout not in LAYOUTS:  # else the common case, as it is
        if not isinstance(layout, str) or layout.lower() not in LAYOUTS:
            raise ValueError(f"`layout` must be 'channels_last' or 'channels_first', got {brief(layout)}")
        layout = layout.lower()
    ndim = len(kernel_shape) - 2
    if ndim < 1 or ndim > MAX_SPATIAL_AXES or 0 in kernel_shape:
        _refuse_kernel_shape(kernel_shape)
    spatial_kernel, group_channels, filters = _split_kernel_shape(kernel_shape, layout)

    if type(groups) is not int:
        groups = as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"`groups` must be >= 1, got {groups}")
    channels = group_channels * groups
    if filters % groups:
        raise ValueError(
            f"`groups`={groups} must divide the number of filters F={filters} (kernel shape "
            f"{kernel_shape}, layout={layout!r})"
        )
    spatial_input = _spatial_input(kernel_shape, input_shape, layout, ndim, channels, groups)

    # Plain arguments (one int for every axis, a padding name, a padding mode's name) take the
    # short way; anything else goes through the normalizer of its kind.
    if type(stride) is int and stride >= 1:
        strides = (stride,) * ndim
    else:
        strides = _positive_ints(stride, "stride", ndim)
    if type(dilation) is int and dilation >= 1:
        dilations = (dilation,) * ndim
    else:
        dilations = _positive_ints(dilation, "dilation", ndim)
    parsed = padding if type(padding) is str and padding in PADDING_NAMES else _parse_padding(padding, ndim)
    mode = PADDING_MODES.get(padding_mode) if type(padding_mode) is str and parsed != "circular" else None
    if mode is None:
        mode = _padding_mode_for(parsed, padding_mode)

    axes = []
    for i, (m, k, s, d) in enumerate(zip(spatial_input, spatial_kernel, strides, dilations)):
        extent = (k - 1) * d + 1
        lo, hi = (0, 0) if parsed == "valid" else _pads(parsed, i, m, extent, s)
        if m < 1 or extent > m + lo + hi:
            _refuse_axis(input_shape, i, (m, k, d, lo, hi))
        axes.append((m, k, s, d, lo, hi))

    padding = parsed if type(parsed) is str else padding
    return tuple(axes), channels, filters, groups, mode, layout, padding


def _refuse_axis(input_shape: Any, i: int, axis: tuple[int, int, int, int, int]) -> None:
    """Raise ValueError for spatial axis `i` (size, kernel, dilation, lo, hi): empty, or no output."""
    m, k, d, lo, hi = axis
    if m < 1:
        raise ValueError(f"`input_shape` sizes must be >= 1, got {_sizes(input_shape)}")
    extent = (k - 1) * d + 1
    raise ValueError(
        f"the kernel (effective size {extent} = ({k} - 1) * dilation {d} + 1) is larger than "
        f"the padded input ({m} + {lo} + {hi}) along spatial axis {i}: the output would be "
        f"empty; use a smaller `dilation`, more `padding`, or a larger `input_shape`"
    )


def _refuse_kernel_shape(kernel_shape: tuple[int, ...]) -> None:
    """Raise ValueError for a kernel shape without spatial axes, with too many, or empty."""
    if len(kernel_shape) < 3:
        raise ValueError(
            f"`kernel` must have at least 3 axes (N >= 1 spatial axes, input channels, filters), "
            f"got shape {kernel_shape}"
        )
    if 0 in kernel_shape:
        raise ValueError(f"`kernel` must not be empty, got shape {kernel_shape}")
    raise ValueError(
        f"`kernel` has {len(kernel_shape) - 2} spatial axes (shape {kernel_shape}); at most "
        f"{MAX_SPATIAL_AXES} are supported: the operator has 2N + 2 axes and NumPy arrays at most "
        f"{2 * MAX_SPATIAL_AXES + 2}. Merge spatial axes of size 1 into their neighbours"
    )


def _padding_mode_for(parsed: str | tuple[tuple[int, int], ...], value: Any) -> PaddingMode:
    """The padding mode, with ``padding='circular'`` as shorthand for the circular mode."""
    mode = padding_mode(value)
    if parsed == "circular":
        if mode.name not in ("zeros", "circular"):
            raise ValueError(
                f"`padding`='circular' is shorthand for padding='same', padding_mode='circular', "
                f"which contradicts `padding_mode`={value!r}; pass padding='same' with it"
            )
        return padding_mode("circular")
    return mode
