"""Shared test setup: one embedded-data cache for the whole session, so each data set is generated
once (the same code path a user hits on first run)."""

import os
import tempfile

import pytest

if "GAPBENCH_CACHE" not in os.environ:
    os.environ["GAPBENCH_CACHE"] = tempfile.mkdtemp(prefix="gapbench-test-cache-")


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return os.environ["GAPBENCH_CACHE"]
