"""stridedop against the constructions people use today, in one table measured in one run.

Run with ``python benchmarks/compare.py``. Optional competitors (PyTorch, PyLops,
sparse_convolution) are measured when installed and reported as such when not.

Every row reports, for building the operator: wall time and peak resident memory (the rise of the
process's peak RSS, reset before each build, so NumPy's lazily touched pages and PyTorch's own
allocations are both counted), and the time to apply the result to one input. Ratios are
competitor / stridedop, so > 1 means stridedop is faster or smaller. BLAS and PyTorch run on one
thread.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import advanced_index, best_time, loop_fill  # noqa: E402

import stridedop  # noqa: E402


def _rss_field(name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def measure(build: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, peak extra bytes) of a build.

    The time is one untraced call, or the best of several when a call is short. The memory is
    measured on another call, as the larger of
    tracemalloc's peak (exact for NumPy, which reports to it) and the rise of the process's peak
    RSS (which also sees PyTorch's allocations and the pages NumPy really touched).
    """
    gc.collect()
    start = time.perf_counter()
    result = build()
    seconds = time.perf_counter() - start
    del result
    if seconds < 0.05:
        seconds = best_time(build)
    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # reset the peak RSS to the current RSS
    before = _rss_field("VmRSS")
    tracemalloc.start()
    result = build()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, max(traced, _rss_field("VmHWM") - before)


def mib(count: int) -> str:
    return f"{count / 2**20:.3g} MiB" if count >= 2**20 else f"{count / 2**10:.3g} KiB"


ROWS: list[str] = []


def row(
    case: str,
    method: str,
    build: float,
    peak: int,
    apply: float | None,
    reference: tuple[float, int, float | None],
) -> None:
    ref_build, ref_peak, ref_apply = reference
    apply_cell = "n/a" if apply is None else f"{apply * 1e3:.3f} ms"
    apply_ratio = "n/a" if apply is None or ref_apply is None else f"{apply / ref_apply:.3g}x"
    peak_ratio = f"{peak / ref_peak:.3g}x" if ref_peak else "n/a"
    ROWS.append(
        f"| {case} | {method} | {build * 1e3:.3f} ms | {mib(peak)} | {apply_cell} "
        f"| {build / ref_build:.3g}x | {peak_ratio} | {apply_ratio} |"
    )


def missing(case: str, method: str, package: str) -> None:
    ROWS.append(f"| {case} | {method} | {package} not installed | | | | | |")


def conv2d_case() -> None:
    case = "2-D, 3x3x16x16 on 32x32x16, float32"
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    x = rng.standard_normal((32, 32, 16)).astype(np.float32)
    op, build, peak = measure(lambda: stridedop.ConvOperator(kernel, x.shape))
    reference = (build, peak, best_time(lambda: op @ x))
    row(case, "stridedop (view + op @ x)", build, peak, reference[2], reference)
    for name, construct in (
        ("Python loop filling slices", loop_fill),
        ("zeros + advanced index", advanced_index),
    ):
        W, build, peak = measure(lambda construct=construct: construct(kernel, x.shape))
        apply = best_time(lambda W=W: np.tensordot(W, x, 3), 3)
        row(case, f"{name} (+ tensordot)", build, peak, apply, reference)
        del W
    try:
        import torch
        from torch.func import jacrev
    except ImportError:
        missing(case, "torch.func.jacrev(conv2d)", "torch")
        return
    torch.set_num_threads(1)
    kt = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)))

    def jacobian() -> Any:
        return jacrev(lambda v: torch.nn.functional.conv2d(v[None], kt)[0])(xt)

    J, build, peak = measure(jacobian)
    apply = best_time(lambda: torch.tensordot(J, xt, dims=3), 3)
    row(case, "torch.func.jacrev(conv2d) (+ tensordot)", build, peak, apply, reference)
    J = None  # release the jacobian


def convolution_matrix_case() -> None:
    case = "1-D, 65 taps, n = 4096, float64"
    try:
        import scipy.linalg
    except ImportError:
        missing(case, "scipy.linalg.convolution_matrix", "scipy")
        return
    rng = np.random.default_rng(1)
    a, v = rng.standard_normal(65), rng.standard_normal(4096)
    A, build, peak = measure(lambda: stridedop.convolution_matrix(a, 4096))
    op = stridedop.ConvOperator(a[::-1].reshape(65, 1, 1), (4096, 1), padding="full")
    reference = (build, peak, best_time(lambda: op @ v[:, None]))
    row(case, "stridedop.convolution_matrix (+ ConvOperator @ v)", build, peak, reference[2], reference)
    dense, build, peak = measure(lambda: scipy.linalg.convolution_matrix(a, 4096))
    row(
        case,
        "scipy.linalg.convolution_matrix (+ A @ v)",
        build,
        peak,
        best_time(lambda: dense @ v),
        reference,
    )
    dense = None  # release the dense operator


def pylops_case() -> None:
    case = "2-D apply, 7x7 on 256x256, one channel, 'same', float64"
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((7, 7))
    x = rng.standard_normal((256, 256))
    flipped = np.ascontiguousarray(kernel[::-1, ::-1, None, None])  # PyLops convolves, we correlate
    op, build, peak = measure(lambda: stridedop.ConvOperator(flipped, (256, 256, 1), padding="same"))
    reference = (build, peak, best_time(lambda: op @ x[..., None]))
    row(case, "stridedop ConvOperator", build, peak, reference[2], reference)
    try:
        import pylops
    except ImportError:
        missing(case, "PyLops Convolve2D", "pylops")
        return
    P, build, peak = measure(lambda: pylops.signalprocessing.Convolve2D((256, 256), h=kernel, offset=(3, 3)))
    np.testing.assert_allclose(P.matvec(x.ravel()).reshape(256, 256), (op @ x[..., None])[..., 0], atol=1e-9)
    row(case, "PyLops Convolve2D (fft)", build, peak, best_time(lambda: P.matvec(x.ravel())), reference)


def sparse_case() -> None:
    case = "sparse build, 7x7 on 128x128, one channel, 'same', float64"
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((7, 7))
    x = rng.standard_normal((128, 128))
    op = stridedop.ConvOperator(
        np.ascontiguousarray(kernel[::-1, ::-1, None, None]), (128, 128, 1), padding="same"
    )
    S, build, peak = measure(op.to_sparse)
    reference = (build, peak, best_time(lambda: S @ x.ravel()))
    row(case, "stridedop op.to_sparse() (+ S @ x)", build, peak, reference[2], reference)
    try:
        from sparse_convolution import Toeplitz_convolution2d
    except ImportError:
        missing(case, "sparse_convolution Toeplitz_convolution2d", "sparse_convolution")
        return

    def build_theirs() -> Any:
        return Toeplitz_convolution2d(
            x_shape=(128, 128), k=kernel, mode="same", method="precomputed", backend="numpy"
        )

    conv, build, peak = measure(build_theirs)
    np.testing.assert_allclose(
        conv(x.reshape(1, -1), batching=True).reshape(128, 128), (S @ x.ravel()).reshape(128, 128), atol=1e-9
    )
    apply = best_time(lambda: conv(x.reshape(1, -1), batching=True))
    row(case, "sparse_convolution Toeplitz_convolution2d (precomputed)", build, peak, apply, reference)


def main() -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        conv2d_case()
        convolution_matrix_case()
        pylops_case()
        sparse_case()
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, stridedop {stridedop.__version__}, one BLAS thread\n"
    )
    print(
        "| case | method | build | peak memory | apply | build / stridedop | memory / stridedop | apply / stridedop |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(ROWS))


if __name__ == "__main__":
    main()
