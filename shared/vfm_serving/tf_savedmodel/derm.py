"""Derm Foundation as a TensorFlow SavedModel: load, probe, micro-batched calls with fallback.

Signature `serving_default`: `inputs` string [N] of serialized `tf.train.Example` (one feature,
`image/encoded` = the image bytes, unchanged) -> `embedding` float32 [N, 6144].

`DermRunner` is the pipeline's runner (vfm_serving.serving.Runner): `prepare` checks an image
with a Pillow decode and keeps its bytes unchanged (the graph decodes them itself); `forward` makes
one graph call per pass. A pass that fails (one undecodable image fails the whole graph call) is
retried one instance at a time, so only the culprit gets an error.
"""

import dataclasses
import io
import logging
import time
from typing import Any, List, Sequence, Union

import numpy as np

from vfm_serving import metrics
from vfm_serving.errors import ModelError
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings
from vfm_serving.standin import standin_model_id

log = logging.getLogger(__name__)

INPUT_KEY = "inputs"
OUTPUT_KEY = "embedding"
IMAGE_FEATURE = "image/encoded"
EMBEDDING_DIM = 6144
MODEL_INPUT_SIZE = 448  # the model card's input side; the graph resizes other sizes


@dataclasses.dataclass(frozen=True)
class DermEmbedding:
    """One instance's embedding float32 [EMBEDDING_DIM] and whether its pass had failed, so it
    was re-run alone."""

    embedding: np.ndarray
    retried_alone: bool


@dataclasses.dataclass
class DermSavedModel:
    """A loaded SavedModel signature with what the server reports about it.

    `max_batch_size` is 1 when the load-time probe showed the model rejects N > 1.
    """

    signature: Any
    module: Any  # the loaded SavedModel object: keeps the signature's variables alive
    model_id: str
    is_standin: bool
    max_batch_size: int


def serialize_example(image_bytes: bytes) -> bytes:
    """One serialized `tf.train.Example` whose only feature is `image/encoded` = `image_bytes`."""
    import tensorflow as tf

    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes]))
    example = tf.train.Example(features=tf.train.Features(feature={IMAGE_FEATURE: feature}))
    return example.SerializeToString()


def call_signature(model: DermSavedModel, images: Sequence[bytes]) -> np.ndarray:
    """One graph call on `images` (encoded bytes) -> float32 [len(images), EMBEDDING_DIM].

    Raises:
        tensorflow.errors.OpError (e.g. InvalidArgumentError for undecodable bytes) from the graph;
        ValueError when the output has another shape.
    """
    import tensorflow as tf

    examples = tf.constant([serialize_example(b) for b in images], dtype=tf.string)
    out = model.signature(**{INPUT_KEY: examples})[OUTPUT_KEY].numpy().astype(np.float32)
    if out.shape != (len(images), EMBEDDING_DIM):
        raise ValueError(f"model returned shape {out.shape}, expected "
                         f"({len(images)}, {EMBEDDING_DIM})")
    return out


def probe_image() -> bytes:
    """A 448x448 mid-grey PNG (the model card's input size) for the load-time probe."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (448, 448), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def probe_batching(model: DermSavedModel) -> int:
    """Call the model on 1 then 2 copies of a probe image; return the usable max batch (1 or 2+).

    Raises:
        whatever the single-image call raises: a model that cannot embed one image must not serve.
    """
    image = probe_image()
    single = call_signature(model, [image])
    try:
        pair = call_signature(model, [image, image])
    except Exception as exc:  # noqa: BLE001 - any failure means "no batching"
        log.warning("model rejected a batch of 2 (%s): micro-batch size forced to 1",
                    type(exc).__name__)
        return 1
    if not np.allclose(pair, np.repeat(single, 2, axis=0), atol=1e-4):
        log.warning("batch of 2 differs from single calls: micro-batch size forced to 1")
        return 1
    return model.max_batch_size


def configure_gpus() -> List[str]:
    """Let TensorFlow grow GPU memory on demand instead of grabbing it all; return GPU names."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised
            pass
    return [g.name for g in gpus]


def load_derm(directory: str, *, model_id: str, max_batch_size: int, probe: bool = True
              ) -> DermSavedModel:
    """`tf.saved_model.load(directory)` and its `serving_default` signature.

    A directory holding STANDIN.json (tools/standins/derm.py) is reported as a stand-in, with the
    marker's `model_id`. With `probe`, batching is checked (see `probe_batching`).

    Raises:
        OSError / ValueError from TensorFlow when the SavedModel is missing or invalid;
        KeyError when it has no `serving_default` signature.
    """
    import tensorflow as tf

    started = time.perf_counter()
    gpus = configure_gpus()
    loaded = tf.saved_model.load(directory)
    standin_id = standin_model_id(directory)
    is_standin = standin_id is not None
    model_id = standin_id or model_id
    model = DermSavedModel(signature=loaded.signatures["serving_default"], module=loaded,
                           model_id=model_id, is_standin=is_standin,
                           max_batch_size=max(1, max_batch_size))
    if probe:
        model.max_batch_size = probe_batching(model)
    log.info("loaded %s from %s in %.1fs (GPUs: %s, max batch %d)", model_id, directory,
             time.perf_counter() - started, gpus or "none", model.max_batch_size)
    return model


class DermRunner:
    """Runner (see vfm_serving.serving.Runner) for the Derm Foundation SavedModel."""

    def __init__(self, model: DermSavedModel, settings: ServingSettings) -> None:
        self.model = model
        self.settings = settings
        self.optimal_batch_size = model.max_batch_size

    def prepare(self, data: bytes, request: Any) -> bytes:
        """Check that `data` decodes within the limits (Pillow); return it unchanged.

        Raises:
            ImageDecodeError, ImageTooLarge, InvalidImageGeometry (see decode_rgb).
        """
        decode_rgb(data, self.settings, reduce_for=MODEL_INPUT_SIZE)
        return data

    def forward(self, images: List[bytes]) -> List[Union[DermEmbedding, ModelError]]:
        """One graph call on `images`; if it fails, one call per image. Never raises for a bad
        image: an image that fails alone gets a ModelError in its slot."""
        started = time.perf_counter()
        try:
            out = call_signature(self.model, images)
            log.info("graph call on %d images in %.3fs", len(images), time.perf_counter() - started)
            return [DermEmbedding(row, retried_alone=False) for row in out]
        except Exception as exc:  # noqa: BLE001 - any graph failure: isolate the culprit
            if len(images) == 1:
                return [_model_error(exc)]
            log.warning("graph call on %d images failed (%s): retrying one by one", len(images),
                        type(exc).__name__)
        metrics.FALLBACKS.labels("derm").inc()
        return [self._alone(image) for image in images]

    def _alone(self, image: bytes) -> Union[DermEmbedding, ModelError]:
        try:
            return DermEmbedding(call_signature(self.model, [image])[0], retried_alone=True)
        except Exception as exc:  # noqa: BLE001 - the culprit gets its own error
            return _model_error(exc)

    def golden_item(self) -> bytes:
        """The probe image (448x448 mid-grey PNG)."""
        return probe_image()

    def health_vector(self, output: DermEmbedding) -> np.ndarray:
        """The embedding itself."""
        return output.embedding


def _model_error(exc: Exception) -> ModelError:
    """A ModelError naming only the exception class (TF messages can be long; no payloads)."""
    log.warning("model failed on one instance: %s", type(exc).__name__)
    return ModelError(f"the model could not process this image ({type(exc).__name__})")

