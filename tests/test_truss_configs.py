"""Every Truss config validates the way `truss push` validates it, and declares a T4."""

from pathlib import Path

import pytest
import yaml
from truss.base.truss_config import TrussConfig

ROOT = Path(__file__).resolve().parents[1]
TRUSSES = sorted(yaml.safe_load((ROOT / "config.yaml").read_text())["trusses"])


@pytest.mark.parametrize("name", TRUSSES)
def test_config_validates_like_truss_push(name):
    folder = ROOT / yaml.safe_load((ROOT / "config.yaml").read_text())["trusses"][name]["folder"]
    config = TrussConfig.from_yaml(folder / "config.yaml")
    config.validate_forbid_extra()
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    assert raw["resources"]["accelerator"] == "T4"
    assert config.resources.accelerator.accelerator.value == "T4"
    assert raw["external_package_dirs"] == ["../shared"]
    assert "hf_access_token" in raw["secrets"]
    assert raw["model_metadata"]["example_model_input"]
    assert (folder / "model" / "model.py").is_file()
    requirements = (folder / raw["requirements_file"]).read_text()
    assert "truss" not in requirements.split()  # the image brings its own server


def test_an_unknown_key_is_rejected(tmp_path):
    """The validation above can fail: a typo'd key is refused."""
    raw = yaml.safe_load((ROOT / "midnight" / "config.yaml").read_text())
    raw["resources"]["acelerator"] = "T4"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="acelerator"):  # pydantic's ValidationError
        TrussConfig.from_yaml(tmp_path / "config.yaml").validate_forbid_extra()


def test_midnight_weights_are_pinned():
    raw = yaml.safe_load((ROOT / "midnight" / "config.yaml").read_text())
    source = raw["weights"][0]["source"]
    assert source.startswith("hf://kaiko-ai/midnight@")
    revision = source.rsplit("@", 1)[1]
    assert len(revision) == 40 and int(revision, 16) >= 0
    assert raw["weights"][0]["mount_location"] == raw["model_metadata"]["weights_dir"]
