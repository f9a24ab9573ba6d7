"""ConvOperator figures, measured in one run: apply and adjoint against PyTorch, against tensordot on
the materialized operator, and the sparse export against converting the dense operator.

Run with ``python benchmarks/operator_figures.py`` (``--quick`` for fewer repeats). Both sides of
every comparison run on one thread: NumPy's BLAS through threadpoolctl, PyTorch through
``torch.set_num_threads(1)``. Figures are ratios of best times measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import best_time, best_times  # noqa: E402
from planner_figures import sparse_table  # noqa: E402

import stridedop  # noqa: E402

APPLY_SHAPES = [
    # (batch, m, C, F, k)
    (1, 32, 16, 16, 3),
    (8, 32, 16, 16, 3),
    (4, 64, 32, 32, 3),
    (1, 128, 3, 16, 7),
]


def apply_table(repeat: int) -> None:
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: skipping the comparison with torch.nn.functional.conv2d\n")
        return
    torch.set_num_threads(1)
    print("## apply / adjoint vs torch.nn.functional.conv2d (one thread each, 'valid', timed interleaved)\n")
    print(
        "| batch, input -> F (kernel) | dtype | layout | torch conv2d | op @ x | op.T @ y | torch conv_transpose2d | apply / torch | adjoint / torch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    worst_apply = worst_adjoint = 0.0
    for batch, m, channels, filters, k in APPLY_SHAPES:
        for dtype in (np.float32, np.float64):
            kernel_cf = rng.standard_normal((filters, channels, k, k)).astype(dtype)
            x_cf = rng.standard_normal((batch, channels, m, m)).astype(dtype)
            kt, xt = torch.from_numpy(kernel_cf), torch.from_numpy(x_cf)
            y_cf = torch.nn.functional.conv2d(xt, kt).numpy()
            yt = torch.from_numpy(y_cf)
            operators = {
                "channels_first": stridedop.ConvOperator(kernel_cf, x_cf.shape[1:], layout="channels_first"),
                "channels_last": stridedop.ConvOperator(kernel_cf.transpose(2, 3, 1, 0), (m, m, channels)),
            }
            inputs = {
                "channels_first": (x_cf, y_cf),
                "channels_last": (
                    np.ascontiguousarray(np.moveaxis(x_cf, 1, -1)),
                    np.ascontiguousarray(np.moveaxis(y_cf, 1, -1)),
                ),
            }
            candidates = {
                "torch": lambda: torch.nn.functional.conv2d(xt, kt),
                "torch adjoint": lambda: torch.nn.functional.conv_transpose2d(yt, kt),
            }
            for layout, op in operators.items():
                x, y = inputs[layout]
                candidates[layout] = lambda op=op, x=x: op @ x
                candidates[layout + " adjoint"] = lambda op=op, y=y: op.T @ y
            times = best_times(candidates, repeat)
            torch_time, torch_adjoint = times["torch"], times["torch adjoint"]
            for layout in operators:
                ours, ours_adjoint = times[layout], times[layout + " adjoint"]
                worst_apply = max(worst_apply, ours / torch_time)
                worst_adjoint = max(worst_adjoint, ours_adjoint / torch_adjoint)
                print(
                    f"| {batch} x {m}x{m}x{channels} -> {filters} ({k}x{k}) | {np.dtype(dtype).name} | {layout} "
                    f"| {torch_time * 1e3:.3f} ms | {ours * 1e3:.3f} ms | {ours_adjoint * 1e3:.3f} ms "
                    f"| {torch_adjoint * 1e3:.3f} ms | {ours / torch_time:.2f} | {ours_adjoint / torch_adjoint:.2f} |"
                )
    print(
        f"\nworst apply / conv2d: {worst_apply:.2f}; worst adjoint / conv_transpose2d: {worst_adjoint:.2f}\n"
    )


def dense_table(repeat: int) -> None:
    print("## apply vs np.tensordot on the materialized operator (32x32x16 -> 16, 3x3, float64)\n")
    rng = np.random.default_rng(1)
    op = stridedop.ConvOperator(rng.standard_normal((3, 3, 16, 16)), (32, 32, 16))
    x = rng.standard_normal(op.input_shape)
    dense = stridedop.materialize(op)
    tensordot = best_time(lambda: np.tensordot(dense, x, 3), max(2, repeat // 3))
    apply = best_time(lambda: op @ x, repeat)
    dense = None  # release the dense operator
    gc.collect()
    print("| tensordot(materialized, x) | op @ x | ratio |")
    print("|---|---|---|")
    print(f"| {tensordot * 1e3:.2f} ms | {apply * 1e3:.3f} ms | {tensordot / apply:.0f}x |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        print(
            f"numpy {np.__version__}, stridedop {stridedop.__version__}, {os.cpu_count()} cores, BLAS on 1 thread\n"
        )
        apply_table(repeat)
        dense_table(repeat)
        sparse_table(repeat)  # planner_figures' rows: this one and the 7x7 single-channel one


if __name__ == "__main__":
    main()
