"""Test setup: 4 fake CPU devices (so data parallelism is exercised everywhere)
and one prepared-data directory shared by all test workers."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

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
