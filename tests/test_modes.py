"""Padding modes: every mode against np.pad + a valid correlation, and against PyTorch."""

import numpy as np
import pytest
from helpers import to_channels_first_kernel
from oracles import direct_convolution, pads_for

import stridedop

NUMPY_MODES = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "replicate": "edge"}
MODES = tuple(NUMPY_MODES)

# (kernel spatial, input spatial, padding, stride, dilation): 1-D, 2-D and 3-D, odd and even kernels,
# sizes that differ per axis, explicit amounts, strides and dilations.
GEOMETRIES = [
    ((3,), (9,), "same", 1, 1),
    ((4,), (10,), ((2, 1),), 2, 1),
    ((3,), (11,), "same", 1, 2),
    ((3, 2), (7, 6), "same", 1, 1),
    ((3, 3), (8, 7), ((1, 2), (2, 0)), (2, 1), 1),
    ((2, 3), (9, 8), "same", 2, (1, 2)),
    ((3, 3), (6, 5), "full", 1, 1),
    ((2, 2, 3), (5, 4, 6), "same", 1, 1),
    ((3, 2, 2), (6, 5, 4), 1, (1, 2, 1), 1),
]


def _amounts(padding, m, k, stride, dilation):
    n = len(m)
    stride = (stride,) * n if isinstance(stride, int) else stride
    dilation = (dilation,) * n if isinstance(dilation, int) else dilation
    return pads_for(padding, m, k, stride, dilation)


def _padded_oracle(x, kernel, padding, mode, stride, dilation):
    """np.pad with the mode, then a 'valid' correlation by window sums (one input (*m, C))."""
    n = kernel.ndim - 2
    pads = _amounts(padding, x.shape[:n], kernel.shape[:n], stride, dilation)
    xp = np.pad(x, [*pads, (0, 0)], mode=NUMPY_MODES[mode])
    return direct_convolution(xp, kernel, stride=stride, dilation=dilation)


def _dense_oracle(kernel, m, channels, padding, mode, stride, dilation):
    """The operator's matrix, column by column, from the padded oracle on unit inputs."""
    size = int(np.prod(m)) * channels
    columns = []
    for j in range(size):
        unit = np.zeros(size)
        unit[j] = 1
        columns.append(_padded_oracle(unit.reshape(*m, channels), kernel, padding, mode, stride, dilation))
    return np.stack([c.ravel() for c in columns], axis=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k, m, padding, stride, dilation", GEOMETRIES)
def test_apply_and_adjoint_equal_np_pad_then_valid(mode, k, m, padding, stride, dilation):
    rng = np.random.default_rng(len(m) * 10 + len(str(padding)))
    kernel = rng.standard_normal((*k, 2, 3))
    op = stridedop.ConvOperator(
        kernel, (*m, 2), padding=padding, padding_mode=mode, stride=stride, dilation=dilation
    )
    x = rng.standard_normal(op.input_shape)
    expected = _padded_oracle(x, kernel, padding, mode, stride, dilation)
    np.testing.assert_allclose(op @ x, expected, rtol=1e-12, atol=1e-12)
    dense = _dense_oracle(kernel, m, 2, padding, mode, stride, dilation)
    y = rng.standard_normal(op.output_shape)
    np.testing.assert_allclose((op.H @ y).ravel(), dense.T @ y.ravel(), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(op.to_matrix(), dense, rtol=1e-12, atol=1e-12)
    assert stridedop.dottest(op)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k, m, padding, stride, dilation", GEOMETRIES[:6])
def test_sparse_and_materialize_agree_with_the_matrix(mode, k, m, padding, stride, dilation):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((*k, 2, 2))
    op = stridedop.ConvOperator(
        kernel, (*m, 2), padding=padding, padding_mode=mode, stride=stride, dilation=dilation
    )
    dense = op.to_matrix()
    sparse = op.to_sparse()
    np.testing.assert_allclose(sparse.toarray(), dense, rtol=1e-12, atol=1e-12)
    assert sparse.nnz == op._geometry.nonzero_count  # the structural non-zeros, folded
    np.testing.assert_allclose(op.H.to_sparse().toarray(), dense.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(stridedop.materialize(op).reshape(dense.shape), dense)
    np.testing.assert_array_equal(op.H.materialize().reshape(dense.T.shape), dense.T)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k, m, padding, stride, dilation", GEOMETRIES[::2])
def test_channels_first_equals_channels_last(mode, k, m, padding, stride, dilation):
    rng = np.random.default_rng(4)
    kernel = rng.standard_normal((*k, 2, 4))
    n = len(m)
    arguments = {"padding": padding, "padding_mode": mode, "stride": stride, "dilation": dilation}
    last = stridedop.ConvOperator(kernel, (*m, 2), **arguments)
    first = stridedop.ConvOperator(
        to_channels_first_kernel(kernel), (2, *m), layout="channels_first", **arguments
    )
    x = rng.standard_normal((3, *m, 2))  # a batch of 3
    np.testing.assert_allclose(np.moveaxis(first @ np.moveaxis(x, -1, 1), 1, -1), last @ x, rtol=1e-12)
    y = rng.standard_normal((3, *last.output_shape))
    np.testing.assert_allclose(
        np.moveaxis(first.H @ np.moveaxis(y, -1, 1), 1, -1), last.H @ y, rtol=1e-11, atol=1e-12
    )
    assert first.input_shape == (2, *m) and len(first.output_shape) == n + 1


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_modes_without_a_view_say_so_and_name_the_alternatives(mode):
    kernel = np.ones((3, 3, 1, 1))
    with pytest.raises(ValueError, match=rf"`padding_mode`='{mode}' is not shift-invariant.*op @ x"):
        stridedop.conv_view(kernel, (6, 6, 1), padding="same", padding_mode=mode)
    op = stridedop.ConvOperator(kernel, (6, 6, 1), padding="same", padding_mode=mode)
    with pytest.raises(ValueError, match="no strided view"):
        op.view  # noqa: B018
    assert op.buffer_nbytes == 0 and op.nbytes == 36 * 36 * 8


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pads", [((0, 0),), ((3, 1),), ((7, 2),), ((1, 9),)])
def test_circular_with_explicit_amounts_and_stride_keeps_a_view(stride, pads):
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((4, 2, 3))
    W = stridedop.conv_view(kernel, (5, 2), padding=pads, padding_mode="circular", stride=stride)
    assert not W.flags.writeable
    dense = _dense_oracle(kernel, (5,), 2, pads, "circular", stride, 1)
    np.testing.assert_array_equal(np.asarray(W).reshape(dense.shape), dense)
    op = stridedop.ConvOperator(kernel, (5, 2), padding=pads, padding_mode="circular", stride=stride)
    np.testing.assert_array_equal(stridedop.materialize(op.view).reshape(dense.shape), dense)


def test_padding_circular_is_shorthand_for_same_with_the_circular_mode():
    kernel = np.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    short = stridedop.conv_view(kernel, (5, 4, 1), padding="circular")
    spelled = stridedop.conv_view(kernel, (5, 4, 1), padding="same", padding_mode="circular")
    np.testing.assert_array_equal(short, spelled)
    with pytest.raises(ValueError, match="`padding`='circular' is shorthand.*`padding_mode`='reflect'"):
        stridedop.conv_view(kernel, (5, 4, 1), padding="circular", padding_mode="reflect")


@pytest.mark.parametrize("spelling", ["SAME", "Same", "same"])
def test_strings_are_case_insensitive(spelling):
    kernel = np.ones((3, 1, 1))
    reference = stridedop.conv_view(kernel, (5, 1), padding="same", padding_mode="circular")
    W = stridedop.conv_view(kernel, (5, 1), padding=spelling, padding_mode="CIRCULAR")
    np.testing.assert_array_equal(W, reference)
    assert stridedop.conv_view(kernel, (5, 1), padding="VALID").shape == (3, 1, 5, 1)
    assert stridedop.ConvOperator(kernel, (5, 1), padding="Full", layout="Channels_Last").output_shape == (
        7,
        1,
    )


def test_unknown_padding_mode_lists_the_choices():
    with pytest.raises(
        ValueError, match="`padding_mode` must be one of 'zeros', 'circular', 'reflect', 'replicate'"
    ):
        stridedop.ConvOperator(np.ones((3, 1, 1)), (5, 1), padding="same", padding_mode="symmetric")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_modes_match_torch(mode, n, stride, dilation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(n)
    m = (7, 6, 5)[:n]
    k = (3, 2, 3)[:n]
    kernel_cf = rng.standard_normal((4, 3, *k))  # PyTorch's (F, C, *k)
    pads = [((ki - 1) * dilation // 2) for ki in k]  # symmetric amounts, which PyTorch pads with
    conv = getattr(torch.nn, f"Conv{n}d")(
        3, 4, k, stride=stride, dilation=dilation, padding=tuple(pads), padding_mode=mode, bias=False
    ).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel_cf))
    x = rng.standard_normal((2, 3, *m))
    op = stridedop.ConvOperator(
        kernel_cf,
        (3, *m),
        padding=pads,
        padding_mode=mode,
        stride=stride,
        dilation=dilation,
        layout="channels_first",
    )
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = conv(tx)
    np.testing.assert_allclose(op @ x, ty.detach().numpy(), rtol=1e-11, atol=1e-11)
    y = rng.standard_normal(ty.shape)
    (grad,) = torch.autograd.grad(ty, tx, torch.from_numpy(y))
    np.testing.assert_allclose(op.H @ y, grad.numpy(), rtol=1e-11, atol=1e-11)


def test_cli_padding_mode(tmp_path, capsys):
    from stridedop._cli import main

    assert (
        main(
            [
                "info",
                "--kernel",
                "3x3x2x2",
                "--input",
                "8x8x2",
                "--padding",
                "same",
                "--padding-mode",
                "reflect",
            ]
        )
        == 0
    )
    assert "padding_mode='reflect'" in capsys.readouterr().out
    kernel_file = tmp_path / "k.npy"
    kernel = np.arange(1.0, 9.0).reshape(2, 2, 1, 2)
    np.save(kernel_file, kernel)
    output = tmp_path / "W.npy"
    argv = [
        "materialize",
        str(kernel_file),
        "--input",
        "5x4x1",
        "--padding",
        "0:1,1:0",
        "--padding-mode",
        "replicate",
        "-o",
        str(output),
    ]
    assert main(argv) == 0
    op = stridedop.ConvOperator(kernel, (5, 4, 1), padding=((0, 1), (1, 0)), padding_mode="replicate")
    np.testing.assert_array_equal(np.load(output), op.materialize())
