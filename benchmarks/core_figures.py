"""The core figures, measured in one run: view build, footprint, and materialize speed.

Run with ``OPENBLAS_NUM_THREADS=1 python benchmarks/core_figures.py`` (add ``--quick`` for a short
run). Every figure is a ratio against a baseline measured in the same run, on the same machine.

Timing notes: NumPy allocates large zero arrays lazily (calloc; pages are mapped at their first
write, possibly as transparent huge pages), so a dense construction "returns" before its memory is
really allocated. The materialize table therefore gives two times per method: until the array is
returned, and until every page has also been written once (first touch).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from numpy.lib.array_utils import byte_bounds

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    advanced_index,
    best_times,
    interleaved_times,
    loop_fill,
    loop_fill_entries,
    touch_pages,
)

import stridedop  # noqa: E402
from stridedop._cli import _loop_operator  # noqa: E402
from stridedop._conv import _cached_plan  # noqa: E402


def once(function: Callable[[], np.ndarray], touch: bool) -> float:
    gc.collect()
    start = time.perf_counter()
    result = function()
    if touch:
        touch_pages(result)
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def seed_build_targets(quick: bool) -> None:
    """Issue 12 item 2 at the seed size: first use and repeated builds against the seed's loops."""
    print("## View build at the seed size (2x2x3x2 kernel on 5x5x3, float64), candidates interleaved\n")
    kernel = np.random.default_rng(0).standard_normal((2, 2, 3, 2))
    input_shape = (5, 5, 3)

    def first_use() -> np.ndarray:
        _cached_plan.cache_clear()  # the geometry and buffer plan computed again
        return stridedop.conv_view(kernel, input_shape)

    def first_use_same() -> np.ndarray:
        _cached_plan.cache_clear()  # a geometry the general planner lays out (not the closed form)
        return stridedop.conv_view(kernel, input_shape, padding="same")

    candidates = {
        "first use (cache cleared)": first_use,
        "first use, padding='same' (general planner, for reference)": first_use_same,
        "repeated (cached plan)": lambda: stridedop.conv_view(kernel, input_shape),
        "seed loop (benchmarks/common.py loop_fill)": lambda: loop_fill(kernel, input_shape),
        "seed loop (stridedop._cli._loop_operator)": lambda: _loop_operator(kernel, input_shape),
    }
    times = interleaved_times(candidates, 15 if quick else 60)
    loop_best = min(best for name, (best, _) in times.items() if name.startswith("seed loop"))
    print("| build | best | median | fastest seed loop / this (best) |")
    print("|---|---|---|---|")
    for name, (best, median) in times.items():
        print(f"| {name} | {best * 1e6:.2f} us | {median * 1e6:.2f} us | {loop_best / best:.2f}x |")
    first, repeated = times["first use (cache cleared)"][0], times["repeated (cached plan)"][0]
    print(
        f"\nTargets (issue 12): first use <= 16 us and >= 1.5x the loop: {first * 1e6:.1f} us, "
        f"{loop_best / first:.2f}x; repeated <= 8 us and >= 3x: {repeated * 1e6:.1f} us, "
        f"{loop_best / repeated:.2f}x\n"
    )


def build_table(quick: bool) -> None:
    print("## View build vs dense constructions (best time of one build, candidates interleaved)\n")
    print(
        "| kernel, input | view (warm) | view (cold) | Python loop | zeros + advanced index | loop / view | index / view |"
    )
    print("|---|---|---|---|---|---|---|")
    notes = []
    for kernel_shape, input_shape in (((2, 2, 3, 2), (5, 5, 3)), ((3, 3, 16, 16), (32, 32, 16))):
        kernel = np.random.default_rng(0).standard_normal(kernel_shape)
        big = math.prod(input_shape) > 1000
        repeat = 3 if big else (5 if quick else 20)

        def cold() -> np.ndarray:
            _cached_plan.cache_clear()  # recompute the geometry and layout every time
            return stridedop.conv_view(kernel, input_shape)

        def warm() -> np.ndarray:
            return stridedop.conv_view(kernel, input_shape)

        if big:
            times = best_times({"warm": warm, "cold": cold}, 7 if quick else 30)
            loop_time = min(once(lambda: loop_fill(kernel, input_shape), touch=False) for _ in range(repeat))
            index_time = min(
                once(lambda: advanced_index(kernel, input_shape), touch=False) for _ in range(repeat)
            )
        else:
            candidates = {
                "warm": warm,
                "cold": cold,
                "loop": lambda: loop_fill(kernel, input_shape),
                "index": lambda: advanced_index(kernel, input_shape),
                "entries": lambda: loop_fill_entries(kernel, input_shape),
            }
            times = best_times(candidates, 7 if quick else 30)
            loop_time, index_time = times["loop"], times["index"]
            notes.append(
                f"5x5 example: a loop placing each entry takes {times['entries'] * 1e6:.0f} us, "
                f"{times['entries'] / times['warm']:.0f}x the warm view build and "
                f"{times['entries'] / times['cold']:.0f}x the cold one."
            )
        warm_time, cold_time = times["warm"], times["cold"]
        print(
            f"| {'x'.join(map(str, kernel_shape))}, {'x'.join(map(str, input_shape))} "
            f"| {warm_time * 1e6:.1f} us | {cold_time * 1e6:.1f} us | {loop_time * 1e6:.1f} us "
            f"| {index_time * 1e6:.1f} us | {loop_time / warm_time:.1f}x (cold {loop_time / cold_time:.1f}x) "
            f"| {index_time / warm_time:.0f}x (cold {index_time / cold_time:.0f}x) |"
        )
    print()
    print("(warm: geometry and layout cached from an earlier call with the same arguments; cold: computed)")
    for note in notes:
        print(note)
    print()


def footprint_table() -> None:
    print("## Reachable bytes of the view\n")
    print(
        "| kernel, input, geometry | W.nbytes | reachable | bound C(F+1)prod(m+lo+hi) | reachable / dense | reachable / bound |"
    )
    print("|---|---|---|---|---|---|")
    cases = [
        ((2, 2, 3, 2), (5, 5, 3), {}),
        ((3, 3, 16, 16), (32, 32, 16), {}),
        ((3, 3, 16, 16), (32, 32, 16), {"padding": "same"}),
        ((3, 3, 16, 16), (32, 32, 16), {"padding": "full", "stride": 2}),
        ((3, 3, 16, 16), (32, 32, 16), {"padding": "circular"}),
        ((3, 3, 3, 8, 8), (16, 16, 16, 8), {"padding": "same", "dilation": 2}),
    ]
    for kernel_shape, input_shape, kwargs in cases:
        op = stridedop.ConvOperator(np.ones(kernel_shape), input_shape, **kwargs)
        low, high = byte_bounds(op.view)
        geometry = op._geometry
        if geometry.circular:
            sizes = [2 * axis.size for axis in geometry.axes]
        else:
            sizes = [axis.size + axis.lo + axis.hi for axis in geometry.axes]
        bound = 8 * geometry.channels * (geometry.filters + 1) * math.prod(sizes)
        label = f"{'x'.join(map(str, kernel_shape))}, {'x'.join(map(str, input_shape))}, {kwargs or 'valid'}"
        print(
            f"| {label} | {op.nbytes} | {high - low} | {bound} | {(high - low) / op.nbytes:.2e} "
            f"| {(high - low) / bound:.3f} |"
        )
    print()


def materialize_table(quick: bool) -> None:
    print("## materialize vs dense constructions, float32, 3x3x16x16 kernel (best of runs)\n")
    print(
        "| input | dense size | materialize | Python loop | zeros + advanced index | best baseline / materialize |"
    )
    print("|---|---|---|---|---|---|")
    sizes = (21, 28) if quick else (21, 28, 35)
    for m in sizes:
        kernel = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
        input_shape = (m, m, 16)
        W = stridedop.conv_view(kernel, input_shape)
        repeat = 2 if quick else 3
        cells = []
        results = {}
        for touch in (False, True):
            times = {
                "materialize": min(once(lambda: stridedop.materialize(W), touch) for _ in range(repeat)),
                "loop": min(once(lambda: loop_fill(kernel, input_shape), touch) for _ in range(repeat)),
                "index": min(once(lambda: advanced_index(kernel, input_shape), touch) for _ in range(repeat)),
            }
            results[touch] = times
        for name in ("materialize", "loop", "index"):
            cells.append(f"{results[False][name]:.3f} s / {results[True][name]:.3f} s")
        ratios = [
            min(results[touch]["loop"], results[touch]["index"]) / results[touch]["materialize"]
            for touch in (False, True)
        ]
        print(
            f"| {m}x{m}x16 | {W.nbytes / 1e9:.2f} GB | {cells[0]} | {cells[1]} | {cells[2]} "
            f"| {ratios[0]:.2f}x / {ratios[1]:.2f}x |"
        )
    print("\n(each cell: returned / returned + first touch of every page)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--build-only", action="store_true", help="only the view build at the seed size")
    args = parser.parse_args()
    print(
        f"numpy {np.__version__}, stridedop {stridedop.__version__}, {os.cpu_count()} cores, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}\n"
    )
    seed_build_targets(args.quick)
    if args.build_only:
        return
    build_table(args.quick)
    footprint_table()
    materialize_table(args.quick)


if __name__ == "__main__":
    main()
