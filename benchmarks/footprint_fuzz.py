"""Worst reachable-bytes / bound ratio of the view over random geometries.

Run with ``python benchmarks/footprint_fuzz.py [cases]``. Draws N = 1..3, both layouts, groups, every
padding kind, stride and dilation; checks that every view stays inside its buffer and within the
bound ``itemsize * C * (F + 1) * prod(m + lo + hi)`` (``prod(2 * m)`` for circular), and prints the
worst ratio of reachable bytes to that bound.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numpy.lib.array_utils import byte_bounds

import stridedop


def main(cases: int = 3000) -> None:
    rng = np.random.default_rng(2026)
    worst, checked, rejected = 0.0, 0, 0
    for _ in range(cases):
        n = int(rng.integers(1, 4))
        k = rng.integers(1, 5, n)
        groups = int(rng.integers(1, 4))
        kernel = np.ones((*k, int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))))
        m = tuple(int(v) for v in rng.integers(1, 13, n))
        kind = rng.choice(["valid", "same", "full", "circular", "pairs"])
        padding = (
            [tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(n)] if kind == "pairs" else str(kind)
        )
        layout = str(rng.choice(["channels_last", "channels_first"]))
        if layout == "channels_first":
            kernel = kernel.transpose(n + 1, n, *range(n))
        stride = tuple(int(v) for v in rng.integers(1, 4, n))
        dilation = tuple(int(v) for v in rng.integers(1, 3, n))
        try:
            op = stridedop.ConvOperator(
                kernel, m, padding=padding, stride=stride, dilation=dilation, groups=groups, layout=layout
            )
        except ValueError:
            rejected += 1  # an impossible geometry (output size < 1)
            continue
        geometry = op._geometry
        view = op.view
        low, high = byte_bounds(view)
        base = view
        while isinstance(base.base, np.ndarray):
            base = base.base
        buffer_low, buffer_high = byte_bounds(base)
        assert buffer_low <= low and high <= buffer_high, "a view reaches outside its buffer"
        sizes = [2 * a.size if geometry.circular else a.size + a.lo + a.hi for a in geometry.axes]
        bound = view.itemsize * geometry.channels * (geometry.filters + 1) * math.prod(sizes)
        assert high - low <= bound and base.nbytes <= bound, "footprint bound exceeded"
        worst = max(worst, (high - low) / bound)
        checked += 1
    print(
        f"{checked} geometries checked ({rejected} impossible ones refused): all views inside their buffer;"
    )
    print(f"worst reachable bytes / bound = {worst:.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
