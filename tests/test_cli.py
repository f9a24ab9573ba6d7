import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

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


# -- hardening (issue 10) -------------------------------------------------------------------------


def _materialize_argv(kernel_file, output, input_shape="8x8x2"):
    return ["materialize", str(kernel_file), "--input", input_shape, "--output", str(output)]


def _entries(directory):
    return sorted(path.name for path in directory.iterdir())


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_bytes(b""), "the file is empty or cut short"),
        (lambda path: path.write_bytes(b"\x93NUMPY\x01\x00"), "cannot read the kernel file"),
        (
            lambda path: np.save(path, np.array([None, 1], dtype=object).reshape(1, 1, 2), allow_pickle=True),
            "Object arrays cannot be loaded",
        ),
        (lambda path: np.save(path, np.zeros((1, 1, 2), dtype="V0")), "not numeric"),
        (lambda path: np.save(path, np.zeros((1, 1, 2), dtype="S0")), "not numeric"),
    ],
)
def test_materialize_refuses_unreadable_and_non_numeric_kernel_files(tmp_path, capsys, write, message):
    write(tmp_path / "kernel.npy")
    assert main(_materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy")) == 1
    err = capsys.readouterr().err
    assert err.startswith("stridedop materialize: error:") and message in err
    assert _entries(tmp_path) == ["kernel.npy"]


def test_materialize_refuses_an_npz_archive_naming_its_arrays(tmp_path, capsys):
    np.savez(tmp_path / "kernel.npz", weights=np.ones((3, 3, 2, 2)))
    assert main(_materialize_argv(tmp_path / "kernel.npz", tmp_path / "W.npy")) == 1
    err = capsys.readouterr().err
    assert "is an .npz archive holding ['weights']" in err and "numpy.save" in err


@pytest.mark.parametrize("same", ["kernel.npy", "./kernel.npy", "link.npy"])
def test_materialize_refuses_to_overwrite_the_kernel_file(tmp_path, capsys, monkeypatch, same):
    kernel = np.arange(36.0).reshape(3, 3, 2, 2)
    np.save(tmp_path / "kernel.npy", kernel)
    (tmp_path / "link.npy").symlink_to(tmp_path / "kernel.npy")
    monkeypatch.chdir(tmp_path)
    assert main(_materialize_argv("kernel.npy", same)) == 1
    assert "`--output` " in (err := capsys.readouterr().err) and "is the kernel file itself" in err
    np.testing.assert_array_equal(np.load(tmp_path / "kernel.npy"), kernel)


def test_materialize_refuses_a_directory_as_output(tmp_path, capsys):
    np.save(tmp_path / "kernel.npy", np.ones((3, 3, 2, 2)))
    assert main(_materialize_argv(tmp_path / "kernel.npy", tmp_path)) == 1
    assert "is a directory; give the name of the .npy file" in capsys.readouterr().err
    assert _entries(tmp_path) == ["kernel.npy"]


@pytest.mark.parametrize("dtype", ["V0", "S0", "object", "U3", "M8[s]", "V8", "[("])
def test_info_refuses_non_numeric_dtypes(dtype, capsys):
    assert main(["info", "--dtype", dtype]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stridedop info: error: `--dtype`") and "Traceback" not in err
    assert "not numeric" in err or "not a NumPy dtype name" in err


@pytest.mark.parametrize(
    "failure", [OSError("disk went away"), ValueError("bad"), MemoryError("no room"), KeyboardInterrupt()]
)
def test_materialize_leaves_no_file_when_writing_fails(tmp_path, capsys, monkeypatch, failure):
    np.save(tmp_path / "kernel.npy", np.ones((3, 3, 2, 2)))

    def fail(view, out, **kwargs):
        out[0] = 1  # a partial write
        raise failure

    monkeypatch.setattr("stridedop._cli.fill_dense", fail)
    code = main(_materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy"))
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 1)
    assert _entries(tmp_path) == ["kernel.npy"]  # neither the output nor a temporary file
    err = capsys.readouterr().err
    assert ("interrupted; nothing was written" if code == 130 else str(failure)) in err


def test_materialize_replaces_an_existing_output_only_when_complete(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "kernel.npy", np.ones((3, 3, 2, 2)))
    np.save(tmp_path / "W.npy", np.arange(3))

    def fail(view, out, **kwargs):
        raise OSError("disk went away")

    with monkeypatch.context() as patch:
        patch.setattr("stridedop._cli.fill_dense", fail)
        assert main(_materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy")) == 1
    np.testing.assert_array_equal(np.load(tmp_path / "W.npy"), np.arange(3))  # the old file is intact
    assert main(_materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy")) == 0
    assert np.load(tmp_path / "W.npy").shape == (6, 6, 2, 8, 8, 2)
    assert _entries(tmp_path) == ["W.npy", "kernel.npy"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "W.npy").stat().st_mode & 0o777 == 0o666 & ~umask


def _run_cli(*argv, **kwargs):
    environment = {**os.environ, "PYTHONPATH": str(Path(stridedop.__file__).parent.parent)}
    return subprocess.Popen(
        [sys.executable, "-m", "stridedop", *argv],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _default_signal_handling():
    """In the child before `exec`: SIGINT and SIGTERM as a terminal delivers them.

    A test run from a shell's background job inherits SIGINT ignored, and Python then leaves it
    ignored: the CLI would never see the Ctrl-C these tests send.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _writing_started(directory):
    """True once a temporary .npy in `directory` holds its first entry (W[0, ..., 0] == 1)."""
    for path in directory.iterdir():
        if path.name.endswith(".tmp"):
            try:
                with open(path, "rb") as file:
                    np.lib.format.read_magic(file)
                    np.lib.format.read_array_header_1_0(file)
                    return file.read(4) == np.float32(1).tobytes()
            except (OSError, ValueError):  # not there or its header not written yet
                return False
    return False


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_mid_write_leaves_no_file_and_no_traceback(tmp_path, signum, code, word):
    # About 1.2 GB of float32 operator: seconds of writing. The signal is sent once the first
    # kernel entry shows in the temporary file, so it lands mid-write.
    np.save(tmp_path / "kernel.npy", np.ones((3, 3, 8, 8), np.float32))
    process = _run_cli(
        *_materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy", "48x48x8"),
        preexec_fn=_default_signal_handling,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and not _writing_started(tmp_path):
        time.sleep(0.002)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert word in err and "Traceback" not in err
    assert _entries(tmp_path) == ["kernel.npy"]


def _can_mount_a_private_tmpfs():
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_a_private_tmpfs(), reason="needs root and `unshare -m` to mount a tmpfs")
def test_materialize_on_a_full_disk_exits_cleanly(tmp_path):
    # A 1 MiB tmpfs and a dense operator of exactly 1 MiB: the data fit the free space, the .npy
    # header does not. Before the fix this died with SIGBUS and left a file with a valid header.
    np.save(tmp_path / "kernel.npy", np.ones((1, 1, 1), np.float32))  # (512, 1, 512, 1) float32
    disk = tmp_path / "disk"
    disk.mkdir()
    materialize = f"{sys.executable} -m stridedop materialize {tmp_path / 'kernel.npy'} --input 512"
    command = f"mount -t tmpfs -o size=1m tmpfs {disk} && {materialize} -o {disk / 'W.npy'}"
    command += f"; code=$?; ls -A {disk}; exit $code"
    environment = {**os.environ, "PYTHONPATH": str(Path(stridedop.__file__).parent.parent)}
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, env=environment, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Bus error" not in result.stderr
    assert "cannot reserve 1 MiB" in result.stderr and "No space left on device" in result.stderr
    assert result.stdout == ""  # the tmpfs holds no file, complete or partial


@pytest.mark.parametrize("padding", ["valid", "circular"])
def test_info_costs_nothing_proportional_to_the_kernel(padding, capsys):
    # Issue 10, item 12: this took 47 s (and 2.2 GB for circular 3e7) when the taps were looped over.
    tracemalloc.start()
    try:
        assert main(["info", "--kernel", "100000000x1x1", "--input", "100000000", "--padding", padding]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    nonzeros = 10**8 if padding == "valid" else 10**16
    assert f"non-zeros     {nonzeros} " in capsys.readouterr().out


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_materialize_writes_every_padding_mode_atomically(tmp_path, capsys, padding_mode):
    kernel = np.arange(1.0, 10.0).reshape(3, 1, 3)
    np.save(tmp_path / "kernel.npy", kernel)
    argv = _materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy", "6x1")
    assert main([*argv, "--padding", "same", "--padding-mode", padding_mode]) == 0
    op = stridedop.ConvOperator(kernel, (6, 1), padding="same", padding_mode=padding_mode)
    np.testing.assert_array_equal(np.load(tmp_path / "W.npy"), op.materialize())
    assert _entries(tmp_path) == ["W.npy", "kernel.npy"]


def test_materialize_reserves_by_writing_zeros_where_fallocate_is_unsupported(tmp_path, capsys, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr("stridedop._cli.os.posix_fallocate", unsupported)
    kernel = np.arange(1.0, 17.0).reshape(2, 2, 2, 2)
    np.save(tmp_path / "kernel.npy", kernel)
    assert main(_materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy", "5x4x2")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "W.npy"), stridedop.conv_view(kernel, (5, 4, 2)))


def test_materialize_reports_a_failed_reservation_cleanly(tmp_path, capsys, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("stridedop._cli.os.posix_fallocate", full)
    np.save(tmp_path / "kernel.npy", np.ones((2, 2, 2, 2)))
    assert main(_materialize_argv(tmp_path / "kernel.npy", tmp_path / "W.npy", "5x4x2")) == 1
    err = capsys.readouterr().err
    assert "cannot reserve" in err and "No space left on device" in err
    assert _entries(tmp_path) == ["kernel.npy"]
