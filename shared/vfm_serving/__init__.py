"""vfm_serving: the shared serving package bundled into every Truss of this repository.

Request flow (one module per stage, LitServe-style):

    inputs/      fetch + decode: URL, base64, data URL, GCS -> bytes -> PIL image   (raise ServingError)
    batching     split decoded items into micro-batches, no truncation or padding
    embeddings/  config-driven geometry, preprocessing and DINOv2 forward + pooling
    outputs/     response encoding (JSON lists, PNG masks)

Every limit lives in `settings.ServingSettings`; every error is a `errors.ServingError` with a
stable `code`. Only the Truss `model.py` files map errors to HTTP.
"""

__version__ = "0.1.0"
