"""Write a stand-in for google/derm-foundation: a tiny TensorFlow SavedModel, same signature.

`serving_default`: `inputs` string [N] of serialized `tf.train.Example` (`image/encoded`) ->
`embedding` float32 [N, 6144], like the real model. It really parses the Example and decodes the
image in-graph (`tf.io.decode_image`), so bytes TensorFlow cannot decode fail inside the model as
they would in the real one. The embedding is a fixed, seeded random projection of pooled pixels:
deterministic, meaningless. Writes STANDIN.json so the server reports it as a stand-in.

    python -m tools.standins.derm --out .cache/standins/derm
"""

import shutil
from pathlib import Path

import numpy as np

from tools.standins import run_cli, write_marker

STANDIN_MODEL_ID = "STAND-IN tiny TF SavedModel (random projection; NOT google/derm-foundation)"
EMBEDDING_DIM = 6144
SIDE = 64   # decoded images are resized to SIDE x SIDE
POOL = 8    # then average-pooled to POOL x POOL x 3 features


def build_module(seed: int = 0):  # -> tf.Module
    """The stand-in as a `tf.Module` with a `serve` tf.function (the serving signature)."""
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    features = POOL * POOL * 3
    weights = rng.standard_normal((features, EMBEDDING_DIM)).astype(np.float32) / np.sqrt(features)

    class DermStandIn(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="derm_standin")
            self.projection = tf.Variable(weights, trainable=False, name="projection")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def serve(self, inputs):
            """inputs [N] serialized Examples -> {"embedding": float32 [N, 6144]}."""
            parsed = tf.io.parse_example(
                inputs, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
            pixels = tf.map_fn(_decode, parsed["image/encoded"],
                               fn_output_signature=tf.TensorSpec([SIDE, SIDE, 3], tf.float32))
            pooled = tf.nn.avg_pool2d(pixels, ksize=SIDE // POOL, strides=SIDE // POOL,
                                      padding="VALID")
            flat = tf.reshape(pooled, [-1, POOL * POOL * 3]) - 0.5
            return {"embedding": tf.tanh(tf.matmul(flat, self.projection))}

    def _decode(data):
        """Encoded bytes -> float32 [SIDE, SIDE, 3] in [0, 1]; fails on bytes TF can't decode."""
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32) / 255.0, [SIDE, SIDE])

    return DermStandIn()


def make(out: Path, *, seed: int = 0) -> Path:
    """Save the stand-in SavedModel (signature `serving_default`) to `out`; return `out`."""
    import tensorflow as tf

    module = build_module(seed)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    write_marker(out, STANDIN_MODEL_ID, seed=seed, embedding_dim=EMBEDDING_DIM, decode_side=SIDE,
                 pool=POOL)
    return out


if __name__ == "__main__":
    run_cli(__doc__, make, seed=0)
