"""The ``stridedop`` command line: ``demo`` (default), ``info`` and ``materialize``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import shutil
import signal
import sys
import tempfile
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


def _numeric_dtype(text: str) -> np.dtype:
    """The dtype named by ``--dtype``, refusing the non-numeric ones (object, str, bytes, void)."""
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise TypeError(f"`--dtype` {text!r} is not a NumPy dtype name such as float64 or int8") from None
    if dtype.kind not in "biufc":
        raise TypeError(
            f"`--dtype` {text!r} is {dtype}, which is not numeric; expected a bool, integer, floating or "
            "complex dtype such as float64, float32, int8 or complex128"
        )
    return dtype


def info(args: argparse.Namespace) -> int:
    dtype = _numeric_dtype(args.dtype)
    geometry = make_geometry(args.kernel, args.input, **_geometry_arguments(args))
    itemsize = dtype.itemsize
    dense = geometry.dense_size * itemsize
    # Integer arithmetic only: nothing is allocated. The modes without a view hold no buffer.
    buffer = plan_buffer(geometry, itemsize).size * itemsize if geometry.mode.has_view else 0
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


def _load_kernel(path: str) -> np.ndarray:
    """The numeric kernel saved in the ``.npy`` file `path`, with a clear message for anything else."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        reason = "the file is empty or cut short" if isinstance(error, EOFError) else str(error)
        raise ValueError(f"cannot read the kernel file {path!r}: {reason}") from None
    if not isinstance(loaded, np.ndarray):  # an .npz archive
        names = list(getattr(loaded, "files", []))
        getattr(loaded, "close", lambda: None)()
        raise ValueError(
            f"the kernel file {path!r} is an .npz archive holding {names}; save one kernel as an .npy "
            "file with numpy.save (e.g. np.save('kernel.npy', archive['name']))"
        )
    return as_numeric_array(loaded, "kernel")


def _same_file(first: str, second: str) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist
        return False


def _reserve(file: Any, nbytes: int, directory: str) -> None:
    """Give the open `file` its `nbytes` on disk now, so that writing through a map cannot fail later.

    A memory map of a sparse file gets SIGBUS when the disk fills; ``posix_fallocate`` instead
    fails here, cleanly, with ENOSPC. Where the file system cannot preallocate, zeros are written.
    """
    try:
        os.posix_fallocate(file.fileno(), 0, nbytes)
        return
    except AttributeError:  # not on this system
        pass
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise OSError(
                f"cannot reserve {format_bytes(nbytes)} ({nbytes} bytes) for the output in {directory}: "
                f"{error.strerror or error}"
            ) from None
    file.seek(0, os.SEEK_END)
    block = bytes(2**20)
    remaining = nbytes - file.tell()
    while remaining > 0:
        remaining -= file.write(block[: min(remaining, len(block))])
    file.flush()


def _write_npy(path: str, shape: tuple[int, ...], dtype: np.dtype, fill: Callable[[np.ndarray], Any]) -> None:
    """Create the ``.npy`` file `path`: header, reserved space, then `fill` writes through a map.

    The map starts as zeros (the reserved space reads as zeros).
    """
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with open(path, "r+b") as file:
        try:
            np.lib.format.write_array_header_1_0(file, header)
        except ValueError:  # a header longer than 64 KiB
            file.seek(0)
            np.lib.format.write_array_header_2_0(file, header)
        offset = file.tell()
        _reserve(file, offset + math.prod(shape) * dtype.itemsize, os.path.dirname(path))
        out = np.memmap(file, dtype=dtype, mode="r+", offset=offset, shape=shape)
        try:
            fill(out)
            out.flush()
        finally:
            del out
        os.fsync(file.fileno())


def materialize_command(args: argparse.Namespace) -> int:
    output = args.output
    if _same_file(args.kernel_file, output):
        raise ValueError(f"`--output` {output!r} is the kernel file itself; choose another file name")
    if _is_zarr_output(output):
        return materialize_zarr_command(args)
    if os.path.isdir(output):
        raise ValueError(f"`--output` {output!r} is a directory; give the name of the .npy file to write")
    kernel = _load_kernel(args.kernel_file)
    geometry = make_geometry(kernel.shape, args.input, **_geometry_arguments(args))
    needed = geometry.dense_size * kernel.itemsize
    directory = os.path.dirname(os.path.abspath(output))
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(
            f"the dense operator needs {format_bytes(needed)} ({needed} bytes) but {directory} has "
            f"only {format_bytes(free)} free; use `stridedop info` to size it, or apply it with ConvOperator"
        )
    operator = ConvOperator(kernel, geometry.input_shape, **_geometry_arguments(args))

    def fill(out: np.ndarray) -> None:
        if geometry.mode.has_view:  # only the kernel entries: the new file reads as zeros
            fill_dense(operator.view, out, zeroed=True, progress=update)
        else:
            operator.materialize(out=out)

    # Write a hidden temporary file next to the output and rename it only once complete: an error
    # or a signal (Ctrl-C, SIGTERM) never leaves a partial file that `np.load` would accept.
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(output)}.", suffix=".tmp"
        )
        os.close(descriptor)
        update, close = _progress_bar(needed)
        try:
            _write_npy(temporary, operator.shape, operator.dtype, fill)
        finally:
            close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as `open` would have made it
        os.replace(temporary, output)
    except BaseException:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise
    print(f"wrote {output}: shape {operator.shape}, {kernel.dtype}, {format_bytes(needed)}")
    return 0


# -- materialize --output X.zarr: a separate path, through the optional extra `dask` ------------------
def _is_zarr_output(path: str) -> bool:
    return path.rstrip("/\\").lower().endswith(".zarr")


def materialize_zarr_command(args: argparse.Namespace) -> int:
    """Write the dense operator to a new zarr store: only the chunks in the band, atomically."""
    from ._dask import write_zarr_store

    kernel = _load_kernel(args.kernel_file)
    operator = ConvOperator(kernel, args.input, **_geometry_arguments(args))
    update, close = _progress_bar(operator.nbytes)
    try:
        array = write_zarr_store(args.output, operator, args.chunks, progress=update)
    except ImportError as error:
        print(f"stridedop materialize: error: {error}", file=sys.stderr)
        return 1
    finally:
        close()
    stored = array.nbytes_stored() if callable(array.nbytes_stored) else array.nbytes_stored  # zarr 3, 2
    print(
        f"wrote {args.output}: shape {operator.shape}, {kernel.dtype}, chunks {array.chunks}, "
        f"{array.nchunks_initialized} of {array.nchunks} chunks stored, {format_bytes(stored)} on disk "
        f"for {format_bytes(operator.nbytes)} dense"
    )
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
            "Write the dense operator to a .npy file through a memory map, writing only the kernel entries. "
            "The space is reserved first and the file is written under a temporary name next to the "
            "output, renamed only when complete: a full disk, an error or Ctrl-C leaves no partial file."
        ),
    )
    mat_parser.add_argument("kernel_file", help="kernel as a .npy file")
    mat_parser.add_argument("--input", type=_shape, required=True, help="input shape, e.g. 32x32x16")
    mat_parser.add_argument(
        "--output", "-o", required=True, help="the .npy file to write, or a .zarr store (extra `dask`)"
    )
    mat_parser.add_argument(
        "--chunks",
        type=_shape,
        default=None,
        help="zarr chunk shape, e.g. 4x4x16x4x4x16 (default: at most 1 MiB, spatial axes split first)",
    )
    _add_geometry(mat_parser)
    mat_parser.set_defaults(handler=materialize_command)
    return parser


class _TerminatedError(Exception):
    """SIGTERM, raised in the main thread so that the cleanup code runs as for Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _TerminatedError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo", *(argv or [])])
    prefix = f"stridedop {args.command}:"
    nothing = "; nothing was written" if args.command == "materialize" else ""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return int(args.handler(args))
    except (ValueError, TypeError, MemoryError, OSError) as error:
        print(f"{prefix} error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prefix} interrupted{nothing}", file=sys.stderr)
        return 128 + signal.SIGINT
    except _TerminatedError:
        print(f"\n{prefix} terminated{nothing}", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
