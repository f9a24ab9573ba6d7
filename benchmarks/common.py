"""Shared by the benchmarks: the constructions people use today (channels-last, 'valid', 2-D) and timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def loop_fill(kernel: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Zeros, then a Python loop over output positions that fills one slice each."""
    k1, k2, _, filters = kernel.shape
    m1, m2, channels = input_shape
    W = np.zeros((m1 - k1 + 1, m2 - k2 + 1, filters, m1, m2, channels), dtype=kernel.dtype)
    block = kernel.transpose(3, 0, 1, 2)  # (F, k1, k2, C)
    for i in range(m1 - k1 + 1):
        for j in range(m2 - k2 + 1):
            W[i, j, :, i : i + k1, j : j + k2, :] = block
    return W


def loop_fill_entries(kernel: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Zeros, then a Python loop that places every kernel entry one at a time."""
    k1, k2, channels, filters = kernel.shape
    m1, m2, _ = input_shape
    W = np.zeros((m1 - k1 + 1, m2 - k2 + 1, filters, m1, m2, channels), dtype=kernel.dtype)
    for i in range(m1 - k1 + 1):
        for j in range(m2 - k2 + 1):
            for f in range(filters):
                for r in range(k1):
                    for s in range(k2):
                        for c in range(channels):
                            W[i, j, f, i + r, j + s, c] = kernel[r, s, c, f]
    return W


def advanced_index(kernel: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Zeros, then one advanced-index assignment of every kernel entry."""
    k1, k2, channels, filters = kernel.shape
    m1, m2, _ = input_shape
    o1, o2 = m1 - k1 + 1, m2 - k2 + 1
    W = np.zeros((o1, o2, filters, m1, m2, channels), dtype=kernel.dtype)
    i, j, f, r, s, c = np.ix_(*(np.arange(n) for n in (o1, o2, filters, k1, k2, channels)))
    W[i, j, f, i + r, j + s, c] = kernel[r, s, c, f]
    return W


def touch_pages(array: np.ndarray) -> None:
    """Write one element per 4 KiB page so that every page is really allocated (first touch)."""
    flat = array.reshape(-1)
    step = max(1, 4096 // array.itemsize)
    flat[::step] = flat[::step].copy()  # a copy: NumPy skips assigning an array to itself


def best_time(function: Callable[[], Any], repeat: int = 5, budget: float = 2.0) -> float:
    """Best time of one call over `repeat` rounds, each looping enough calls to last about 0.05 s.

    One warm-up call first; stops early once the rounds have taken `budget` seconds (at least 3).
    """
    function()
    start = time.perf_counter()
    function()
    single = time.perf_counter() - start
    number = max(1, int(0.05 / max(single, 1e-9)))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        times.append((time.perf_counter() - start) / number)
        if sum(times) * number > budget and len(times) >= 3:
            break
    return min(times)


def best_times(functions: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Best time of one call of each function, the functions interleaved round by round.

    On a shared, noisy machine a slow spell then hits every candidate alike instead of only the
    one being timed at that moment.
    """
    return {name: best for name, (best, _) in interleaved_times(functions, repeat).items()}


def interleaved_times(functions: dict[str, Callable[[], Any]], rounds: int) -> dict[str, tuple[float, float]]:
    """(best, median) time of one call of each function, the functions interleaved round by round."""
    numbers = {}
    for name, function in functions.items():
        function()
        start = time.perf_counter()
        function()
        numbers[name] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(numbers[name]):
                function()
            samples[name].append((time.perf_counter() - start) / numbers[name])
    return {name: (min(values), float(np.median(values))) for name, values in samples.items()}
