"""Figures for the Dask scale-out (issue 14): graph size, block peak, zarr output, op @ x on a cluster.

Run one figure at a time (each measurement that reports memory runs in a fresh subprocess):

    OPENBLAS_NUM_THREADS=1 python benchmarks/dask_figures.py graph
    OPENBLAS_NUM_THREADS=1 python benchmarks/dask_figures.py block
    OPENBLAS_NUM_THREADS=1 python benchmarks/dask_figures.py zarr [--rounds 2] [--folder /tmp]
    OPENBLAS_NUM_THREADS=1 python benchmarks/dask_figures.py apply [--side 1024] [--chunk 256]

The operator of the targets is 3x3x16x16 on 64x64x16, float32, 'valid' (shape
(62, 62, 16, 64, 64, 16): 4.03e9 entries, 16.1 GB dense).
"""

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stridedop  # noqa: E402
from stridedop._dask import DenseBlocks, operator_chunks, write_zarr_store  # noqa: E402

KERNEL, INPUT = (3, 3, 16, 16), (64, 64, 16)


def target_operator(kernel_shape=KERNEL, input_shape=INPUT):
    kernel = np.random.default_rng(0).standard_normal(kernel_shape).astype(np.float32)
    return stridedop.ConvOperator(kernel, input_shape)


def current_rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def mib(count):
    return f"{count / 2**20:,.1f} MiB"


# -- graph ------------------------------------------------------------------------------------------
def graph_figure(_):
    import cloudpickle

    for kernel_shape, input_shape in ((KERNEL, INPUT), ((3, 3, 64, 64), (64, 64, 64))):
        op = target_operator(kernel_shape, input_shape)
        for chunks in ("auto", operator_chunks(op)):
            D = op.to_dask(chunks=chunks)
            high_level = len(cloudpickle.dumps(D.__dask_graph__()))  # before anything materializes it
            materialized = len(pickle.dumps(dict(op.to_dask(chunks=chunks).__dask_graph__()), protocol=5))
            limit = op._kernel.nbytes + 64 * 2**10
            print(
                f"kernel {kernel_shape} on {input_shape}: chunks {chunks!r:>24} -> {D.npartitions:6d} blocks; "
                f"pickled HighLevelGraph {high_level:,} B ({'OK' if high_level <= limit else 'OVER'}); "
                f"materialized task dict {materialized:,} B ({'OK' if materialized <= limit else 'OVER'}); "
                f"limit kernel {op._kernel.nbytes:,} B + 64 KiB = {limit:,} B"
            )


# -- one block ----------------------------------------------------------------------------------------
def block_figure(_):
    import dask

    op = target_operator()
    D = op.to_dask()  # Dask's 'auto' chunks
    blocks = DenseBlocks.of(op)
    hits = blocks.hits(D.chunks)
    sizes = [np.prod([D.chunks[axis][i] for axis, i in enumerate(index)]) for index in np.argwhere(hits)]
    index = tuple(np.argwhere(hits)[int(np.argmax(sizes))])  # the largest block in the band
    block_bytes = int(max(sizes)) * 4
    with dask.config.set(scheduler="synchronous"):  # first-call imports out of the measurement
        op.to_dask(chunks=8).blocks[0, 0, 0, 0, 0, 0].compute()
    for how in ("DenseBlocks.block", "D.blocks[i].compute()"):
        tracemalloc.start()
        start = time.perf_counter()
        if how == "DenseBlocks.block":
            edges = [np.cumsum([0, *c]) for c in D.chunks]
            block = blocks.block([(int(e[i]), int(e[i + 1])) for e, i in zip(edges, index)])
        else:
            with dask.config.set(scheduler="synchronous"):
                block = D.blocks[index].compute()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert block.nbytes == block_bytes
        print(
            f"{how:>24}: block {index} of {D.numblocks}, {mib(block_bytes)}; traced peak {mib(peak)} = "
            f"{peak / block_bytes:.2f}x the block (target <= 2.5x); {elapsed:.2f} s"
        )
        del block


# -- zarr -------------------------------------------------------------------------------------------
def _measure_in_memory():
    op = target_operator()
    before = current_rss()
    start = time.perf_counter()
    dense = op.materialize()
    elapsed = time.perf_counter() - start
    touched = current_rss() - before
    checksum = float(dense[::7, ::5, :, ::3, ::3].sum(dtype=np.float64))
    return {
        "seconds": elapsed,
        "rss_increase": touched,
        "peak_increase": peak_rss() - before,
        "sum": checksum,
    }


def _measure_zarr(folder):
    import zarr

    op = target_operator()
    chunks = operator_chunks(op)
    path = os.path.join(folder, "operator.zarr")
    before = current_rss()
    start = time.perf_counter()
    write_zarr_store(path, op, chunks)
    elapsed = time.perf_counter() - start
    peak = peak_rss() - before
    stored = sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
    )
    array = zarr.open_array(path, mode="r")
    written = array.nchunks_initialized
    checksum = float(array[::7, ::5, :, ::3, ::3].sum(dtype=np.float64))
    shutil.rmtree(path)
    return {
        "seconds": elapsed,
        "peak_increase": peak,
        "stored": stored,
        "chunks": list(chunks),
        "chunk_bytes": int(np.prod(chunks)) * 4,
        "written": written,
        "nchunks": array.nchunks,
        "sum": checksum,
    }


def _child(kind, folder):
    result = _measure_in_memory() if kind == "memory" else _measure_zarr(folder)
    print(json.dumps(result))


def _run_child(kind, folder):
    command = [sys.executable, __file__, "child", kind, "--folder", folder]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def zarr_figure(args):
    op = target_operator()
    dense = op.nbytes
    print(f"operator {op.shape} float32: dense {dense:,} B ({dense / 1e9:.1f} GB)")
    folder = tempfile.mkdtemp(dir=args.folder)
    memory, stored = [], []
    try:
        for round_ in range(args.rounds):  # interleaved, each in a fresh process
            memory.append(_run_child("memory", folder))
            stored.append(_run_child("zarr", folder))
            print(
                f"round {round_}: in memory {memory[-1]['seconds']:.2f} s, zarr {stored[-1]['seconds']:.2f} s"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    best_memory = min(result["seconds"] for result in memory)
    best_zarr = min(result["seconds"] for result in stored)
    z = stored[0]
    assert all(np.isclose(a["sum"], b["sum"], rtol=1e-5) for a, b in zip(memory, stored)), "contents differ"
    print(
        f"in-memory materialize: {best_memory:.2f} s (min of {args.rounds}); RSS touched {mib(memory[0]['rss_increase'])}"
    )
    print(
        f"zarr store:            {best_zarr:.2f} s (min of {args.rounds}) = {best_zarr / best_memory:.2f}x in-memory "
        f"(target <= 1.5x)"
    )
    print(
        f"  chunks {tuple(z['chunks'])} ({mib(z['chunk_bytes'])}); {z['written']} of {z['nchunks']} chunks written"
    )
    print(f"  stored {z['stored']:,} B = {z['stored'] / dense:.3%} of dense (target <= 10%)")
    limit = 3 * z["chunk_bytes"] + 100 * 2**20
    print(
        f"  peak RSS increase {mib(max(r['peak_increase'] for r in stored))} "
        f"(target <= 3 chunks + 100 MB = {mib(limit)})"
    )
    print("  contents: strided sample sums of the store and the in-memory array agree")


# -- op @ x on a cluster --------------------------------------------------------------------------
def apply_figure(args):
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    side, chunk = args.side, args.chunk
    kernel = np.random.default_rng(1).standard_normal((3, 3, 3, 1, 1)).astype(np.float32)
    op = stridedop.ConvOperator(kernel, (side, side, side, 1), padding="same")
    x = da.random.default_rng(2).standard_normal((side, side, side, 1), chunks=(chunk, chunk, chunk, 1))
    x = x.astype(np.float32)
    print(
        f"input {x.shape} float32: {x.nbytes / 1e9:.2f} GB in {x.npartitions} chunks of {mib(x.nbytes / x.npartitions)}"
    )
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"cluster: 2 worker processes, 1 thread and {args.memory} of memory each")
        y = op @ x
        samples = [(0, 0, 0, 0), tuple(n // 2 for n in y.numblocks[:3]) + (0,)]
        start = time.perf_counter()
        total, *blocks = client.compute([y.sum(dtype=np.float64), *[y.blocks[i] for i in samples]], sync=True)
        elapsed = time.perf_counter() - start
        print(f"op @ x computed in full (sum {total:.6g}) in {elapsed:.1f} s")
        for index, block in zip(samples, blocks):
            expected = _reference_block(op, x, y, index, client)
            error = np.max(np.abs(block - expected)) / np.max(np.abs(expected))
            print(f"  block {index}: max relative difference from the in-memory result {error:.2e}")
        peaks = client.run(peak_rss)  # each worker process's peak resident memory
        print(f"  worker peak RSS: {', '.join(mib(p) for p in peaks.values())} (limit {args.memory} each)")


def _reference_block(op, x, y, index, client):
    """The in-memory result for one output block: the 'valid' operator on its zero-padded region."""
    geometry = op._geometry
    bounds = [sum(y.chunks[axis][: index[axis]]) for axis in range(3)]
    stops = [bounds[axis] + y.chunks[axis][index[axis]] for axis in range(3)]
    region = []
    pads = []
    for axis, first, stop in zip(geometry.axes, bounds, stops):
        low, high = first * axis.stride - axis.lo, (stop - 1) * axis.stride - axis.lo + axis.extent
        region.append(slice(max(low, 0), min(high, axis.size)))
        pads.append((max(0, -low), max(0, high - axis.size)))
    data = client.compute(x[tuple(region)], sync=True)
    data = np.pad(data, [*pads, (0, 0)])
    valid = stridedop.ConvOperator(op._kernel, data.shape, padding="valid")
    return valid @ data


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("figure", choices=("graph", "block", "zarr", "apply", "child"))
    parser.add_argument("kind", nargs="?")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--folder", default=tempfile.gettempdir())
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--memory", default="1GB")
    args = parser.parse_args()
    if args.figure == "child":
        return _child(args.kind, args.folder)
    {"graph": graph_figure, "block": block_figure, "zarr": zarr_figure, "apply": apply_figure}[args.figure](
        args
    )


if __name__ == "__main__":
    main()
