from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from pipeline.weights.registry import REGISTRY


@pytest.fixture
def online_hub_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Online, no source overrides, a private HF cache, and timeouts short enough for tests."""
    for spec in REGISTRY.values():
        monkeypatch.delenv(spec.repo_env, raising=False)
        monkeypatch.delenv(spec.revision_env, raising=False)
    for name in ("C2F_WEIGHTS_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_ETAG_TIMEOUT", 5)
    monkeypatch.setattr(hf_constants, "HF_HUB_DOWNLOAD_TIMEOUT", 5)
