"""Real photos shipped inside PyPI wheels (offline): the one sample-photo helper of the project.

Sources (`source` = the package that ships the photos; every photo is read from the installed
package's own files, nothing is downloaded):

- scikit-image: astronaut, brick, cell, chelsea, coffee, coins, grass, gravel,
  hubble_deep_field, immunohistochemistry, moon, motorcycle, retina, rocket, text (training);
- opencv-python: 26 camera photos of `opencv/samples/data/` in its SOURCE archive, not the wheel
  (tools/photo_archives.py fetches the pinned sdist from PyPI once; names prefixed `cv_`)
  (training);
- Pillow: 8 camera photos of `Tests/images/` in its SOURCE archive (tools/photo_archives.py; names
  prefixed `pil_`) (training);
- mahotas: luispedro, nuclear; glymur: nemo, goodstuff (validation: calibration, model choice);
- scikit-learn: china, flower; matplotlib: grace_hopper; PyWavelets: aero, ascent, camera
  (EVALUATION ONLY, never in training).

scikit-image's `camera` is the same photo as PyWavelets' `camera`, so it is not a training photo.
Left out on purpose: mahotas' lena.jpg, DepartmentStore.jpg (a drawing), glymur's heliov.jpx (a
solar image), matplotlib's Minduka_Present_Blue_Pack.png (a 128 px rendering), scikit-image's
synthetic images (clock_motion, color wheel, logos, binary masks). imgaug ships quokka.jpg but
pulls in opencv, Shapely and more: not installed for one photo.

`photo("astronaut")` keeps the old behaviour of the four helpers this module replaces (a
scikit-image sample by name, RGB, optionally resized).
"""

import base64
import functools
import importlib.util
import io
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from tools.photo_archives import ARCHIVES, archive_photo

SOURCES: Dict[str, Tuple[str, ...]] = {
    "scikit-image": ("astronaut", "brick", "cell", "chelsea", "coffee", "coins", "grass",
                     "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle",
                     "retina", "rocket", "text"),
    "opencv-python": tuple(ARCHIVES["opencv-python"].files),
    "Pillow": tuple(ARCHIVES["Pillow"].files),
    "mahotas": ("luispedro", "nuclear"),
    "glymur": ("nemo", "goodstuff"),
    "scikit-learn": ("china", "flower"),
    "matplotlib": ("grace_hopper",),
    "PyWavelets": ("aero", "ascent", "camera"),
}
EVALUATION_ONLY_SOURCES = ("scikit-learn", "matplotlib", "PyWavelets")
"""Sources reserved for independent evaluation: never used to train the SAFE heads."""

_PACKAGE_FILES = {  # source -> (import name, folder inside the package, {photo: file})
    "mahotas": ("mahotas", "demos/data", {"luispedro": "luispedro.jpg",
                                          "nuclear": "nuclear.png"}),
    "glymur": ("glymur", "data", {"nemo": "nemo.jp2", "goodstuff": "goodstuff.j2k"}),
    "scikit-learn": ("sklearn", "datasets/images", {"china": "china.jpg",
                                                     "flower": "flower.jpg"}),
    "matplotlib": ("matplotlib", "mpl-data/sample_data", {"grace_hopper": "grace_hopper.jpg"}),
}


def source_of(name: str) -> str:
    """The source (package) that ships photo `name`. Raises KeyError for an unknown photo."""
    for source, names in SOURCES.items():
        if name in names:
            return source
    from skimage import data

    if callable(getattr(data, name, None)):
        return "scikit-image"
    raise KeyError(f"unknown sample photo {name!r}")


def photos_of(sources: Tuple[str, ...]) -> List[Tuple[str, str]]:
    """[(source, photo)] for the given sources, in SOURCES order."""
    return [(s, n) for s in SOURCES if s in sources for n in SOURCES[s]]


def _package_dir(module: str) -> Path:
    """Install folder of a package, found without importing it.

    Raises:
        ModuleNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {module!r} is not installed (see requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def _skimage_array(name: str) -> Optional[np.ndarray]:
    """A scikit-image sample (`motorcycle` = the left view of the stereo pair), or None."""
    from skimage import data

    if name == "motorcycle":
        return np.asarray(Image.open(Path(data.__file__).parent / "motorcycle_left.png"))
    loader = getattr(data, name, None)
    return loader() if callable(loader) else None


@functools.lru_cache(maxsize=64)
def _load(name: str) -> Image.Image:
    """Photo `name` as an RGB PIL image at its shipped size (cached; callers get copies)."""
    source = source_of(name)
    if source == "scikit-image":
        array = _skimage_array(name)
        if array is None:
            raise KeyError(f"scikit-image has no sample {name!r}")
        return Image.fromarray(array).convert("RGB")
    if source == "PyWavelets":
        import pywt.data

        return Image.fromarray(getattr(pywt.data, name)()).convert("RGB")
    if source in ARCHIVES:
        path = archive_photo(source, name)
    else:
        module, folder, files = _PACKAGE_FILES[source]
        path = _package_dir(module) / folder / files[name]
    with Image.open(path) as image:
        return image.convert("RGB")


def photo(name: str = "astronaut", size: Optional[Tuple[int, int]] = None) -> Image.Image:
    """Sample photo `name` (any source above) as RGB, optionally resized (bicubic) to (W, H).

    Raises:
        KeyError: unknown photo; ModuleNotFoundError: its package is not installed.
    """
    image = _load(name).copy()
    return image.resize(size, Image.Resampling.BICUBIC) if size else image


def photo_array(name: str, short_side: Optional[int] = None) -> np.ndarray:
    """Photo `name` as RGB uint8 [H, W, 3], downscaled (Lanczos) so its short side is at most
    `short_side` when given."""
    image = _load(name)
    if short_side is not None and min(image.size) > short_side:
        scale = short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.Resampling.LANCZOS)
    return np.asarray(image)


def photo_png_base64(name: str) -> str:
    """Photo `name` as a base64 PNG string."""
    buf = io.BytesIO()
    photo(name).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
