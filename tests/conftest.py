"""Test-wide setup: eight fake CPU devices (set before jax is imported) and shared fixtures."""
import os
import pathlib

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def cranfield_dir() -> pathlib.Path:
    """The Cranfield collection in BEIR layout from ../shared/data; skips when it is absent."""
    path = SHARED_DATA / "cranfield"
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"Cranfield data not found at {path} (../shared/data is absent on this machine)")
    return path
