"""The memory guard honours every process limit (issue 10, item 15)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import stridedop
from stridedop import _memory


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_linux(tmp_path, monkeypatch):
    """Point the memory queries at a fake /proc and /sys/fs/cgroup under `tmp_path`."""
    _write(tmp_path / "meminfo", "MemTotal: 64000000 kB\nMemAvailable: 32000000 kB\n")
    monkeypatch.setattr(_memory, "_MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(_memory, "_PROC_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(_memory, "_CGROUP_ROOT", str(tmp_path / "sys"))
    monkeypatch.setattr(_memory, "_rlimit_headroom", lambda name, key: None)
    return tmp_path


def test_cgroup_v2_limit_minus_usage_is_the_limit(fake_linux):
    _write(fake_linux / "cgroup", "0::/jobs/mine\n")
    group = fake_linux / "sys" / "jobs" / "mine"
    _write(group / "memory.max", "1000000\n")
    _write(group / "memory.current", "400000\n")
    _write(group / "memory.stat", "anon 300000\ninactive_file 100000\n")  # reclaimable cache
    _write(fake_linux / "sys" / "jobs" / "memory.max", "max\n")
    assert _memory.memory_limits() == {"MemAvailable": 32000000 * 1024, "cgroup": 700000}
    assert _memory.available_memory() == 700000


def test_the_tightest_ancestor_cgroup_wins(fake_linux):
    _write(fake_linux / "cgroup", "0::/jobs/mine\n")
    _write(fake_linux / "sys" / "jobs" / "mine" / "memory.max", "1000000\n")
    _write(fake_linux / "sys" / "jobs" / "memory.max", "500000\n")
    _write(fake_linux / "sys" / "jobs" / "memory.current", "450000\n")
    assert _memory.available_memory() == 50000


def test_cgroup_v1_limit_and_unlimited_root(fake_linux):
    _write(fake_linux / "cgroup", "5:cpu,cpuacct:/x\n4:memory:/x\n0::/\n")
    _write(fake_linux / "sys" / "memory" / "x" / "memory.limit_in_bytes", "2000000\n")
    _write(fake_linux / "sys" / "memory" / "x" / "memory.usage_in_bytes", "1500000\n")
    _write(fake_linux / "sys" / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    assert _memory.memory_limits()["cgroup"] == 500000


def test_no_cgroup_information_leaves_memavailable(fake_linux):
    assert _memory.memory_limits() == {"MemAvailable": 32000000 * 1024}


def test_materialize_refuses_beyond_the_cgroup_headroom(fake_linux):
    _write(fake_linux / "cgroup", "0::/\n")
    _write(fake_linux / "sys" / "memory.max", "10000\n")
    _write(fake_linux / "sys" / "memory.current", "0\n")
    W = stridedop.conv_view(np.ones((2, 1, 1)), (100, 1))
    with pytest.raises(MemoryError, match=r"more than the 9.77 KiB \(10000 bytes\) of memory available"):
        stridedop.materialize(W)


def _run_limited(code, headroom, limit="RLIMIT_AS", usage="VmSize"):
    """Run `code` in a new interpreter whose `limit` is `headroom` bytes above its `usage`."""
    prologue = f"""
        import resource
        import numpy as np
        import stridedop
        from stridedop import _memory
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        used = int(status["{usage}"].split()[0]) * 1024
        resource.setrlimit(resource.{limit}, (used + {headroom}, resource.RLIM_INFINITY))
    """
    environment = {
        **os.environ,
        "PYTHONPATH": str(Path(stridedop.__file__).parent.parent),
        "OPENBLAS_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(prologue) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytestmark_linux
@pytest.mark.parametrize(("limit", "usage"), [("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")])
def test_the_process_limits_are_honoured(limit, usage):
    # Linux counts private mappings (NumPy's large arrays) against RLIMIT_DATA as well.
    result = _run_limited(
        f"""
        limit = _memory.memory_limits()["{limit}"]
        assert 0 < limit <= 300 * 2**20, limit
        assert _memory.available_memory() == limit
        W = stridedop.conv_view(np.ones((3, 3, 4, 4)), (64, 64, 4))  # 2 GB dense
        try:
            stridedop.materialize(W)
        except MemoryError as error:
            print(error)
        """,
        300 * 2**20,
        limit,
        usage,
    )
    assert result.returncode == 0, result.stderr
    assert "needs 1.88 GiB" in result.stdout and "of memory available" in result.stdout
    assert "out=" in result.stdout


@pytestmark_linux
def test_an_allocation_refused_by_the_system_gets_the_descriptive_message():
    # The guard is passed (max_bytes allows it, the memory query is silenced), so NumPy's own
    # allocation fails under RLIMIT_AS: the user still gets sizes and alternatives, not
    # "Unable to allocate".
    result = _run_limited(
        """
        _memory.memory_limits = lambda: {}
        W = stridedop.conv_view(np.ones((3, 3, 4, 4)), (64, 64, 4))
        reflect = stridedop.ConvOperator(np.ones((3, 1, 1)), (8000, 1), padding=1, padding_mode="reflect")
        for attempt in (lambda: stridedop.materialize(W, max_bytes=2**40),
                        lambda: stridedop.conv_view(np.ones((1, 1, 1)), (60 * 2**20,), padding="circular"),
                        lambda: reflect.to_matrix(max_bytes=2**40)):
            try:
                attempt()
            except MemoryError as error:
                print(error)
        """,
        300 * 2**20,
    )
    assert result.returncode == 0, result.stderr
    first, second, third = result.stdout.splitlines()
    assert "needs 1.88 GiB" in first and "Alternatives" in first and "the allocation was refused" in first
    assert "the operator's buffer needs" in second and "the allocation was refused" in second
    assert "needs 488 MiB" in third and "Alternatives" in third and "the allocation was refused" in third
