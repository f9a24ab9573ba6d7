"""OperatorView figures, measured in one run (issue 9): contractions on the view against ``op @ x``
and against NumPy's own ``tensordot`` on the same values as a plain strided view, the memory they
trace, what the subclass adds to a view build, and structured matrix products.

Run with ``python benchmarks/view_figures.py`` (``--quick`` for fewer repeats). Everything runs
on one thread (OPENBLAS_NUM_THREADS=1 is set before NumPy is imported). Candidates are timed
interleaved, round by round; figures are ratios of best times from the same run. First calls
(building ``W.operator``, first touch of NumPy's dense copy) are timed separately and shown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit
import tracemalloc

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import best_times  # noqa: E402

import stridedop  # noqa: E402
from stridedop._buffer import _view  # noqa: E402
from stridedop._conv import StridedOperator  # noqa: E402
from stridedop._view import OperatorView  # noqa: E402


def first_call(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def tensordot_table(repeat: int) -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    x = rng.standard_normal((32, 32, 16)).astype(np.float32)
    W = stridedop.conv_view(kernel, x.shape)
    plain = np.asarray(W)  # the same values as a plain strided view: what NumPy sees without stridedop
    first = first_call(lambda: np.tensordot(W, x, 3))  # includes building W.operator
    op = W.operator
    y = op @ x
    numpy_rounds = max(1, repeat // 3)
    print("## np.tensordot(W, x, 3): 3x3x16x16 kernel on a 32x32x16 input, float32, one thread\n")
    print(f"dense operator {W.nbytes / 2**30:.2f} GiB, buffer {op.buffer_nbytes / 2**20:.2f} MiB; ")
    print(f"first np.tensordot(W, x, 3) (builds W.operator): {1e3 * first:.2f} ms\n")
    fast = best_times(
        {
            "op @ x": lambda: op @ x,
            "np.tensordot(W, x, 3)": lambda: np.tensordot(W, x, 3),
            "np.einsum('abcdef,def->abc', W, x)": lambda: np.einsum("abcdef,def->abc", W, x),
            "np.tensordot(y, W, 3) (transpose)": lambda: np.tensordot(y, W, 3),
            "op.T @ y": lambda: op.T @ y,
        },
        repeat,
    )
    # NumPy's tensordot on the plain view copies the 0.9 GiB dense tensor: a few rounds, interleaved
    # with the view's own, each timed once.
    numpy_best = view_best = float("inf")
    for _ in range(numpy_rounds):
        numpy_best = min(numpy_best, first_call(lambda: np.tensordot(plain, x, 3)))
        view_best = min(view_best, first_call(lambda: np.tensordot(W, x, 3)))
    print("| candidate | best time | / op @ x |")
    print("|---|---|---|")
    for name, seconds in fast.items():
        print(f"| {name} | {1e3 * seconds:.3f} ms | {seconds / fast['op @ x']:.2f} |")
    print(
        f"| np.tensordot(plain strided view, x, 3) | {1e3 * numpy_best:.0f} ms | {numpy_best / fast['op @ x']:.0f} |"
    )
    print()
    print(
        f"tensordot on the view / op @ x: {fast['np.tensordot(W, x, 3)'] / fast['op @ x']:.2f} (goal: <= 2)"
    )
    print(
        f"NumPy's tensordot on the plain view / tensordot on the view: "
        f"{numpy_best / fast['np.tensordot(W, x, 3)']:.0f}x (goal: >= 100x; single-shot pair: "
        f"{numpy_best / view_best:.0f}x)\n"
    )


def memory_table() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 16, 16))
    x = rng.standard_normal((64, 64, 16))
    W = stridedop.conv_view(kernel, x.shape)
    y = np.ones(W.operator.output_shape)
    print("## Peak traced memory: 3x3x16x16 on 64x64x16, float64\n")
    print(f"dense operator {W.nbytes / 2**30:.2f} GiB ({W.nbytes} bytes)\n")
    print("| contraction | peak traced | goal |")
    print("|---|---|---|")
    for name, function in [
        ("np.tensordot(W, x, 3)", lambda: np.tensordot(W, x, 3)),
        ("np.einsum('abcdef,def->abc', W, x)", lambda: np.einsum("abcdef,def->abc", W, x)),
        ("np.tensordot(y, W, 3)", lambda: np.tensordot(y, W, 3)),
    ]:
        tracemalloc.start()
        function()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"| {name} | {peak / 2**20:.1f} MiB | < 64 MiB |")
    print()


def build_subclass(*arguments):
    view = np.ndarray.__new__(OperatorView, *arguments)
    view._origin = None
    return view


def build_table(repeat: int) -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 16, 16))
    strided = StridedOperator.build(kernel, stridedop.ConvOperator(kernel, (32, 32, 16))._geometry)
    geometry, plan, buffer = strided
    shape, itemsize = geometry.view_shape, buffer.itemsize
    strides = tuple([step * itemsize if n > 1 else 0 for n, step in zip(shape, plan.view_steps)])
    candidates = {
        "plain ndarray view (0.1's build: _view)": lambda: _view(buffer, plan.origin, shape, plan.view_steps),
        "plain ndarray view (the same constructor call)": lambda: np.ndarray(
            shape, buffer.dtype, buffer, plan.origin * itemsize, strides
        ),
        "OperatorView (StridedOperator.view)": lambda: strided.view(),
        "OperatorView (the same constructor call)": lambda: build_subclass(
            shape, buffer.dtype, buffer, plan.origin * itemsize, strides
        ),
    }
    # Builds take about a microsecond: time 20000 of them per round, rounds interleaved, best round.
    times = dict.fromkeys(candidates, float("inf"))
    for _ in range(5 * repeat):
        for name, function in candidates.items():
            times[name] = min(times[name], timeit.timeit(function, number=20000) / 20000)
    times.update(
        best_times(
            {"conv_view (plan cached, buffer filled)": lambda: stridedop.conv_view(kernel, (32, 32, 16))},
            repeat,
        )
    )
    plain, subclass = (
        times["plain ndarray view (0.1's build: _view)"],
        times["OperatorView (StridedOperator.view)"],
    )
    same_plain = times["plain ndarray view (the same constructor call)"]
    same_subclass = times["OperatorView (the same constructor call)"]
    print("## View build: what the subclass adds (3x3x16x16 on 32x32x16)\n")
    print("| build | best time |")
    print("|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {1e6 * seconds:.2f} us |")
    print(
        f"\nOperatorView build - 0.1's plain build: {1e6 * (subclass - plain):+.2f} us per view (goal: <= ~1 us)"
    )
    print(
        f"the subclass alone (same constructor call): {1e6 * (same_subclass - same_plain):+.2f} us per view\n"
    )


def structured_table(repeat: int) -> None:
    rng = np.random.default_rng(0)
    n = 20000
    T = stridedop.toeplitz(rng.standard_normal(n), rng.standard_normal(n))
    plain = np.asarray(T)
    v = rng.standard_normal(n)
    first = first_call(lambda: T @ v)
    times = best_times({"T @ v": lambda: T @ v, "v @ T": lambda: v @ T}, repeat)
    numpy_best = min(first_call(lambda: plain @ v) for _ in range(max(1, repeat // 3)))
    print(f"## {n} x {n} Toeplitz view times a vector, float64\n")
    print(f"first T @ v (builds T.operator): {1e3 * first:.1f} ms\n")
    print("| candidate | best time | NumPy on the plain view / candidate |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {1e3 * seconds:.2f} ms | {numpy_best / seconds:.0f} |")
    print(f"| np.asarray(T) @ v (NumPy on the plain view) | {1e3 * numpy_best:.0f} ms | 1 |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    repeat = 3 if parser.parse_args().quick else 9
    print(f"NumPy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}\n")
    tensordot_table(repeat)
    memory_table()
    build_table(repeat)
    structured_table(repeat)


if __name__ == "__main__":
    main()
