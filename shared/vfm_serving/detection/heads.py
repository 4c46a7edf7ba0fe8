"""The trainable heads, in one file: patch head (localization), global head (4-way label) and
edit gate (natural vs locally edited, on the pooled patch probabilities).

`heads.safetensors` holds every tensor (standardization stats included, prefixed `patch.`,
`global.` and `edit.`); `heads.json` holds the config: which backbone the heads were trained
with (id, hidden size, patch size), feature layout, mask threshold, temperatures, log-prior
offsets, provenance and metrics.
Loading heads against a different backbone fails at load, never silently at predict.
"""

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

HEADS_TENSORS = "heads.safetensors"
HEADS_JSON = "heads.json"
FORMAT_VERSION = 5  # 3: top-1% means instead of maxima in the global vector; token flags;
#                    texture-conditioned z-scores in the patch rows. 4: the edit gate.
#                    5: texture-conditioned forensic maps in the patch rows


class HeadsMismatchError(RuntimeError):
    """The heads do not fit the loaded backbone or this code (hidden / patch size, backbone
    weights, feature lists, format version): a deploy error."""


class HeadsUnreadableError(RuntimeError):
    """heads.json / heads.safetensors is missing, unreadable or malformed (a deploy error)."""


class PatchHead(nn.Module):
    """Standardize [N, F] patch features, then logistic (hidden=0) or a one-hidden-layer MLP;
    outputs logits [N]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, in_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = nn.Linear(in_dim, 1) if hidden == 0 else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, F] -> manipulation logits [N]."""
        return self.net((x - self.mean) / self.std)[:, 0]


class GlobalHead(nn.Module):
    """Standardize [B, F] image features -> logits [B, C] (C = 4 labels for the global head, 2 =
    (Natural, edited) for the edit gate): multinomial logistic regression (hidden=0) or a
    one-hidden-layer MLP."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, in_dim: int, num_classes: int = 4, hidden: int = 0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.linear = nn.Linear(in_dim, num_classes) if hidden == 0 else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, F] -> uncalibrated logits [B, C] (divide by the temperature for calibration)."""
        return self.linear((x - self.mean) / self.std)


@dataclasses.dataclass
class HeadsConfig:
    """Everything needed to rebuild and trust the heads. Serialized as heads.json."""

    backbone_model_id: str
    backbone_hidden_size: int
    backbone_patch_size: int
    input_size: int
    residual_features: Tuple[str, ...]
    forensic_features: Tuple[str, ...]
    patch_in_dim: int
    patch_hidden: int
    global_in_dim: int
    mask_threshold: float
    temperature: float
    labels: Tuple[str, ...]
    backbone_source: str = ""
    backbone_fingerprint: str = ""
    pooling_threshold: float = 0.5
    # mask rule (detector.decide_mask): keep the connected regions of the thresholded map with
    # at least this fraction of the strongest region's probability mass; 0.0 (heads written
    # before the rule) keeps every region
    mask_region_fraction: float = 0.0
    # (Natural, FullySynthesized, 0, 0) log-prior offsets: Natural's on the edit gate,
    # FullySynthesized's on the global head (detector.calibrated_logprobs)
    logit_bias: Tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    edit_in_dim: int = 4                # the edit gate reads the pooled patch probabilities
    edit_temperature: float = 1.0
    global_token_features: bool = True  # mean CLS + mean patch token in the global vector
    patch_token_features: bool = True   # the patch token in each patch head row
    global_hidden: int = 0              # 0: logistic regression; N: one hidden layer of N
    trained_on_standin: bool = False
    provenance: str = ""
    metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION


@dataclasses.dataclass
class Heads:
    """The loaded heads with their config."""

    patch: PatchHead
    global_: GlobalHead
    edit: GlobalHead  # 2 logits: (Natural, edited)
    config: HeadsConfig


def _prefixed(patch: nn.Module, global_: nn.Module,
              edit: nn.Module) -> Tuple[Tuple[str, nn.Module], ...]:
    """The heads with the key prefix each has in heads.safetensors (one list for save and load)."""
    return (("patch.", patch), ("global.", global_), ("edit.", edit))


def save_heads(heads: Heads, out_dir: Path) -> Tuple[Path, Path]:
    """Write heads.safetensors + heads.json into `out_dir`; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"{prefix}{k}": v.contiguous()
               for prefix, head in _prefixed(heads.patch, heads.global_, heads.edit)
               for k, v in head.state_dict().items()}
    save_file(tensors, str(out_dir / HEADS_TENSORS),
              metadata={"backbone_model_id": heads.config.backbone_model_id})
    cfg = dataclasses.asdict(heads.config)
    (out_dir / HEADS_JSON).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out_dir / HEADS_TENSORS, out_dir / HEADS_JSON


def read_config(heads_dir: Path) -> HeadsConfig:
    """Parse heads.json.

    Raises:
        HeadsUnreadableError: the file is missing, unreadable or malformed, or a value is out
            of range.
        HeadsMismatchError: it was written in another format version.
    """
    path = heads_dir / HEADS_JSON
    try:
        raw = json.loads(path.read_text())
        raw["residual_features"] = tuple(raw["residual_features"])
        raw["forensic_features"] = tuple(raw.get("forensic_features", ()))
        raw["labels"] = tuple(raw["labels"])
        raw["logit_bias"] = tuple(raw.get("logit_bias", (0.0,) * len(raw["labels"])))
        config = HeadsConfig(**raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeadsUnreadableError(f"cannot read {path}: {exc}") from exc
    if not 0.0 <= config.mask_region_fraction <= 1.0:
        raise HeadsUnreadableError(f"{path}: mask_region_fraction {config.mask_region_fraction} "
                                   "is not in [0, 1]")
    if config.format_version != FORMAT_VERSION:
        raise HeadsMismatchError(f"{path}: format_version {config.format_version}, "
                                 f"this code reads {FORMAT_VERSION}")
    return config


def load_heads(heads_dir: Path, *, hidden_size: int, patch_size: int,
               model_id: Optional[str] = None, residual_features: Tuple[str, ...] = (),
               forensic_features: Tuple[str, ...] = ()) -> Heads:
    """Load heads and check them against the backbone they will run on.

    Raises:
        HeadsMismatchError: hidden size, patch size, model id (when given) or residual / forensic
            feature lists (when given) differ from what the heads were trained with, or the
            tensors do not match heads.json.
        HeadsUnreadableError: heads.json or heads.safetensors cannot be read.
    """
    config = read_config(heads_dir)
    problems = []
    if config.backbone_hidden_size != hidden_size:
        problems.append(f"hidden size {config.backbone_hidden_size} != backbone {hidden_size}")
    if config.backbone_patch_size != patch_size:
        problems.append(f"patch size {config.backbone_patch_size} != backbone {patch_size}")
    if model_id is not None and config.backbone_model_id != model_id:
        problems.append(f"trained with {config.backbone_model_id!r}, backbone is {model_id!r}")
    if residual_features and tuple(residual_features) != config.residual_features:
        problems.append("residual feature list differs from this code's")
    if forensic_features and tuple(forensic_features) != config.forensic_features:
        problems.append("forensic feature list differs from this code's")
    if problems:
        raise HeadsMismatchError(f"heads in {heads_dir} do not fit the backbone: "
                                 + "; ".join(problems))
    try:
        tensors = load_file(str(heads_dir / HEADS_TENSORS))
    except (OSError, ValueError, RuntimeError) as exc:  # safetensors raises its own subclasses
        raise HeadsUnreadableError(f"cannot read {heads_dir / HEADS_TENSORS}: {exc}") from exc
    patch = PatchHead(config.patch_in_dim, config.patch_hidden)
    global_ = GlobalHead(config.global_in_dim, len(config.labels), config.global_hidden)
    edit = GlobalHead(config.edit_in_dim, 2)
    try:
        for prefix, head in _prefixed(patch, global_, edit):
            head.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                  if k.startswith(prefix)})
    except RuntimeError as exc:
        raise HeadsMismatchError(f"{heads_dir / HEADS_TENSORS} does not match heads.json: "
                                 f"{exc}") from exc
    for head in (patch, global_, edit):
        head.eval()
    log.info("loaded heads from %s (backbone %s%s)", heads_dir, config.backbone_model_id,
             "; DEMO heads trained on a stand-in backbone" if config.trained_on_standin else "")
    return Heads(patch=patch, global_=global_, edit=edit, config=config)
