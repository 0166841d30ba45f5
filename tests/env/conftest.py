"""Shared fixtures of the env tests."""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # tests/env as a package or as a plain rootdir-inserted directory
    from .upstream_fixtures import write_fixture_root
except ImportError:
    from upstream_fixtures import write_fixture_root


@pytest.fixture(scope="session")
def fixture_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature DATA_ROOT with every real benchmark split in the upstream formats (read-only use)."""
    return write_fixture_root(tmp_path_factory.mktemp("data_root"))
