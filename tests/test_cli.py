import subprocess
import sys

import numpy as np
import pytest

import stridedop
from stridedop._cli import main


def test_demo_is_the_default_and_checks_the_worked_example(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "(4, 4, 2, 5, 5, 3)" in out
    assert "equals the direct convolution: True" in out
    assert "dense operator: 19200 bytes" in out
    assert "build time: view" in out


def test_info_prints_shapes_and_bytes_without_building(capsys):
    assert main(["info", "--kernel", "3x3x16x16", "--input", "32x32x16"]) == 0
    out = capsys.readouterr().out
    assert "output_shape  (30, 30, 16)" in out
    assert "view shape    (30, 30, 16, 32, 32, 16)" in out
    assert "dense bytes   1887436800 (1.76 GiB)" in out
    assert "non-zeros     2073600" in out


def test_info_handles_an_operator_far_larger_than_memory(capsys):
    # 3x3x65536x65536 on a 2**20 x 2**20 input: nothing is allocated, so this just prints.
    assert main(["info", "--kernel", "3x3x65536x65536", "--input", "1048576x1048576x65536"]) == 0
    assert "EiB" in capsys.readouterr().out


def test_info_geometry_flags(capsys):
    args = ["info", "--kernel", "16x8x3x3", "--input", "16x32x32", "--layout", "channels_first"]
    assert main([*args, "--padding", "same", "--stride", "2", "--groups", "2"]) == 0
    out = capsys.readouterr().out
    assert "output_shape  (16, 16, 16)" in out and "groups=2" in out
    assert (
        main(["info", "--kernel", "3x3x1x1", "--input", "8x8x1", "--padding", "1:0,0:2", "--dilation", "1,2"])
        == 0
    )
    assert "output_shape  (7, 6, 1)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "--kernel", "3x3", "--input", "32x32x16"], "`kernel` must have at least 3 axes"),
        (["info", "--kernel", "3x3x16x16", "--input", "32x32x8"], "has 8 channels"),
        (["info", "--padding", "-1"], "`padding` must be non-negative"),
        (["info", "--dtype", "nonsense"], "error"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_message(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("stridedop info: error:") and message in err


@pytest.mark.parametrize("argv", [["info", "--kernel", "3xx3"], ["info", "--stride", "two"], ["frobnicate"]])
def test_unparseable_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: stridedop" in capsys.readouterr().err


def test_materialize_writes_the_dense_operator(tmp_path, capsys):
    kernel = np.random.default_rng(0).standard_normal((3, 3, 2, 4))
    np.save(tmp_path / "kernel.npy", kernel)
    output = tmp_path / "W.npy"
    argv = ["materialize", str(tmp_path / "kernel.npy"), "--input", "9x8x2", "--output", str(output)]
    assert main([*argv, "--padding", "same"]) == 0
    written = np.load(output)
    np.testing.assert_array_equal(written, stridedop.conv_view(kernel, (9, 8, 2), padding="same"))
    assert "wrote" in capsys.readouterr().out


def test_materialize_refuses_bad_files(tmp_path, capsys):
    argv = [
        "materialize",
        str(tmp_path / "missing.npy"),
        "--input",
        "4x4x1",
        "--output",
        str(tmp_path / "W.npy"),
    ]
    assert main(argv) == 1
    assert "cannot read the kernel file" in capsys.readouterr().err
    np.save(tmp_path / "text.npy", np.array(["a", "b"]).reshape(1, 1, 2))
    argv[1] = str(tmp_path / "text.npy")
    assert main(argv) == 1
    assert "not numeric" in capsys.readouterr().err


def test_materialize_refuses_a_file_larger_than_the_free_disk(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "kernel.npy", np.ones((3, 3, 2, 2)))

    class Usage:
        free = 1000

    monkeypatch.setattr("stridedop._cli.shutil.disk_usage", lambda path: Usage)
    argv = [
        "materialize",
        str(tmp_path / "kernel.npy"),
        "--input",
        "8x8x2",
        "--output",
        str(tmp_path / "W.npy"),
    ]
    assert main(argv) == 1
    assert "has only 1000 B free" in capsys.readouterr().err
    assert not (tmp_path / "W.npy").exists()


@pytest.mark.parametrize("command", [[], ["demo"], ["info"], ["materialize"]])
def test_help_and_module_entry_point(command):
    result = subprocess.run(
        [sys.executable, "-m", "stridedop", *command, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: stridedop")
