"""Which checkpoint Midnight's load() picks: override, pre-cached weights, or the pinned hub rev."""

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_class():
    spec = importlib.util.spec_from_file_location("midnight_model",
                                                  ROOT / "midnight" / "model" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Model


def make_model(model_class, weights_dir: Path):
    config = yaml.safe_load((ROOT / "midnight" / "config.yaml").read_text())
    config["model_metadata"]["weights_dir"] = str(weights_dir)
    return model_class(config=config, secrets={}), config["model_metadata"]


def test_override_wins_and_is_reported_by_path(model_class, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDNIGHT_CHECKPOINT", "/some/dinov2")
    model, _ = make_model(model_class, tmp_path)
    assert model._checkpoint() == ("/some/dinov2", None, "/some/dinov2")


def test_precached_weights_are_used_without_a_download(model_class, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDNIGHT_CHECKPOINT", "")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    model, meta = make_model(model_class, tmp_path)
    assert model._checkpoint() == (str(tmp_path), None, meta["hf_model_id"])


def test_incomplete_cache_falls_back_to_the_pinned_revision(model_class, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDNIGHT_CHECKPOINT", "")
    (tmp_path / "config.json").write_text("{}")  # config but no weights
    model, meta = make_model(model_class, tmp_path)
    assert model._checkpoint() == ("kaiko-ai/midnight", meta["hf_revision"], "kaiko-ai/midnight")
    assert len(meta["hf_revision"]) == 40
