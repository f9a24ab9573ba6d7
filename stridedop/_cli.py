"""The ``stridedop`` command line: ``demo`` (default), ``info`` and ``materialize``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._buffer import plan_buffer
from ._conv import conv_view
from ._dense import fill_dense
from ._geometry import as_numeric_array, make_geometry
from ._memory import format_bytes
from ._operator import ConvOperator

__all__ = ["main"]


def _shape(text: str) -> tuple[int, ...]:
    """``'3x3x16x16'`` -> ``(3, 3, 16, 16)``."""
    try:
        sizes = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes joined by 'x' such as 32x32x16, got {text!r}"
        ) from None
    if any(size < 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be non-negative, got {text!r}")
    return sizes


def _ints(text: str) -> int | tuple[int, ...]:
    """``'2'`` -> ``2``; ``'2,1'`` -> ``(2, 1)``."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int or ints separated by commas, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def _padding(text: str) -> Any:
    """``'same'``, ``'1'``, ``'1,2'`` or ``'0:1,2:3'`` (lo:hi per axis)."""
    if text.isalpha():
        return text
    try:
        if ":" in text:
            return [tuple(int(v) for v in pair.split(":")) for pair in text.split(",")]
        return _ints(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected valid, same, full, circular, an int, ints or lo:hi pairs separated by commas, "
            f"got {text!r}"
        ) from None


def _add_geometry(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("geometry (as in stridedop.conv_view)")
    group.add_argument(
        "--padding",
        type=_padding,
        default="valid",
        help="valid (default), same, full, circular (same, wrapped), P, P1,P2 or LO:HI,LO:HI",
    )
    group.add_argument(
        "--padding-mode",
        choices=("zeros", "circular", "reflect", "replicate"),
        type=str.lower,
        default="zeros",
        help="what the padding holds (default zeros)",
    )
    group.add_argument("--stride", type=_ints, default=1, help="S or S1,S2,... (default 1)")
    group.add_argument("--dilation", type=_ints, default=1, help="D or D1,D2,... (default 1)")
    group.add_argument("--groups", type=int, default=1, help="grouped convolution (default 1)")
    group.add_argument(
        "--layout",
        choices=("channels_last", "channels_first"),
        default="channels_last",
        help="axis order (default channels_last)",
    )


def _geometry_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "padding": args.padding,
        "padding_mode": args.padding_mode,
        "stride": args.stride,
        "dilation": args.dilation,
        "groups": args.groups,
        "layout": args.layout,
    }


def _direct_convolution(A: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Valid 2-D cross-correlation by loops, written from the definition (the demo's oracle)."""
    k1, k2, _, filters = K.shape
    rows, columns = A.shape[0] - k1 + 1, A.shape[1] - k2 + 1
    out = np.zeros((rows, columns, filters))
    for i in range(rows):
        for j in range(columns):
            for f in range(filters):
                out[i, j, f] = np.sum(A[i : i + k1, j : j + k2, :] * K[:, :, :, f])
    return out


def _loop_operator(K: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """The dense operator filled by a Python loop, the way it is usually written."""
    k1, k2, _, filters = K.shape
    m1, m2, channels = input_shape
    W = np.zeros((m1 - k1 + 1, m2 - k2 + 1, filters, m1, m2, channels), dtype=K.dtype)
    for i in range(m1 - k1 + 1):
        for j in range(m2 - k2 + 1):
            W[i, j, :, i : i + k1, j : j + k2, :] = K.transpose(3, 0, 1, 2)
    return W


def _best_time(function: Callable[[], Any], repeat: int = 7) -> float:
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def demo(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    A = rng.standard_normal((5, 5, 3))
    K = rng.standard_normal((2, 2, 3, 2))
    W = conv_view(K, A.shape)
    B = np.tensordot(W, A, 3)
    expected = _direct_convolution(A, K)
    ok = np.allclose(B, expected)
    print("stridedop demo: the 2x2x3x2 kernel on a 5x5x3 input as a strided view")
    print(f"  A.shape = {A.shape}, K.shape = {K.shape}")
    print(f"  W = stridedop.conv_view(K, A.shape): shape {W.shape}, read-only: {not W.flags.writeable}")
    print(f"  np.tensordot(W, A, 3).shape = {B.shape}; equals the direct convolution: {ok}")
    buffer = ConvOperator(K, A.shape).buffer_nbytes
    print(f"  dense operator: {W.nbytes} bytes; buffer held by the view: {buffer} bytes")
    view_time = _best_time(lambda: conv_view(K, A.shape))
    loop_time = _best_time(lambda: _loop_operator(K, A.shape))
    print(
        f"  build time: view {view_time * 1e6:.1f} us, Python loop {loop_time * 1e6:.1f} us "
        f"(view {loop_time / view_time:.1f}x faster)"
    )
    if not np.array_equal(_loop_operator(K, A.shape), W):
        print("  ERROR: the view differs from the loop construction", file=sys.stderr)
        return 1
    return 0 if ok else 1


def info(args: argparse.Namespace) -> int:
    dtype = np.dtype(args.dtype)
    geometry = make_geometry(args.kernel, args.input, **_geometry_arguments(args))
    itemsize = dtype.itemsize
    dense = geometry.dense_size * itemsize
    # Integer arithmetic only: nothing is allocated. The modes without a view hold no buffer.
    buffer = plan_buffer(geometry).size * itemsize if geometry.mode.has_view else 0
    nonzeros = geometry.nonzero_count
    print(f"kernel        {args.kernel} {dtype}")
    print(f"input_shape   {geometry.input_shape}")
    print(f"output_shape  {geometry.output_shape}")
    print(f"geometry      {geometry.describe()}")
    print(f"view shape    {geometry.view_shape}")
    print(f"dense bytes   {dense} ({format_bytes(dense)})")
    if buffer:
        print(f"buffer bytes  {buffer} ({format_bytes(buffer)}); dense / buffer = {dense / buffer:.4g}")
    else:
        print(f"buffer bytes  none: padding_mode={geometry.mode.name!r} has no strided view")
    print(f"non-zeros     {nonzeros} ({nonzeros / geometry.dense_size:.3%} of the dense entries)")
    return 0


def _progress_bar(total_bytes: int) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress callback: tqdm when installed, else a plain percentage on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:
        state = {"last": -1}

        def report(done: int, total: int) -> None:
            percent = 100 * done // total
            if percent != state["last"]:
                state["last"] = percent
                print(f"\rwriting the operator: {percent:3d}%", end="", file=sys.stderr, flush=True)

        return report, lambda: print(file=sys.stderr)

    bar = tqdm(total=None, unit="block", desc=f"writing {format_bytes(total_bytes)}")

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def materialize_command(args: argparse.Namespace) -> int:
    try:
        kernel = np.load(args.kernel_file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the kernel file {args.kernel_file!r}: {error}") from None
    kernel = as_numeric_array(kernel, "kernel")
    geometry = make_geometry(kernel.shape, args.input, **_geometry_arguments(args))
    needed = geometry.dense_size * kernel.itemsize
    directory = os.path.dirname(os.path.abspath(args.output))
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise MemoryError(
            f"the dense operator needs {format_bytes(needed)} ({needed} bytes) but {directory} has "
            f"only {format_bytes(free)} free; use `stridedop info` to size it, or apply it with ConvOperator"
        )
    operator = ConvOperator(kernel, geometry.input_shape, **_geometry_arguments(args))
    shape = operator.shape
    out = np.lib.format.open_memmap(args.output, mode="w+", dtype=kernel.dtype, shape=shape)
    update, close = _progress_bar(needed)
    try:
        if geometry.mode.has_view:
            fill_dense(operator.view, out, zeroed=True, progress=update)  # a new file reads as zeros
        else:
            operator.materialize(out=out)
        out.flush()
    finally:
        close()
        del out
    print(f"wrote {args.output}: shape {shape}, {kernel.dtype}, {format_bytes(needed)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stridedop",
        description="The linear operator of a convolution as a read-only strided view.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{demo,info,materialize}")
    demo_parser = commands.add_parser(
        "demo",
        help="the worked 5x5x3 example (default)",
        description="Run the worked example: a 2x2x3x2 kernel on a 5x5x3 input.",
    )
    demo_parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo_parser.set_defaults(handler=demo)

    info_parser = commands.add_parser(
        "info",
        help="shapes and bytes of an operator, without building it",
        description="Print shapes and byte counts; nothing dense is allocated.",
    )
    info_parser.add_argument(
        "--kernel", type=_shape, default=(3, 3, 16, 16), help="kernel shape (default 3x3x16x16)"
    )
    info_parser.add_argument(
        "--input", type=_shape, default=(32, 32, 16), help="input shape (default 32x32x16)"
    )
    info_parser.add_argument("--dtype", default="float64", help="dtype (default float64)")
    _add_geometry(info_parser)
    info_parser.set_defaults(handler=info)

    mat_parser = commands.add_parser(
        "materialize",
        help="write the dense operator to a .npy memory map",
        description=(
            "Write the dense operator to a .npy file through a memory map, writing only the kernel entries."
        ),
    )
    mat_parser.add_argument("kernel_file", help="kernel as a .npy file")
    mat_parser.add_argument("--input", type=_shape, required=True, help="input shape, e.g. 32x32x16")
    mat_parser.add_argument("--output", "-o", required=True, help="the .npy file to write")
    _add_geometry(mat_parser)
    mat_parser.set_defaults(handler=materialize_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo", *(argv or [])])
    try:
        return int(args.handler(args))
    except (ValueError, TypeError, MemoryError, OSError) as error:
        print(f"stridedop {args.command}: error: {error}", file=sys.stderr)
        return 1
