"""SAFE edit detection and localization: residual statistics + frozen DINOv2 tokens -> trainable
patch head (localization), global head (4-way label) and edit gate (natural vs locally edited).

Modules: `residuals` (SRM/high-pass per-patch statistics), `windows` (tiling large images into
backbone-sized windows and stitching scores back), `heads` (the heads, saved as one
safetensors file + JSON), `detector` (image -> features -> patch probabilities -> mask + logprobs).
"""

LABELS = ("Natural", "FullySynthesized", "LocallyEdited", "LocallySynthesized")
NATURAL, FULLY_SYNTHESIZED, LOCALLY_EDITED, LOCALLY_SYNTHESIZED = range(4)
LOCAL_LABELS = (LOCALLY_EDITED, LOCALLY_SYNTHESIZED)
