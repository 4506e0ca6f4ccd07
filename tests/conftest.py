"""Test setup: 4 fake CPU devices (so data parallelism is exercised everywhere),
XLA's CPU backend at optimization level 0, one prepared-data directory shared
by all test workers, and one JAX compilation cache for the whole run.

Optimization level 0: the suite's time is mostly XLA compiling small
programs that then run a few steps. At level 0 a compile-bound run of the
default scheme (20 steps of two CNNs) took 6.4 instead of 10.5 CPU seconds,
with the same accuracies and losses equal to 2e-7. Subprocesses inherit the
flags (tests that give a subprocess its own device count keep the others:
``experiments/launch_local.py:device_count_flags``); benchmarks and the
processes that drop ``XLA_FLAGS`` run at XLA's default level. What the
tests check (the library's logic, equalities between runs compiled alike)
does not depend on the level; ``make run`` and the benchmarks use the
default.

The cache: most of the suite's time is XLA compiling the same small programs
again (many tests train the same tiny models). With JAX's persistent
compilation cache in a directory made for this run, a program compiled once
is loaded by every later test of the same xdist worker that builds it
again (measured: tests/executor_test.py from 55 to 27 CPU seconds). What a
cached program computes is what the compiler made of the same program, so no
result changes; the library's own per-phase trace counts are unaffected.

JAX writes a cache entry in place (no temporary file and rename unless the
cache's size limit, and with it a file lock, is on), so a process reading an
entry another process is still writing reads a truncated program and aborts.
It happened (three worker aborts over two full runs, all in one-op eager
programs). So the cache is set for the test processes only, each xdist worker
with its own directory; subprocesses (workers that tests kill with SIGKILL,
benchmarks, launched processes) do not use it; and programs that compile in
under 0.2 s, such as eager one-op programs, are not cached.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_backend_optimization_level=0")
if "ALTERNATING_TEST_JAX_CACHE" not in os.environ:  # made once, by the first process
    _cache = tempfile.mkdtemp(prefix="alternating-test-jax-cache-")
    os.environ["ALTERNATING_TEST_JAX_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, True)

import jax  # noqa: E402

# In this process only (config, not environment): subprocesses, which tests kill
# on purpose, never write to the cache, so no entry is left half-written.
jax.config.update("jax_compilation_cache_dir", os.path.join(
    os.environ["ALTERNATING_TEST_JAX_CACHE"], os.environ.get("PYTEST_XDIST_WORKER", "main")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

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
