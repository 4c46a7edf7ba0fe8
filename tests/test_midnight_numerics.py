"""Served Midnight embeddings equal an independent computation of the model card's recipe.

Reference = torchvision's Resize(224) / CenterCrop(224) semantics on a PIL image written out here
from torchvision's definitions (not the serving code), ToTensor + Normalize(0.5, 0.5) in numpy,
the checkpoint's own forward (loaded separately with transformers), and the card's pooling.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel

from images_for_tests import b64, encode, photo

SIZE = 224
# (name, W, H): square, landscape, portrait, odd sizes, smaller than 224, extreme-ish aspect.
CASES = [("astronaut", 512, 512), ("coffee", 600, 400), ("chelsea", 300, 451),
         ("rocket", 227, 225), ("astronaut", 100, 150), ("coffee", 1000, 230)]


def reference_pixels(image: Image.Image) -> np.ndarray:
    """torchvision T.Compose([Resize(224), CenterCrop(224), ToTensor(), Normalize(.5, .5)])."""
    w, h = image.size
    # torchvision _compute_resized_output_size for an int size: short side -> 224, long truncated
    if w <= h:
        new_w, new_h = SIZE, int(SIZE * h / w)
    else:
        new_w, new_h = int(SIZE * w / h), SIZE
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    # torchvision center_crop: int(round((size_in - size_out) / 2.0))
    top = int(round((image.height - SIZE) / 2.0))
    left = int(round((image.width - SIZE) / 2.0))
    image = image.crop((left, top, left + SIZE, top + SIZE))
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (array - 0.5) / 0.5


def reference_embeddings(checkpoint: str, images: list, task: str) -> np.ndarray:
    model = AutoModel.from_pretrained(checkpoint).eval()
    pixels = torch.from_numpy(np.stack([reference_pixels(im) for im in images]))
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state
    registers = getattr(model.config, "num_register_tokens", 0) or 0
    cls, patches = tokens[:, 0], tokens[:, 1 + registers:]
    if task == "classification":
        return torch.cat([cls, patches.mean(1)], dim=-1).numpy()
    grid = SIZE // model.config.patch_size
    b, _, d = patches.shape
    return patches.reshape(b, grid, grid, d).permute(0, 3, 1, 2).numpy()


@pytest.fixture(scope="module")
def midnight(truss_server_factory):
    return truss_server_factory("midnight")


@pytest.fixture(scope="module")
def standin_dir():
    from tools.manifest import prepare_standin

    return prepare_standin("midnight")["MIDNIGHT_CHECKPOINT"]


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_served_embeddings_match_independent_reference(midnight, standin_dir, task):
    images = [photo(name, (w, h)) for name, w, h in CASES]
    body = {"image_base64_list": [b64(encode(im, "PNG")) for im in images], "task": task,
            "batch_size": 4}
    response = midnight.predict(body)
    assert response.status_code == 200, response.text
    served = np.asarray(response.json()["embeddings"], dtype=np.float32)
    expected = reference_embeddings(standin_dir, images, task)
    assert served.shape == expected.shape
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
    # The comparison can fail: different images give clearly different embeddings.
    assert np.abs(served[0] - served[1]).max() > 1e-2


def test_exif_orientation_is_applied(midnight, standin_dir):
    upright = photo("chelsea", (300, 200))
    # Store the pixels rotated and tag orientation 6 ("rotate 90 CW to display").
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    response = midnight.predict({"image_base64": b64(data)})
    assert response.status_code == 200, response.text
    displayed = Image.open(__import__("io").BytesIO(data))
    displayed = displayed.transpose(Image.Transpose.ROTATE_270).convert("RGB")
    expected = reference_embeddings(standin_dir, [displayed], "classification")
    served = np.asarray(response.json()["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
    unrotated = reference_embeddings(standin_dir, [stored.convert("RGB")], "classification")
    assert np.abs(served - unrotated).max() > 1e-3


def test_register_token_checkpoint_uses_config_layout(truss_server_factory, tmp_path):
    """A DINOv2-with-registers checkpoint: register tokens are excluded from pooling/grid."""
    from tools.standins.midnight import make

    checkpoint = make(tmp_path / "registers", registers=4)
    (checkpoint / "STANDIN.json").unlink()  # any local DINOv2 checkpoint, not our stand-in
    server = truss_server_factory("midnight", env={"MIDNIGHT_CHECKPOINT": str(checkpoint)})
    images = [photo("rocket", (320, 240)), photo("coffee", (240, 320))]
    for task in ("classification", "segmentation"):
        response = server.predict({"image_base64_list": [b64(encode(im)) for im in images],
                                   "task": task})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_id"] == str(checkpoint)
        expected = reference_embeddings(str(checkpoint), images, task)
        np.testing.assert_allclose(np.asarray(body["embeddings"], dtype=np.float32), expected,
                                   atol=1e-5, rtol=0)
