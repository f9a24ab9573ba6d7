"""Spectral norms of conv layers: stridedop's exact / converged values next to what people use today.

Run from the repository root (one BLAS thread; rounds interleaved, best time of each kept):

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.spectral_figures            # everything (~5 min)
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.spectral_figures --quick    # skip the big ResNet layers
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.spectral_figures --targets  # the two timing targets only

Compared, all on the same random kernel:

* textbook: FFT of the kernel zero-padded to the grid, then the SVD of every frequency's
  ``(F, C)`` matrix (Sedghi, Gupta & Long, ICLR 2019; stride 1 circular only);
* power: 100 steps of power iteration on ``A^H A`` through ``op @ x`` and ``op.H @ y``;
* reshape: the largest singular value of the kernel reshaped to ``(F, C * prod(k))``, which is what
  ``torch.nn.utils.spectral_norm`` normalises by (not the operator norm);
* Gram: Gram iteration (Delattre, Barthelemy, Araujo & Allauzen, ICML 2023) on the frequency
  blocks: ``G <- G^H G`` six times with rescaling, bound ``||G_t||_F ** (1 / 2**t)``;
* Singla-Feizi: ``sqrt(prod(k)) * min(||R||, ||S||, ||T||, ||U||)`` over the four reshapes of the
  kernel (Singla & Feizi, ICLR 2021, Theorem 1).

Gram and Singla-Feizi bound the stride-1 convolution; for zero padding they are computed on the
same circulant grid as stridedop's own upper bound, so that they are bounds too.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import stridedop  # noqa: E402
from stridedop import _spectral  # noqa: E402  (to count the steps of one Lanczos run)
from stridedop._spectral import _bound_axis  # noqa: E402  (the grid of the proven zero-padding bound)


# -- the constructions people use today ------------------------------------------------------------
def textbook_svdvals(kernel: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Full 2-D FFT of the (k1, k2, C, F) kernel on `grid`, then the SVD of every frequency."""
    transforms = np.fft.fft2(kernel, grid, axes=(0, 1))
    return np.linalg.svd(transforms, compute_uv=False)


def power_iteration(op: Any, steps: int = 100, seed: int = 0) -> float:
    x = np.random.default_rng(seed).standard_normal(op.input_shape)
    for _ in range(steps):
        x = op.H @ (op @ x)
        x /= np.linalg.norm(x)
    return float(np.linalg.norm(op @ x))


def reshaped_norm(kernel: np.ndarray) -> float:
    """``torch.nn.utils.spectral_norm``'s quantity: the kernel as an (F, k1 * k2 * C) matrix."""
    return float(np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]).T, 2))


def dilated(kernel: np.ndarray, dilation: int) -> np.ndarray:
    if dilation == 1:
        return kernel
    k1, k2, channels, filters = kernel.shape
    out = np.zeros(((k1 - 1) * dilation + 1, (k2 - 1) * dilation + 1, channels, filters), kernel.dtype)
    out[::dilation, ::dilation] = kernel
    return out


def gram_bound(kernel: np.ndarray, grid: tuple[int, int], iterations: int = 6) -> float:
    """Gram iteration on the frequency blocks of the stride-1 circular convolution on `grid`."""
    blocks = np.fft.fft2(kernel, grid, axes=(0, 1)).reshape(-1, *kernel.shape[2:])  # (B, C, F)
    if blocks.shape[1] < blocks.shape[2]:
        blocks = blocks.transpose(0, 2, 1)
    log_scale = 0.0
    for _ in range(iterations):
        size = np.linalg.norm(blocks)
        blocks = blocks / size
        log_scale = 2 * (log_scale + math.log(size))
        blocks = blocks.conj().transpose(0, 2, 1) @ blocks
    return math.exp((log_scale + math.log(np.linalg.norm(blocks))) / 2**iterations)


def singla_feizi_bound(kernel: np.ndarray) -> float:
    """``sqrt(h w) min(||R||, ||S||, ||T||, ||U||)`` for the (h, w, C, F) kernel."""
    h, w, channels, filters = kernel.shape
    R = kernel.transpose(0, 3, 1, 2).reshape(h * filters, w * channels)
    S = kernel.transpose(1, 3, 0, 2).reshape(w * filters, h * channels)
    T = kernel.transpose(3, 0, 1, 2).reshape(filters, h * w * channels)
    U = kernel.transpose(0, 1, 3, 2).reshape(h * w * filters, channels)
    return math.sqrt(h * w) * min(float(np.linalg.norm(M, 2)) for M in (R, S, T, U))


def bound_grid(op: stridedop.ConvOperator) -> tuple[int, int]:
    """The circulant grid (stride 1) on which the zero-padded operator is a restriction."""
    geometry = op._geometry
    return tuple(
        _bound_axis(type(axis)(axis.size, axis.kernel, 1, axis.dilation, axis.lo, axis.hi)).size
        for axis in geometry.axes
    )  # type: ignore[return-value]


# -- timing ------------------------------------------------------------------------------------------
def interleaved(
    functions: dict[str, Callable[[], Any]], rounds: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Best time and last value of each function, the functions run in turn round by round."""
    best = dict.fromkeys(functions, float("inf"))
    values: dict[str, Any] = {}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            values[name] = function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, values


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f} ms"


# -- the cases -------------------------------------------------------------------------------------
def circular_target(rounds: int) -> None:
    print("== Target: all singular values, circular 3x3x64x64 on 32x32 (stride 1) ==")
    kernel = np.random.default_rng(0).standard_normal((3, 3, 64, 64))
    op = stridedop.ConvOperator(kernel, (32, 32, 64), padding="circular")
    best, values = interleaved(
        {"stridedop svdvals": op.svdvals, "textbook FFT + SVD": lambda: textbook_svdvals(kernel, (32, 32))},
        rounds,
    )
    ours, textbook = values["stridedop svdvals"], np.sort(values["textbook FFT + SVD"].ravel())[::-1]
    # The textbook takes the frequency response with the opposite shift convention; the values agree.
    print(f"  values: {ours.size}, max |difference| / s_max = {np.abs(ours - textbook).max() / ours[0]:.1e}")
    for name, seconds in best.items():
        print(f"  {name:22s} {milliseconds(seconds)}")
    print(
        f"  ratio stridedop / textbook = {best['stridedop svdvals'] / best['textbook FFT + SVD']:.2f}"
        "  (target <= 0.6)"
    )


def layer_table(
    name: str, kernel: np.ndarray, m: int, stride: int, rounds: int, power_steps: int = 100
) -> None:
    """One layer: circular exact, zero-padded converged, and the other constructions."""
    k = kernel.shape[0]
    channels, filters = kernel.shape[2], kernel.shape[3]
    print(f"== {name}: {k}x{k}x{channels}x{filters} on {m}x{m}, stride {stride} ==")
    circular = stridedop.ConvOperator(kernel, (m, m, channels), padding="circular", stride=stride)
    zeros = stridedop.ConvOperator(kernel, (m, m, channels), padding="same", stride=stride)
    grid = bound_grid(zeros)
    functions: dict[str, Callable[[], Any]] = {
        "circular: stridedop norm (exact)": circular.norm,
        "zeros: stridedop norm (1e-10)": zeros.norm,
        f"zeros: power iteration x{power_steps}": lambda: power_iteration(zeros, power_steps),
        "zeros: stridedop norm_bounds": zeros.norm_bounds,
        "reshape (torch spectral_norm)": lambda: reshaped_norm(kernel),
        f"Gram iteration bound, grid {grid[0]}": lambda: gram_bound(kernel, grid),
        "Singla-Feizi bound": lambda: singla_feizi_bound(kernel),
    }
    if stride == 1:
        functions[f"circular: textbook FFT+SVD, {m}x{m}"] = lambda: float(
            textbook_svdvals(kernel, (m, m)).max()
        )
    best, values = interleaved(functions, rounds)
    exact_zero = values["zeros: stridedop norm (1e-10)"]
    lower, upper = values["zeros: stridedop norm_bounds"]
    baseline = best[f"zeros: power iteration x{power_steps}"]
    print(f"  {'method':40s} {'value':>12s} {'- zeros exact':>14s} {'time':>12s} {'/ power':>8s}")
    for method, seconds in best.items():
        value = values[method]
        if method == "zeros: stridedop norm_bounds":
            shown = f"{lower:12.4f}..{upper:.4f}"
            difference = f"upper/lower-1 = {upper / lower - 1:.2e}"
        else:
            shown, difference = f"{value:12.4f}", f"{value - exact_zero:+14.4f}"
        print(f"  {method:40s} {shown} {difference} {milliseconds(seconds)} {seconds / baseline:8.2f}")


def zero_padding_target(seeds: int, rounds: int) -> None:
    """norm(2) to 1e-10 against 100 power steps on several random 5x5x64x64 kernels on 12x12."""
    print(
        f"== Target: zero padding ('same') 5x5x64x64 on 12x12, norm(2) to 1e-10 vs 100 power steps, "
        f"{seeds} kernels =="
    )
    print(
        f"  {'seed':>4s} {'Lanczos steps':>13s} {'norm(2)':>16s} {'power x100 error':>17s} {'time ratio':>11s}"
    )
    ratios = []
    for seed in range(seeds):
        kernel = np.random.default_rng(seed).standard_normal((5, 5, 64, 64))
        op = stridedop.ConvOperator(kernel, (12, 12, 64), padding="same")
        _, _, steps = _spectral.lanczos_norm(_spectral.linear_map_of(op))
        best, values = interleaved({"norm": op.norm, "power": lambda: power_iteration(op)}, rounds)
        ratios.append(best["norm"] / best["power"])
        error = (values["norm"] - values["power"]) / values["norm"]
        print(f"  {seed:4d} {steps:13d} {values['norm']:16.10f} {error:17.1e} {ratios[-1]:11.2f}")
    print(f"  median time ratio {np.median(ratios):.2f}, worst {max(ratios):.2f}  (target <= 1)")


RESNET18 = [
    # name, k, C, F, input size, stride
    ("conv1", 7, 3, 64, 224, 2),
    ("layer1 3x3", 3, 64, 64, 56, 1),
    ("layer2 3x3 down", 3, 64, 128, 56, 2),
    ("layer2 1x1 down", 1, 64, 128, 56, 2),
    ("layer2 3x3", 3, 128, 128, 28, 1),
    ("layer3 3x3 down", 3, 128, 256, 28, 2),
    ("layer3 1x1 down", 1, 128, 256, 28, 2),
    ("layer3 3x3", 3, 256, 256, 14, 1),
    ("layer4 3x3 down", 3, 256, 512, 14, 2),
    ("layer4 1x1 down", 1, 256, 512, 14, 2),
    ("layer4 3x3", 3, 512, 512, 7, 1),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the ResNet-18 layers wider than 28x28")
    parser.add_argument("--seeds", type=int, default=10, help="kernels for the zero-padding target")
    parser.add_argument("--targets", action="store_true", help="only the two timing targets")
    arguments = parser.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except ImportError:
        pass
    circular_target(arguments.rounds)
    zero_padding_target(arguments.seeds, arguments.rounds)
    if arguments.targets:
        return
    rng = np.random.default_rng(1)
    # the lip4conv notebook's case: a random 64 -> 64 5x5 kernel on 12x12 (standard normal entries,
    # the scale of the notebook's figures: exact circular about 80)
    kernel = rng.standard_normal((5, 5, 64, 64))
    layer_table("lip4conv", kernel, 12, 1, arguments.rounds)
    for name, k, channels, filters, size, stride in RESNET18:
        if arguments.quick and size > 28:
            continue
        kernel = rng.standard_normal((k, k, channels, filters)) * math.sqrt(2 / (k * k * channels))
        layer_table(f"ResNet-18 {name}", kernel, size, stride, 1 if size * k > 300 else arguments.rounds)


if __name__ == "__main__":
    main()
