"""The optional Dask/zarr scale-out: to_dask, materialize into zarr, op @ dask_array.

Every result is compared with the in-memory one (`materialize`, `op @ x`), which the other test
modules check against loop oracles.
"""

import importlib
import itertools
import pickle
import sys

import numpy as np
import pytest

import stridedop
from stridedop._cli import main
from stridedop._modes import PADDING_MODES, affine_runs

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")

MODES = ("zeros", "circular", "reflect", "replicate")
GEOMETRIES = [  # (channels-last kernel shape (*k, C // groups, F), input spatial shape, geometry)
    ((3, 2, 2, 6), (9, 8), dict(padding="same", groups=2)),
    ((2, 3, 2, 6), (8, 9), dict(padding=[(2, 1), (0, 3)], stride=(2, 1), dilation=(1, 2), groups=2)),
    ((4, 2, 3), (11,), dict(padding="same", stride=3)),  # even kernel, stride larger than its halo
    ((2, 2, 2, 2, 3), (5, 6, 4), dict(padding="full", dilation=2)),
]


# Each geometry in one layout: both layouts are covered, and the test count stays small.
CASES = [(0, "channels_last"), (1, "channels_first"), (2, "channels_last"), (3, "channels_first")]


@pytest.fixture(autouse=True)
def synchronous_scheduler():
    with dask.config.set(scheduler="synchronous"):
        yield


def make_operator(kernel_shape, spatial, geometry, mode, layout="channels_last", dtype=np.float64, seed=0):
    """A random operator; `kernel_shape` is channels-last, moved to `layout` here."""
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal(kernel_shape)
    if np.dtype(dtype).kind == "c":
        kernel = kernel + 1j * rng.standard_normal(kernel_shape)
    kernel = kernel.astype(dtype)
    channels = kernel_shape[-2] * geometry.get("groups", 1)
    input_shape = (*spatial, channels)
    if layout == "channels_first":
        n = len(spatial)
        kernel = kernel.transpose(n + 1, n, *range(n))
        input_shape = (channels, *spatial)
    return stridedop.ConvOperator(kernel, input_shape, padding_mode=mode, layout=layout, **geometry)


def chunks_holding_nonzeros(dense, chunks):
    """How many chunks of a regular grid over `dense` hold a non-zero."""
    grid = [range(0, size, chunk) for size, chunk in zip(dense.shape, chunks)]
    return sum(
        bool(dense[tuple(slice(s, s + c) for s, c in zip(start, chunks))].any())
        for start in itertools.product(*grid)
    )


def directions(op):
    return {"op": op, "op.H": op.H, "op.T": op.transpose()}


# -- helpers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("pads", [(0, 0), (2, 3), (7, 6)])
@pytest.mark.parametrize("stride", [1, 2])
def test_affine_runs_rebuild_the_sources(mode, size, pads, stride):
    positions = np.arange(-pads[0], size + pads[1]) * stride
    sources = PADDING_MODES[mode].source(positions, size)
    rebuilt = np.full(len(sources), -1)
    for start, count, first, slope in affine_runs(sources, sources >= 0):
        rebuilt[start : start + count] = first + slope * np.arange(count)
    np.testing.assert_array_equal(rebuilt, np.where(sources >= 0, sources, -1))


# -- to_dask ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("case", "layout"), CASES)
@pytest.mark.parametrize("direction", ["op", "op.H"])
def test_to_dask_equals_the_dense_operator(mode, case, layout, direction):
    kernel_spatial, spatial, geometry = GEOMETRIES[case]
    op = directions(make_operator(kernel_spatial, spatial, geometry, mode, layout, np.complex128))[direction]
    expected = op.materialize()
    for chunks in ("auto", tuple(-(-size // 2) for size in op.shape)):
        D = op.to_dask(chunks=chunks)
        assert isinstance(D, da.Array)
        assert (D.shape, D.dtype) == (op.shape, op.dtype)
        np.testing.assert_allclose(D.compute(), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.bool_, np.uint8])
def test_to_dask_equals_the_view_exactly_and_slices(dtype):
    op = make_operator((3, 3, 2, 4), (10, 7), dict(padding="same", stride=2), "zeros", dtype=dtype)
    D = op.to_dask(chunks=(2, 3, 4, 4, 3, 2))
    np.testing.assert_array_equal(D.compute(), op.view)
    np.testing.assert_array_equal(D[2:7, :, 1].compute(), op.view[2:7, :, 1])
    np.testing.assert_array_equal(D[..., 3:5, 1:, :].compute(), op.view[..., 3:5, 1:, :])


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.complex64])
def test_to_dask_tensordot_is_the_convolution(dtype):
    rng = np.random.default_rng(4)
    op = make_operator((3, 2, 2, 3), (7, 6), dict(padding="same"), "circular", dtype=dtype)
    x = (rng.standard_normal(op.input_shape) * 3).astype(dtype)
    D = op.to_dask(chunks=(3, 2, 3, 4, 3, 2))
    result = da.tensordot(D, da.from_array(x, chunks=3), 3).compute()
    np.testing.assert_allclose(result, np.tensordot(op.materialize(), x, 3), rtol=1e-5)


def test_to_dask_blocks_outside_the_band_do_no_work(monkeypatch):
    import stridedop._dense

    op = make_operator((3, 3, 2, 4), (16, 16), dict(padding="same"), "zeros")
    chunks = (4, 4, 4, 4, 4, 1)
    D = op.to_dask(chunks=chunks)
    dense = op.materialize()
    writes = []
    original = stridedop._dense.strided_view
    monkeypatch.setattr(stridedop._dense, "strided_view", lambda *a: writes.append(1) or original(*a))
    empty = 0
    for index in itertools.product(*[range(n) for n in D.numblocks]):
        writes.clear()
        block = D.blocks[index].compute()
        expected = dense[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))]
        np.testing.assert_array_equal(block, expected)
        assert bool(writes) == bool(expected.any())  # no assignment at all outside the band
        empty += not writes
    assert empty > D.npartitions / 2


@pytest.mark.parametrize("chunks", ["auto", (2, 2, 64, 2, 2, 64)])
def test_to_dask_graph_holds_the_kernel_once(chunks):
    cloudpickle = pytest.importorskip("cloudpickle")
    op = make_operator((3, 3, 64, 64), (16, 16), dict(padding="same"), "zeros")  # a 295 KB kernel
    kernel_bytes = op._kernel.nbytes
    D = op.to_dask(chunks=chunks)
    assert len(cloudpickle.dumps(D.__dask_graph__())) <= kernel_bytes + 64 * 2**10
    # Materialized for a scheduler: one small task per block, the kernel still once.
    tasks = len(pickle.dumps(dict(op.to_dask(chunks=chunks).__dask_graph__())))
    assert tasks <= kernel_bytes + 64 * 2**10 + 256 * D.npartitions < 2 * kernel_bytes + 256 * D.npartitions


# -- op @ dask_array ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("case", "layout"), CASES)
@pytest.mark.parametrize("direction", ["op", "op.H"])
@pytest.mark.parametrize("spatial_chunk", [1, 4])  # 1: less than the halo, so blocks are merged
def test_apply_to_a_dask_array_equals_the_in_memory_result(mode, case, layout, direction, spatial_chunk):
    kernel_spatial, spatial, geometry = GEOMETRIES[case]
    op = directions(make_operator(kernel_spatial, spatial, geometry, mode, layout))[direction]
    rng = np.random.default_rng(case)
    x = rng.standard_normal((5, *op.input_shape))
    chunks = (2, *[spatial_chunk] * len(op.input_shape))
    result = op @ da.from_array(x, chunks=chunks)
    assert isinstance(result, da.Array)
    assert result.shape == (5, *op.output_shape)
    np.testing.assert_allclose(result.compute(), op @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128, np.int32])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_apply_dtypes_and_batch_shapes(dtype, batch):
    rng = np.random.default_rng(1)
    op = make_operator((3, 3, 2, 3), (9, 7), dict(padding="same", stride=2), "reflect", dtype=dtype)
    x = (rng.standard_normal((*batch, *op.input_shape)) * 4).astype(dtype)
    for operator, data in ((op, x), (op.H, op @ x)):
        result = operator @ da.from_array(data, chunks=2)
        expected = operator @ data
        assert result.dtype == expected.dtype
        np.testing.assert_allclose(result.compute(), expected, rtol=1e-5)


def test_apply_keeps_batch_chunks_independent_and_is_lazy():
    op = make_operator((3, 3, 2, 3), (8, 8), dict(padding="same"), "circular")
    calls = []

    def source(block_id=None):
        calls.append(block_id)
        return np.ones((2, 8, 8, 2))

    x = da.map_blocks(source, chunks=((2, 2, 2), (8,), (8,), (2,)), dtype=float, meta=np.empty((0,) * 4))
    y = op @ x
    assert not calls  # nothing computed yet
    assert y.chunks[0] == (2, 2, 2)
    y.blocks[1].compute()
    assert [block_id[0] for block_id in calls] == [1]


def test_apply_with_kernels_wider_than_the_input():
    rng = np.random.default_rng(2)
    for mode, pads in (("circular", [(4, 6)]), ("replicate", [(4, 6)]), ("reflect", [(2, 2)])):
        op = stridedop.ConvOperator(rng.standard_normal((5, 1, 2)), (3, 1), padding=pads, padding_mode=mode)
        for operator in (op, op.H):
            data = rng.standard_normal((2, *operator.input_shape))
            result = operator @ da.from_array(data, chunks=1)
            np.testing.assert_allclose(result.compute(), operator @ data, rtol=1e-12)


def test_apply_algebra_results():
    rng = np.random.default_rng(3)
    op = make_operator((3, 3, 2, 2), (8, 8), dict(padding="same"), "zeros")
    strided = make_operator((3, 3, 2, 2), (8, 8), dict(padding="same", stride=2), "reflect")
    for operator in (op + 2 * op, strided.H @ strided, op - op.H, (strided @ op).H, strided @ op):
        x = rng.standard_normal(operator.input_shape)
        result = operator @ da.from_array(x, chunks=3)
        np.testing.assert_allclose(result.compute(), operator @ x, rtol=1e-12, atol=1e-12)


def test_apply_checks_shape_and_dtype():
    op = make_operator((3, 3, 2, 2), (8, 8), dict(padding="same"), "zeros")
    with pytest.raises(ValueError, match=r"`x` must have shape \(8, 8, 2\)"):
        op @ da.zeros((8, 7, 2), chunks=4)
    with pytest.raises(TypeError, match="`x` has dtype"):
        op @ da.from_array(np.full((8, 8, 2), "a"), chunks=4)


def test_runs_on_a_distributed_cluster_with_two_processes():
    distributed = pytest.importorskip("dask.distributed")
    op = make_operator(
        (3, 3, 4, 6), (12, 10), dict(padding="same", stride=(2, 1)), "reflect", dtype=np.float32
    )
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, *op.input_shape)).astype(np.float32)
    with dask.config.set(scheduler=None):
        with (
            distributed.LocalCluster(
                n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            D = op.to_dask(chunks=(3, 5, 6, 6, 5, 4))
            y = op @ da.from_array(x, chunks=(1, 6, 5, 4))
            z = op.H @ y
            dense, applied, adjoint = client.compute([D, y, z], sync=True)
    np.testing.assert_allclose(dense, op.materialize(), rtol=1e-6)
    np.testing.assert_allclose(applied, op @ x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(adjoint, op.H @ (op @ x), rtol=1e-4, atol=1e-3)


# -- zarr -----------------------------------------------------------------------------------------------
def new_zarr(shape, chunks, dtype, fill_value=0):
    chunks = (chunks,) * len(shape) if isinstance(chunks, int) else chunks
    return zarr.open_array(store={}, mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=fill_value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("direction", ["op", "op.H"])
def test_materialize_into_zarr_writes_only_the_band(mode, direction):
    op = directions(make_operator((3, 3, 2, 4), (10, 9), dict(padding="same"), mode))[direction]
    expected = op.materialize()
    chunks = (3, 3, 4, 3, 3, 2) if direction == "op" else (3, 3, 2, 3, 3, 4)
    z = new_zarr(op.shape, chunks, op.dtype)
    assert stridedop.materialize(op, out=z) is z
    np.testing.assert_allclose(z[...], expected, rtol=1e-14, atol=1e-14)
    assert z.nchunks_initialized == chunks_holding_nonzeros(expected, chunks)
    assert z.nchunks_initialized < z.nchunks * (0.8 if mode == "circular" else 0.5)


@pytest.mark.parametrize("kind", ["view", "adjoint view", "array", "circular view"])
def test_materialize_views_and_arrays_into_zarr(kind):
    op = make_operator((3, 3, 2, 4), (16, 14), dict(padding="same", stride=2), "zeros")
    source = {
        "view": op.view,
        "adjoint view": op.H.view,
        "array": op.materialize(),
        "circular view": make_operator((3, 3, 2, 4), (16, 14), dict(padding="same"), "circular").view,
    }[kind]
    z = new_zarr(source.shape, 3, source.dtype)
    stridedop.materialize(source, out=z)
    np.testing.assert_array_equal(z[...], source)
    assert z.nchunks_initialized < z.nchunks


def test_materialize_into_zarr_with_a_non_zero_fill_value_writes_every_chunk():
    op = make_operator((3, 3, 2, 4), (6, 5), dict(padding="valid"), "zeros")
    z = new_zarr(op.shape, 2, op.dtype, fill_value=7.0)
    op.materialize(out=z)
    np.testing.assert_array_equal(z[...], op.view)


def test_materialize_into_zarr_checks_out():
    op = make_operator((3, 3, 2, 4), (6, 5), dict(padding="valid"), "zeros")
    with pytest.raises(ValueError, match="`out` has shape"):
        stridedop.materialize(op, out=new_zarr((2, 2), 1, op.dtype))
    with pytest.raises(TypeError, match="`out` has dtype"):
        stridedop.materialize(op, out=new_zarr(op.shape, 2, np.float32))
    with pytest.raises(ValueError, match="`max_bytes`"):
        stridedop.materialize(op, out=new_zarr(op.shape, 2, op.dtype), max_bytes=-1)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_default_zarr_chunks_split_the_spatial_axes_first(layout):
    from stridedop._dask import operator_chunks

    op = make_operator((3, 3, 16, 16), (64, 64), dict(padding="valid"), "zeros", layout, np.float32)
    chunks = operator_chunks(op)
    assert np.prod(chunks) * 4 <= 2**20
    whole = [chunk for chunk, size in zip(chunks, op.shape) if chunk == size]
    assert whole == [16, 16]  # filters and channels stay whole
    spatial = [chunk for chunk in chunks if chunk < 16]
    assert len(spatial) == 4 and max(spatial) <= 2 * min(spatial)
    assert operator_chunks(op, target=1) == (1,) * 6


def save_kernel(tmp_path, shape=(3, 3, 2, 4)):
    path = tmp_path / "kernel.npy"
    np.save(path, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    return path


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_cli_materialize_writes_a_zarr_store(tmp_path, capsys, mode):
    kernel = save_kernel(tmp_path)
    output = tmp_path / "op.zarr"
    argv = ["materialize", str(kernel), "--input", "12x10x2", "--padding", "same", "--padding-mode", mode]
    op = stridedop.ConvOperator(np.load(kernel), (12, 10, 2), padding="same", padding_mode=mode)
    assert main([*argv, "--output", str(output), "--chunks", "4x4x4x4x4x2"]) == 0
    holding = chunks_holding_nonzeros(op.materialize(), (4, 4, 4, 4, 4, 2))
    assert f"{holding} of 81 chunks stored" in capsys.readouterr().out
    stored = zarr.open_array(str(output), mode="r")
    assert stored.chunks == (4, 4, 4, 4, 4, 2)
    np.testing.assert_allclose(stored[...], op.materialize(), rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel.npy", "op.zarr"]
    assert main([*argv, "--output", str(output)]) == 0  # default chunks; replaces the store
    np.testing.assert_allclose(zarr.open_array(str(output), mode="r")[...], op.materialize(), rtol=1e-6)


@pytest.mark.parametrize("existing", [False, True])
def test_cli_zarr_failure_leaves_no_store_that_looks_complete(tmp_path, capsys, monkeypatch, existing):
    from stridedop._dask import DenseBlocks

    kernel = save_kernel(tmp_path)
    output = tmp_path / "op.zarr"
    argv = [
        "materialize",
        str(kernel),
        "--input",
        "12x10x2",
        "--output",
        str(output),
        "--chunks",
        "2x2x4x4x4x2",
    ]
    if existing:
        assert main(argv) == 0
    before = zarr.open_array(str(output), mode="r")[...] if existing else None
    written = []
    original = DenseBlocks.block

    def failing(self, bounds):
        if len(written) == 5:
            raise OSError("disk full (simulated)")
        written.append(bounds)
        return original(self, bounds)

    monkeypatch.setattr(DenseBlocks, "block", failing)
    assert main([*argv, "--padding", "same"]) == 1
    assert "disk full (simulated)" in capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["kernel.npy", "op.zarr"] if existing else ["kernel.npy"])  # no temporary left
    if existing:  # the old store is untouched
        np.testing.assert_array_equal(zarr.open_array(str(output), mode="r")[...], before)


def test_cli_zarr_interrupt_removes_the_temporary_store(tmp_path, monkeypatch):
    from stridedop._dask import DenseBlocks

    kernel = save_kernel(tmp_path)
    monkeypatch.setattr(DenseBlocks, "block", lambda self, bounds: (_ for _ in ()).throw(KeyboardInterrupt))
    argv = ["materialize", str(kernel), "--input", "12x10x2", "--output", str(tmp_path / "op.zarr")]
    assert main(argv) == 130  # Ctrl-C: the CLI's exit code, one line, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel.npy"]


@pytest.mark.parametrize("chunks", ["4x4x4", "4x0x4x4x4x2"])
def test_cli_zarr_rejects_bad_chunks(tmp_path, capsys, chunks):
    kernel = save_kernel(tmp_path)
    argv = ["materialize", str(kernel), "--input", "12x10x2", "--output", str(tmp_path / "op.zarr")]
    assert main([*argv, "--chunks", chunks]) == 1
    assert "`chunks` must give one positive size per axis" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel.npy"]


def test_sigterm_while_writing_raises_so_that_the_cleanup_runs():
    import os
    import signal
    import time

    from stridedop._dask import _signals_raise

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info, _signals_raise():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler at once
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


# -- without the extra --------------------------------------------------------------------------------
def test_missing_dask_names_the_extra(monkeypatch, tmp_path, capsys):
    op = make_operator((3, 3, 2, 4), (6, 5), dict(padding="valid"), "zeros")
    for module in ("dask", "dask.array", "zarr"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails
    with pytest.raises(ImportError, match=r"`to_dask` needs dask.*pip install stridedop\[dask\]"):
        op.to_dask()
    kernel = save_kernel(tmp_path)
    assert main(["materialize", str(kernel), "--input", "12x10x2", "--output", str(tmp_path / "x.zarr")]) == 1
    assert "pip install stridedop[dask]" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()
    monkeypatch.undo()
    importlib.import_module("dask.array")  # still importable afterwards


@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect"])
@pytest.mark.parametrize("lo", [2**40, 2**63])
def test_padding_past_memory_is_a_memory_error(lo, padding_mode):
    # The graph lays the padded border out entry by entry: past memory a descriptive MemoryError
    # (at 2**63, circular padding gave a silently wrong adjoint).
    options = {"padding": [(lo, 0)], "stride": lo, "padding_mode": padding_mode}
    op = stridedop.ConvOperator(np.ones((1, 1, 1)), (3, 1), **options)
    with pytest.raises(MemoryError, match="laid out entry by entry"):
        op @ da.ones((3, 1), chunks=1)
    with pytest.raises(MemoryError, match="laid out entry by entry"):
        op.H @ da.ones(op.output_shape, chunks=1)
