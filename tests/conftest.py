"""Fixtures that several test files share: the tokenizer and a local Ray per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

import tokenizer


@pytest.fixture(scope="module")
def enc() -> tokenizer.Arcade100k:
    return tokenizer.load()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[str]:
    """A local Ray of 2 CPUs for one test module; yields its GCS address (for jobs started in a
    subprocess with RAY_ADDRESS) and shuts it down after the module's last test."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
