import numpy as np
import pytest
from oracles import loop_operator

import stridedop


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": "same"},
        {"padding": [(2, 0), (0, 3)], "stride": (2, 1)},
        {"padding": "full", "dilation": (1, 2)},
        {"padding": "circular"},
        {"groups": 2},
        {"layout": "channels_first", "padding": "same", "stride": 2},
    ],
)
def test_materialize_equals_the_view_and_owns_its_memory(kwargs):
    rng = np.random.default_rng(0)
    layout = kwargs.get("layout", "channels_last")
    kernel = rng.standard_normal((3, 2, 2, 4) if layout == "channels_last" else (4, 2, 3, 2))
    channels = 2 * kwargs.get("groups", 1)
    shape = (5, 4, channels) if layout == "channels_last" else (channels, 5, 4)
    W = stridedop.conv_view(kernel, shape, **kwargs)
    dense = stridedop.materialize(W)
    np.testing.assert_array_equal(dense, W)
    assert dense.dtype == W.dtype
    assert dense.flags.writeable and dense.flags.c_contiguous and dense.flags.owndata
    dense[...] = 1  # a real copy: the view is unchanged
    assert not np.all(np.asarray(W) == 1)


def test_materialize_writes_only_kernel_entries_correctly_for_every_dtype():
    for dtype in (np.bool_, np.int8, np.uint16, np.float16, np.float32, np.complex64, np.longdouble):
        kernel = (np.arange(12) % 3 + 1).reshape(2, 2, 3, 1).astype(dtype)
        W = stridedop.conv_view(kernel, (4, 3, 3), padding="same")
        dense = stridedop.materialize(W)
        assert dense.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(dense, loop_operator(kernel, (4, 3), padding="same"))


def test_materialize_slices_transposes_and_plain_arrays():
    W = stridedop.conv_view(np.arange(1.0, 9.0).reshape(2, 2, 1, 2), (4, 3, 1))
    for a in (W[1:, ::2], W.T, np.moveaxis(W, 2, 0), W[..., 0], np.arange(6.0).reshape(2, 3)):
        dense = stridedop.materialize(a)
        np.testing.assert_array_equal(dense, a)
        assert dense.flags.c_contiguous and dense.flags.owndata and dense.flags.writeable


def test_materialize_an_operator_and_its_adjoint():
    op = stridedop.ConvOperator(np.arange(1.0, 7.0).reshape(3, 2, 1) + 1j, (5, 2), padding="same")
    np.testing.assert_array_equal(stridedop.materialize(op), op.view)
    np.testing.assert_array_equal(op.materialize(), op.view)
    np.testing.assert_array_equal(op.H.materialize(), np.asarray(op.view).conj().transpose(2, 3, 0, 1))


def test_out_fills_and_returns_the_given_array(tmp_path):
    W = stridedop.conv_view(np.ones((2, 2, 3)), (5, 2), padding=1)
    out = np.full(W.shape, 7.0)
    assert stridedop.materialize(W, out=out) is out
    np.testing.assert_array_equal(out, W)  # stale values were cleared


def test_out_can_be_a_memory_map(tmp_path):
    W = stridedop.conv_view(np.arange(1.0, 13.0).reshape(3, 2, 2), (6, 2), stride=2)
    path = tmp_path / "operator.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=W.dtype, shape=W.shape)
    stridedop.materialize(W, out=out)
    out.flush()
    del out
    np.testing.assert_array_equal(np.load(path), W)


def test_out_in_fortran_order_is_filled_correctly():
    W = stridedop.conv_view(np.arange(1.0, 5.0).reshape(2, 1, 2), (3, 1))
    out = np.asfortranarray(np.full(W.shape, -1.0))
    stridedop.materialize(W, out=out)
    np.testing.assert_array_equal(out, W)


@pytest.mark.parametrize(
    ("out", "error", "match"),
    [
        (
            np.zeros((2, 2)),
            ValueError,
            r"`out` has shape \(2, 2\), but the array to materialize has \(3, 1, 4, 1\)",
        ),
        (np.zeros((3, 1, 4, 1), np.float32), TypeError, r"`out` has dtype float32, but .* has float64"),
        ([[0.0]], TypeError, r"`out` must be a numpy.ndarray or numpy.memmap, got list"),
    ],
)
def test_bad_out_is_refused(out, error, match):
    W = stridedop.conv_view(np.ones((2, 1, 1)), (4, 1))
    with pytest.raises(error, match=match):
        stridedop.materialize(W, out=out)


def test_read_only_out_is_refused():
    W = stridedop.conv_view(np.ones((2, 1, 1)), (4, 1))
    out = np.zeros(W.shape)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="`out` is read-only"):
        stridedop.materialize(W, out=out)


def test_max_bytes_guard_names_both_sizes_and_the_alternatives():
    W = stridedop.conv_view(np.ones((3, 3, 16, 16)), (32, 32, 16))
    with pytest.raises(MemoryError) as info:
        stridedop.materialize(W, max_bytes=2**20)
    message = str(info.value)
    assert "1887436800 bytes" in message and "1048576 bytes" in message
    assert "out=" in message and "op @ x" in message and "to_sparse()" in message


def test_default_guard_is_the_available_memory(monkeypatch):
    monkeypatch.setattr("stridedop._dense.available_memory", lambda: 1000)
    W = stridedop.conv_view(np.ones((2, 1, 1)), (100, 1))
    with pytest.raises(MemoryError, match=r"more than the 1000 B \(1000 bytes\) of memory available"):
        stridedop.materialize(W)


def test_guard_refuses_an_operator_larger_than_any_machine_quickly():
    # 3x3x16x16 on a 256x256x16 input: 3.94 TiB dense (a 17 MiB buffer); refused before allocating.
    op = stridedop.ConvOperator(np.ones((3, 3, 16, 16), np.float32), (256, 256, 16))
    with pytest.raises(MemoryError, match=r"needs 3.94 TiB \(4329595469824 bytes\)"):
        op.materialize()
    with pytest.raises(MemoryError, match=r"needs 3.94 TiB \(4329595469824 bytes\)"):
        op.to_matrix()


@pytest.mark.parametrize("max_bytes", [-1, 1.5, "1GB", True])
def test_bad_max_bytes_is_refused(max_bytes):
    W = stridedop.conv_view(np.ones((2, 1, 1)), (4, 1))
    with pytest.raises(ValueError, match="`max_bytes` must be a non-negative int or None"):
        stridedop.materialize(W, max_bytes=max_bytes)
    # Issue 10, item 10: also when `out=` makes it unused.
    with pytest.raises(ValueError, match="`max_bytes` must be a non-negative int or None"):
        stridedop.materialize(W, out=np.zeros(W.shape), max_bytes=max_bytes)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": "same", "stride": 2},
        {"padding": [(3, 0), (0, 2)], "dilation": 2, "groups": 2},
        {"padding": "circular", "stride": (1, 2), "dilation": (3, 1), "groups": 2},
    ],
)
def test_threaded_writing_gives_the_same_array(monkeypatch, kwargs):
    # Force the thread pool and small chunks on a small operator.
    monkeypatch.setattr("stridedop._dense._PARALLEL_ABOVE", 0)
    monkeypatch.setattr("stridedop._dense._CHUNK_BYTES", 4096)
    kernel = np.random.default_rng(1).standard_normal((3, 2, 2, 4))
    channels = 2 * kwargs.get("groups", 1)
    W = stridedop.conv_view(kernel, (16, 9, channels), **kwargs)
    expected = loop_operator(kernel, (16, 9), **kwargs)
    np.testing.assert_array_equal(stridedop.materialize(W), expected)
    out = np.full(W.shape, np.nan)
    np.testing.assert_array_equal(stridedop.materialize(W, out=out), expected)
