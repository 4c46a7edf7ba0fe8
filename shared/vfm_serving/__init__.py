"""vfm_serving: the shared serving package bundled into every Truss of this repository.

One request flow for every model (serving.ServingPipeline, LitServe-style):

    http/        capped raw body -> JSON value (body.py); ServingError -> status + body (errors.py)
    apis/        parse the request / shape the response, one module per public API
    inputs/      one ImageSource: SSRF-safe URL fetch, base64 / data URL, GCS; decode with limits
    runner       the model's own part: prepare (decode to a model-ready item) and forward
                 (embeddings/embedder.py, tf_savedmodel/derm.py, detection/runner.py)
    batching     DynamicBatcher: items of concurrent requests merged into one forward pass
    outputs/     response encoding (float/base64 arrays, PNG masks)

Every limit lives in `settings.ServingSettings`; every error is an `errors.ServingError` with a
stable `code`; only `http/errors.py` maps errors to HTTP.
"""

__version__ = "0.2.0"
