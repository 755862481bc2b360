"""Shared test setup: one embedded-data cache for the whole session (each data set is generated
once, by the code path a user hits on first run), one torch thread, and the `slow` lane."""

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

if "GAPBENCH_CACHE" not in os.environ:
    os.environ["GAPBENCH_CACHE"] = tempfile.mkdtemp(prefix="gapbench-test-cache-")
sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py

# Tiny models slow down badly when two torch threads compete for 2 cores with other work: one
# thread per test process is faster and keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return os.environ["GAPBENCH_CACHE"]
