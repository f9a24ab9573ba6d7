"""Padding modes: one table of rules that every part of stridedop consults.

A padding mode says what the padded input holds outside ``[0, m)`` along each spatial axis. Each
mode is one `PaddingMode` row: its name (PyTorch's), the `numpy.pad` mode that pads an input,
which input entry each padded position reads (`source`), whether several padded positions can
read one input entry (`folds`), and whether the operator is shift-invariant, so that it has a
strided view. Applying, the adjoint, the sparse and dense forms and the norms all ask the row;
none of them tests a mode by name.

=============  ===============  ============================  =====  ====
mode           ``np.pad`` mode  padded position p reads       folds  view
=============  ===============  ============================  =====  ====
``zeros``      ``constant``     ``p - lo`` if in range, else   no     yes
                                nothing (a zero)
``circular``   ``wrap``         ``(p - lo) mod m``             yes    yes
``reflect``    ``reflect``      ``p - lo`` mirrored at the     yes    no
                                ends, the end entry once
``replicate``  ``edge``         ``p - lo`` clipped to          yes    no
                                ``[0, m - 1]``
=============  ===============  ============================  =====  ====
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "PADDING_MODES",
    "PaddingMode",
    "PaddingModeName",
    "affine_runs",
    "pad",
    "pad_adjoint",
    "padding_mode",
]

PaddingModeName = Literal["zeros", "circular", "reflect", "replicate"]


def _zeros_source(offsets: np.ndarray, size: int) -> np.ndarray:
    return np.where((offsets >= 0) & (offsets < size), offsets, -1)


def _circular_source(offsets: np.ndarray, size: int) -> np.ndarray:
    return np.mod(offsets, size)


def _reflect_source(offsets: np.ndarray, size: int) -> np.ndarray:
    if size == 1:
        return np.zeros_like(offsets)
    period = 2 * (size - 1)  # reflecting at both ends repeats with this period
    phase = np.mod(offsets, period)
    return np.where(phase < size, phase, period - phase)


def _replicate_source(offsets: np.ndarray, size: int) -> np.ndarray:
    return np.clip(offsets, 0, size - 1)


@dataclass(frozen=True)
class PaddingMode:
    """The rules of one padding mode.

    Attributes
    ----------
    name : str
        PyTorch's name of the mode.
    numpy_mode : str
        The `numpy.pad` mode that pads an input this way.
    folds : bool
        Whether several padded positions can read the same input entry (their taps add up).
    has_view : bool
        Whether the operator is shift-invariant, so that one strided view represents it.
    """

    name: str
    numpy_mode: str
    folds: bool
    has_view: bool
    _source: Callable[[np.ndarray, int], np.ndarray]

    def source(self, offsets: Any, size: int) -> np.ndarray:
        """The input index read at each offset ``p - lo`` from the input's start, -1 for a zero."""
        return self._source(np.asarray(offsets), size)

    def __repr__(self) -> str:
        return f"PaddingMode({self.name!r})"


PADDING_MODES: dict[str, PaddingMode] = {
    mode.name: mode
    for mode in (
        PaddingMode("zeros", "constant", folds=False, has_view=True, _source=_zeros_source),
        PaddingMode("circular", "wrap", folds=True, has_view=True, _source=_circular_source),
        PaddingMode("reflect", "reflect", folds=True, has_view=False, _source=_reflect_source),
        PaddingMode("replicate", "edge", folds=True, has_view=False, _source=_replicate_source),
    )
}


def padding_mode(value: Any) -> PaddingMode:
    """The `PaddingMode` named by `value` (case-insensitive), or ValueError listing the choices."""
    if isinstance(value, PaddingMode):
        return value
    mode = PADDING_MODES.get(value.lower()) if isinstance(value, str) else None
    if mode is None:
        choices = ", ".join(map(repr, PADDING_MODES))
        raise ValueError(f"`padding_mode` must be one of {choices}, got {value!r}")
    return mode


def pad(x: np.ndarray, pads: list[tuple[int, int]], mode: PaddingMode) -> np.ndarray:
    """Pad the axes of `x` by `pads` (one ``(lo, hi)`` per axis) the way `mode` says."""
    if not any(lo or hi for lo, hi in pads):
        return np.ascontiguousarray(x)
    return np.pad(x, pads, mode=mode.numpy_mode)  # type: ignore[call-overload]


def pad_adjoint(xp: np.ndarray, pads: list[tuple[int, int]], mode: PaddingMode) -> np.ndarray:
    """The adjoint of `pad`: every padded entry is added back onto the input entry it reads.

    Zero padding crops. The other modes fold: circular sums the periods of each axis, reflect and
    replicate add each padded entry (there are only ``lo + hi`` of them per axis) onto its source.
    """
    for axis, (lo, hi) in enumerate(pads):
        if not (lo or hi):
            continue
        size = xp.shape[axis] - lo - hi
        inner = (slice(None),) * axis + (slice(lo, lo + size),)
        if mode.name == "zeros":
            xp = xp[inner]
        elif mode.name == "circular":
            xp = _fold_periods(xp, axis, lo, size)
        else:
            offsets = np.concatenate((np.arange(-lo, 0), np.arange(size, size + hi)))
            flank = np.concatenate((np.arange(lo), np.arange(lo + size, lo + size + hi)))
            folded = np.array(xp[inner], copy=True, order="C")
            # On 3-D reshapes (before, axis, after): `np.add.at` crashes on more than 32 axes.
            before, after = math.prod(folded.shape[:axis]), math.prod(folded.shape[axis + 1 :])
            np.add.at(
                folded.reshape(before, size, after),
                (slice(None), mode.source(offsets, size)),  # type: ignore[arg-type]
                xp.take(flank, axis=axis).reshape(before, len(flank), after),
            )
            xp = folded
    return xp


def _fold_periods(xp: np.ndarray, axis: int, lo: int, size: int) -> np.ndarray:
    """Sum the whole periods of a wrap-padded axis: padded entry p holds input (p - lo) mod m."""
    padded = xp.shape[axis]
    blocks = -(-padded // size)
    widths = [(0, 0)] * xp.ndim
    widths[axis] = (0, blocks * size - padded)
    grid = np.pad(xp, widths).reshape(*xp.shape[:axis], blocks, size, *xp.shape[axis + 1 :])
    return np.roll(grid.sum(axis=axis, dtype=xp.dtype), -lo, axis=axis)


def affine_runs(values: np.ndarray, valid: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Cut a sequence of indices into runs on which it is affine: ``values[i] = first + slope * i``.

    Returns ``(start, count, first, slope)`` for each maximal piece of `valid` positions on which
    consecutive differences stay equal (a run of one has slope 0). A padding mode's `source`
    over a range of positions is affine between its wrap-arounds, reflections and clips, so a
    handful of runs, each one strided slice, covers it.
    """
    size = len(values)
    if size == 0:
        return []
    values = np.asarray(values, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    steps = np.diff(values)
    starts = np.zeros(size, dtype=bool)
    starts[0] = True
    starts[1:] |= valid[1:] != valid[:-1]
    # Break between i and i + 1 where the step into i + 1 differs from the step into i (from a
    # valid i - 1: a run's first step sets its slope).
    starts[2:] |= (steps[1:] != steps[:-1]) & valid[:-2]
    bounds = [*np.flatnonzero(starts).tolist(), size]
    runs = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if valid[start]:
            count = stop - start
            slope = int(steps[start]) if count > 1 else 0
            runs.append((start, count, int(values[start]), slope))
    return runs
