"""Test setup: 4 fake CPU devices (so data parallelism is exercised everywhere),
one prepared-data directory shared by all test workers, and one JAX
compilation cache for the whole run.

The cache: most of the suite's time is XLA compiling the same small programs
again (many tests train the same tiny models). With JAX's persistent
compilation cache in a directory made for this run, a program compiled once
is loaded by every later test, worker process and subprocess that builds it
again (measured: tests/executor_test.py from 55 to 27 CPU seconds). What a
cached program computes is what the compiler made of the same program, so no
result changes; the library's own per-phase trace counts are unaffected.

JAX writes a cache entry in place (no temporary file and rename unless the
cache's size limit, and with it a file lock, is on), so a process reading an
entry another process is still writing reads a truncated program and aborts.
It happened (twice in one full run, both in one-op eager programs while the
other xdist worker was writing). So each xdist worker has its own directory
(its subprocesses share it: they run while the worker waits for them), and
programs that compile in under 0.2 s, such as eager one-op programs, are not
cached at all, which removes most writes.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # inherited by xdist workers and subprocesses
    _cache = tempfile.mkdtemp(prefix="alternating-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and not os.environ.get("ALTERNATING_TEST_CACHE_WORKER"):  # once per worker
    os.environ["ALTERNATING_TEST_CACHE_WORKER"] = _worker
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
        os.environ["JAX_COMPILATION_CACHE_DIR"], _worker)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    # The parent of the per-worker base temp dir is shared by pytest-xdist workers,
    # so the embedded datasets are built once per test run.
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    path = shared / "tfds_data"
    path.mkdir(exist_ok=True)
    os.environ["TFDS_DATA_DIR"] = str(path)
    return str(path)
