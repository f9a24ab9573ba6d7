"""The planner's figures (issue 12), measured in one process with every candidate interleaved.

Run with ``python benchmarks/planner_figures.py`` (``--quick`` for fewer rounds, ``--rows`` to pick
rows by substring, ``--best`` for best times instead of medians). NumPy's BLAS and PyTorch each
run on one thread. Every figure is a ratio of times measured round by round in the same run, so
that a slow spell on the shared machine hits both sides alike; in the layer table each round times
every candidate of every row in turn, so that such a spell costs each row a round or two.

Tables:

1. the layer table: ``op @ x`` against ``torch.nn.functional.convNd``, ``op.H @ y`` against
   ``conv_transposeNd`` and against the operator's own apply, in both layouts;
2. single-channel 'same' float64 correlations against ``scipy.signal.correlate(method="fft")`` and
   PyLops' ``Convolve2D``;
3. ``to_sparse`` against converting the dense operator, with bytes per stored entry.
"""

from __future__ import annotations

import argparse
import functools
import gc
import operator
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import interleaved_times  # noqa: E402
from layers import FFT_SIZES, LAYERS  # noqa: E402

import stridedop  # noqa: E402

STAT = 1  # which time of `interleaved_times` the tables use: 1 the median, 0 the best (--best)


def adjoint_of(op):
    """``op.H`` where it exists (0.2), else 0.1's ``op.T`` (the conjugate transpose there)."""
    return op.H if hasattr(op, "H") else op.T


def layer_table(rounds: int, pattern: str) -> None:
    import torch

    torch.set_num_threads(1)
    functional = torch.nn.functional
    print("## Layers: stridedop / PyTorch (ratios of times over interleaved rounds; one thread each)\n")
    print(
        "| layer | layout | method | torch conv | op @ x | torch conv_transpose | op.H @ y "
        "| apply / torch | adjoint / torch | adjoint / apply |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    # Every row's candidates in one set of rounds: a slow spell of the machine then costs each row a
    # round or two rather than all the rounds of the row it falls on. Both directions are checked
    # against PyTorch first.
    candidates, rows = {}, []
    for name, layer in LAYERS.items():
        if pattern not in name:
            continue
        n = len(layer.spatial)
        kernel_cf, x_cf = layer.arrays()
        conv = getattr(functional, f"conv{n}d")
        transpose = getattr(functional, f"conv_transpose{n}d")
        options = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
        options["groups"] = layer.groups
        options_t = dict(options, output_padding=layer.output_padding())
        kt, xt = torch.from_numpy(kernel_cf), torch.from_numpy(x_cf)
        yt = conv(xt, kt, **options)
        y_cf = yt.numpy()
        x_back = transpose(yt, kt, **options_t).numpy()  # the adjoint's expected result, channels-first
        candidates[f"{name} | torch"] = functools.partial(conv, xt, kt, **options)
        candidates[f"{name} | torch adjoint"] = functools.partial(transpose, yt, kt, **options_t)
        methods = {}
        for layout in ("channels_first", "channels_last"):
            op = layer.operator(kernel_cf, layout)
            methods[layout] = getattr(op, "method", "-")
            if layout == "channels_first":
                x, y = x_cf, y_cf
            else:
                x = np.ascontiguousarray(np.moveaxis(x_cf, 1, -1))
                y = np.ascontiguousarray(np.moveaxis(y_cf, 1, -1))
            adjoint = adjoint_of(op)
            for got, expected in ((op @ x, y_cf), (adjoint @ y, x_back)):
                np.testing.assert_allclose(
                    np.moveaxis(got, -1, 1) if layout == "channels_last" else got,
                    expected,
                    rtol=1e-3,
                    atol=1e-3 * float(np.abs(expected).max()),
                )
            candidates[f"{name} | {layout}"] = functools.partial(operator.matmul, op, x)
            candidates[f"{name} | {layout} adjoint"] = functools.partial(operator.matmul, adjoint, y)
        rows.append((name, layer, methods))
    times = {key: value[STAT] for key, value in interleaved_times(candidates, rounds).items()}
    apply_ratios, adjoint_ratios, own_ratios = [], [], []
    for name, layer, methods in rows:
        torch_apply, torch_adjoint = times[f"{name} | torch"], times[f"{name} | torch adjoint"]
        for layout in ("channels_first", "channels_last"):
            apply, adjoint = times[f"{name} | {layout}"], times[f"{name} | {layout} adjoint"]
            apply_ratios.append(apply / torch_apply)
            adjoint_ratios.append(adjoint / torch_adjoint)
            own_ratios.append(adjoint / apply)
            print(
                f"| {name} ({layer.dtype}) | {layout} | {methods[layout]} | {torch_apply * 1e3:.3f} ms "
                f"| {apply * 1e3:.3f} ms | {torch_adjoint * 1e3:.3f} ms | {adjoint * 1e3:.3f} ms "
                f"| {apply / torch_apply:.2f} | {adjoint / torch_adjoint:.2f} | {adjoint / apply:.2f} |"
            )
    if apply_ratios:
        print(
            f"\napply / torch: worst {max(apply_ratios):.2f}, median {np.median(apply_ratios):.2f}; "
            f"adjoint / conv_transpose: worst {max(adjoint_ratios):.2f}, median {np.median(adjoint_ratios):.2f}; "
            f"adjoint / own apply: worst {max(own_ratios):.2f}\n"
        )


def fft_table(rounds: int) -> None:
    import scipy.signal

    try:
        import pylops
    except ImportError:
        pylops = None
    print("## Single channel, 'same', float64: stridedop / SciPy FFT correlate and / PyLops Convolve2D\n")
    print(
        "| case | method | correlate(fft) | PyLops Convolve2D | op @ x | op.H @ y | op / scipy | op / PyLops "
        "| adjoint / apply |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(5)
    for name, (size, k) in FFT_SIZES.items():
        kernel = rng.standard_normal((k, k))
        x = rng.standard_normal((size, size))
        op = stridedop.ConvOperator(kernel[:, :, None, None], (size, size, 1), padding="same")
        adjoint = adjoint_of(op)
        x1 = x[..., None]
        expected = scipy.signal.correlate(x, kernel, mode="same", method="fft")
        np.testing.assert_allclose((op @ x1)[..., 0], expected, atol=1e-9)
        candidates = {
            "scipy": lambda x=x, kernel=kernel: scipy.signal.correlate(x, kernel, mode="same", method="fft"),
            "ours": lambda op=op, x1=x1: op @ x1,
            "ours adjoint": lambda adjoint=adjoint, x1=x1: adjoint @ x1,
        }
        if pylops is not None:
            # PyLops convolves; the flipped kernel correlates. Its 'same' centre is offset = k // 2.
            flipped = np.ascontiguousarray(kernel[::-1, ::-1])
            P = pylops.signalprocessing.Convolve2D((size, size), h=flipped, offset=(k // 2, k // 2))
            flat = x.ravel()
            np.testing.assert_allclose(P.matvec(flat).reshape(size, size), expected, atol=1e-9)
            candidates["pylops"] = lambda P=P, flat=flat: P.matvec(flat)
        times = interleaved_times(candidates, rounds)
        scipy_time, ours, ours_adjoint = (
            times["scipy"][STAT],
            times["ours"][STAT],
            times["ours adjoint"][STAT],
        )
        pylops_time = times["pylops"][STAT] if "pylops" in times else float("nan")
        print(
            f"| {name} | {getattr(op, 'method', '-')} | {scipy_time * 1e3:.3f} ms | {pylops_time * 1e3:.3f} ms "
            f"| {ours * 1e3:.3f} ms | {ours_adjoint * 1e3:.3f} ms | {ours / scipy_time:.2f} "
            f"| {ours / pylops_time:.2f} | {ours_adjoint / ours:.2f} |"
        )
        sys.stdout.flush()
    print()


def peak_bytes(function) -> int:
    gc.collect()
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def sparse_table(rounds: int) -> None:
    import scipy.sparse

    print("## to_sparse\n")
    print("| case | nnz | op.to_sparse() | csr_array(dense) | dense / to_sparse | peak bytes / nnz |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(6)
    cases = {
        "one channel 7x7 on 128x128, 'same'": ((7, 7, 1, 1), (128, 128, 1), "same"),
        "3x3x8x8 on 32x32x8, 'valid'": ((3, 3, 8, 8), (32, 32, 8), "valid"),
        "3x3x8x8 on 32x32x8, 'same'": ((3, 3, 8, 8), (32, 32, 8), "same"),
    }
    for name, (kernel_shape, input_shape, padding) in cases.items():
        op = stridedop.ConvOperator(rng.standard_normal(kernel_shape), input_shape, padding=padding)
        candidates = {"sparse": op.to_sparse}
        if op.nbytes < 2**30:
            dense = op.to_matrix()
            candidates["dense"] = lambda dense=dense: scipy.sparse.csr_array(dense)
        times = interleaved_times(candidates, rounds)
        candidates = dense = None
        nnz = op.to_sparse().nnz
        peak = peak_bytes(op.to_sparse)
        sparse_time = times["sparse"][STAT]
        if "dense" in times:
            dense_time = times["dense"][STAT]
            dense = f"{dense_time * 1e3:.1f} ms | {dense_time / sparse_time:.0f}x"
        else:  # the dense matrix alone would take a GiB or more
            dense = f"not run ({op.nbytes / 2**30:.1f} GiB dense) | -"
        print(f"| {name} | {nnz} | {sparse_time * 1e3:.2f} ms | {dense} | {peak / nnz:.1f} |")
    print()


def memory_table() -> None:
    print("## Peak memory of apply and adjoint (tracemalloc)\n")
    print("| case | input + output | apply peak | adjoint peak | adjoint peak / (input + output) |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(7)
    cases = {
        "1024^2 x 4 channels, 7x7, 'same', float64": ((7, 7, 4, 4), (1024, 1024, 4), {"padding": "same"}),
        "circular, 5 entries, dilation 10^8": ((2, 1, 1), (5, 1), {"padding": "circular", "dilation": 10**8}),
    }
    for name, (kernel_shape, input_shape, options) in cases.items():
        op = stridedop.ConvOperator(rng.standard_normal(kernel_shape), input_shape, **options)
        x = rng.standard_normal(op.input_shape)
        y = op @ x
        apply = peak_bytes(lambda op=op, x=x: op @ x)
        adjoint = peak_bytes(lambda op=op, y=y: adjoint_of(op) @ y)
        both = x.nbytes + y.nbytes
        print(
            f"| {name} | {both / 2**20:.1f} MiB | {apply / 2**20:.1f} MiB | {adjoint / 2**20:.1f} MiB "
            f"| {adjoint / both:.2f} |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--best", action="store_true", help="ratios of best times instead of medians")
    parser.add_argument("--rows", default="", help="only the layer rows whose name contains this")
    parser.add_argument(
        "--tables", default="layers,fft,sparse,memory", help="comma-separated: layers, fft, sparse, memory"
    )
    args = parser.parse_args()
    rounds = 5 if args.quick else 11
    global STAT
    STAT = 0 if args.best else 1
    tables = args.tables.split(",")
    # Load every BLAS first (SciPy's, which stridedop's tap GEMM uses, is a library of its own):
    # threadpoolctl limits only the libraries loaded when it is entered.
    import scipy.fft
    import scipy.linalg.blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        print(
            f"{time.strftime('%Y-%m-%d %H:%M')}, numpy {np.__version__}, stridedop {stridedop.__version__}, "
            f"{os.cpu_count()} cores, BLAS and PyTorch on 1 thread, {rounds} interleaved rounds, "
            f"{'best' if STAT == 0 else 'median'} times\n"
        )
        if "layers" in tables:
            layer_table(rounds, args.rows)
        if "fft" in tables:
            fft_table(rounds)
        if "sparse" in tables:
            sparse_table(rounds)
        if "memory" in tables:
            memory_table()


if __name__ == "__main__":
    main()
