"""Shared fixtures: the real multi-level data beside the repository (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MFGNN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

#: Short mode for long checks: on in CI (CI=true) or with MFGNN_SMOKE=1.
SMOKE = (os.environ.get("MFGNN_SMOKE", "") not in ("", "0", "false")
         or os.environ.get("CI", "") not in ("", "0", "false"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real datasets. Missing data fails in CI and skips elsewhere."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder not found: {SHARED_DATA}")
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA
