"""Independent oracles, written from the definitions in API.md; they share no code with stridedop."""

from __future__ import annotations

import itertools
import math

import numpy as np


def pads_for(padding, m, k, stride, dilation):
    """(lo, hi) per spatial axis from the API.md rules, written out again on purpose."""
    n = len(m)
    ke = [(k[i] - 1) * dilation[i] + 1 for i in range(n)]
    if padding == "valid":
        return [(0, 0)] * n
    if padding in ("same", "circular"):
        pairs = []
        for i in range(n):
            out = math.ceil(m[i] / stride[i])
            total = max((out - 1) * stride[i] + ke[i] - m[i], 0)
            pairs.append((total // 2, total - total // 2))
        return pairs
    if padding == "full":
        return [(e - 1, e - 1) for e in ke]
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def loop_operator(kernel, m, *, padding="valid", stride=1, dilation=1, groups=1):
    """Channels-last operator ``(*o, F, *m, C)`` by placing every kernel entry in a loop."""
    n = kernel.ndim - 2
    k, cg, filters = kernel.shape[:n], kernel.shape[n], kernel.shape[n + 1]
    stride = [stride] * n if isinstance(stride, int) else list(stride)
    dilation = [dilation] * n if isinstance(dilation, int) else list(dilation)
    pads = pads_for(padding, m, k, stride, dilation)
    channels = cg * groups
    per_group = filters // groups
    out = [(m[i] + pads[i][0] + pads[i][1] - (k[i] - 1) * dilation[i] - 1) // stride[i] + 1 for i in range(n)]
    W = np.zeros((*out, filters, *m, channels), dtype=kernel.dtype)
    for o in itertools.product(*map(range, out)):
        for r in itertools.product(*map(range, k)):
            x = [o[i] * stride[i] + r[i] * dilation[i] - pads[i][0] for i in range(n)]
            if padding == "circular":
                x = [x[i] % m[i] for i in range(n)]
            elif any(not 0 <= x[i] < m[i] for i in range(n)):
                continue
            for f in range(filters):
                for c in range(cg):
                    W[(*o, f, *x, (f // per_group) * cg + c)] += kernel[(*r, c, f)]
    return W


def index_operator(kernel, m):
    """Channels-last 'valid' operator by zeros plus one advanced-index assignment."""
    n = kernel.ndim - 2
    k, channels, filters = kernel.shape[:n], kernel.shape[n], kernel.shape[n + 1]
    out = [m[i] - k[i] + 1 for i in range(n)]
    W = np.zeros((*out, filters, *m, channels), dtype=kernel.dtype)
    grids = np.meshgrid(
        *[np.arange(v) for v in out],
        np.arange(filters),
        *[np.arange(v) for v in k],
        np.arange(channels),
        indexing="ij",
    )
    o, f, r, c = grids[:n], grids[n], grids[n + 1 : 2 * n + 1], grids[2 * n + 1]
    W[(*o, f, *[o[i] + r[i] for i in range(n)], c)] = kernel[(*r, c, f)]
    return W


def direct_convolution(x, kernel, *, padding="valid", stride=1, dilation=1, groups=1):
    """Channels-last convolution of one input ``(*m, C)`` by explicit padding and window sums."""
    n = kernel.ndim - 2
    m = x.shape[:n]
    k, cg, filters = kernel.shape[:n], kernel.shape[n], kernel.shape[n + 1]
    stride = [stride] * n if isinstance(stride, int) else list(stride)
    dilation = [dilation] * n if isinstance(dilation, int) else list(dilation)
    pads = pads_for(padding, m, k, stride, dilation)
    mode = "wrap" if padding == "circular" else "constant"
    xp = np.pad(x, [*pads, (0, 0)], mode=mode)
    out = [(xp.shape[i] - (k[i] - 1) * dilation[i] - 1) // stride[i] + 1 for i in range(n)]
    per_group = filters // groups
    y = np.zeros((*out, filters), dtype=np.result_type(x, kernel))
    for o in itertools.product(*map(range, out)):
        window = tuple(
            slice(o[i] * stride[i], o[i] * stride[i] + (k[i] - 1) * dilation[i] + 1, dilation[i])
            for i in range(n)
        )
        patch = xp[window]
        for f in range(filters):
            g = f // per_group
            y[(*o, f)] = np.sum(patch[..., g * cg : (g + 1) * cg] * kernel[..., f])
    return y
