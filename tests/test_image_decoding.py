"""decode_rgb and decode_base64 on images as people have them: every case asserts the exact pixels
the model sees against an independent computation (numpy formulas, Pillow's raw decode of the
same bytes, a LittleCMS transform built separately), then property tests: only ServingErrors
escape the decoders, whatever the bytes.
"""

import base64
import io
import struct
from typing import List, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, JpegImagePlugin

from images_for_tests import encode, photo, separate_planes_tiff
from vfm_serving import errors
from vfm_serving.inputs import images
from vfm_serving.inputs.base64_data import decode_base64
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings

SETTINGS = ServingSettings(max_image_pixels=40_000_000)
PILLOW_DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def rgba_array(w: int = 40, h: int = 30, seed: int = 0) -> np.ndarray:
    """Colours from a real photo, alpha covering 0..255 (every level, stripes of each)."""
    rgb = np.asarray(photo("coffee", (w, h)))
    alpha = (np.arange(w * h, dtype=np.int64).reshape(h, w) * 7 + seed) % 256
    return np.dstack([rgb, alpha.astype(np.uint8)])


def on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Independent float formula: c * a/255 + 255 * (1 - a/255), rounded."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(colour.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)


# --- Pillow's global guard is left alone -------------------------------------------------------


def test_pillow_global_pixel_limit_is_untouched() -> None:
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_MAX_PIXELS


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height with no pixel data: a decompression-bomb header."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(7000, 7000), (20000, 20000), (65535, 65535)])
def test_bomb_headers_are_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(errors.ImageTooLarge):
        decode_rgb(png_header_only(width, height), SETTINGS)
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_MAX_PIXELS


# --- MPO / MPF ---------------------------------------------------------------------------------


def mpo_bytes() -> bytes:
    first, second = photo("astronaut", (96, 64)), photo("rocket", (96, 64))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second], quality=90)
    return buf.getvalue()


def test_mpo_decodes_as_its_first_frame_and_counts_as_jpeg() -> None:
    data = mpo_bytes()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    # Independent: Pillow's plain JPEG reader on the same bytes reads the first image only.
    plain = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    plain.load()
    expected = np.asarray(plain.convert("RGB"))
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), expected)
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS, expected_format="JPEG")),
                                  expected)
    with pytest.raises(errors.MediaTypeMismatch):
        decode_rgb(data, SETTINGS, expected_format="PNG")


# --- base64 forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 9))
def test_base64_alphabets_and_padding(size: int) -> None:
    data = bytes([0xFB, 0xFF, 0xBF, 0x3E, 0x3F, 0x00, 0xFF, 0xFE][:size])  # + / - _ all appear
    standard = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    for text in (standard, urlsafe, standard.rstrip("="), urlsafe.rstrip("="),
                 f"data:image/png;base64,{urlsafe.rstrip('=')}",
                 "\n".join(standard[i:i + 4] for i in range(0, len(standard), 4))):
        assert decode_base64(text, 100) == data, text


@given(st.binary(min_size=1, max_size=300), st.integers(1, 80))
def test_fast_and_tolerant_base64_paths_agree(data: bytes, wrap: int) -> None:
    """Canonical base64 takes the binascii fast path; wrapped / URL-safe / unpadded text takes
    the tolerant path: both give the original bytes."""
    standard = base64.b64encode(data).decode()
    wrapped = "\n".join(standard[i:i + wrap] for i in range(0, len(standard), wrap))
    unpadded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert decode_base64(standard, 1000) == decode_base64(wrapped, 1000) == data
    assert decode_base64(unpadded, 1000) == data


@pytest.mark.parametrize("text", ["A", "AAAAA", "AA=A", "AB==C", "A===", "****", "AA AA!",
                                  "é" * 4, "data:image/png,AAAA", "=", "===="])
def test_base64_still_refuses_what_is_not_base64(text: str) -> None:
    with pytest.raises(errors.InvalidBase64):
        decode_base64(text, 100)


def test_urlsafe_unpadded_image_decodes_to_the_same_pixels() -> None:
    data = encode(photo("chelsea", (50, 40)), "PNG")
    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    np.testing.assert_array_equal(pixels(decode_rgb(decode_base64(text, 10**6), SETTINGS)),
                                  np.asarray(photo("chelsea", (50, 40))))


# --- EXIF orientation --------------------------------------------------------------------------


@pytest.mark.parametrize("orientation,rotate", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation(orientation: int, rotate: int) -> None:
    image = photo("astronaut", (64, 48))
    exif = image.getexif()
    exif[0x0112] = orientation
    data = encode(image, "PNG", exif=exif)
    stored = np.asarray(image)
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), np.rot90(stored, rotate))
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS,
                                                    apply_exif_orientation=False)), stored)


# --- ICC profiles -> sRGB ----------------------------------------------------------------------


def icc_profile(space: bytes, tags: List[Tuple[bytes, bytes]]) -> bytes:
    """A minimal ICC v2 display profile (matrix/TRC), written out byte by byte."""
    table = b""
    body = b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntr"
              + space + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + _xyz(0.9642, 1.0, 0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\0" * 4 + _xyz(x, y, z)


def _gamma(value: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(value * 256))


def _desc(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)


ADOBE_RGB = icc_profile(b"RGB ", [
    (b"desc", _desc("Adobe RGB (1998)-like test profile")), (b"wtpt", _xyz_tag(0.9642, 1, 0.8249)),
    (b"rXYZ", _xyz_tag(0.60974, 0.31111, 0.01947)), (b"gXYZ", _xyz_tag(0.20528, 0.62567, 0.06087)),
    (b"bXYZ", _xyz_tag(0.14919, 0.06322, 0.74457)), (b"rTRC", _gamma(2.19921875)),
    (b"gTRC", _gamma(2.19921875)), (b"bTRC", _gamma(2.19921875)),
    (b"cprt", b"text" + b"\0" * 4 + b"none\0")])
LINEAR_GRAY = icc_profile(b"GRAY", [
    (b"desc", _desc("linear gray test profile")), (b"wtpt", _xyz_tag(0.9642, 1, 0.8249)),
    (b"kTRC", _gamma(1.0)), (b"cprt", b"text" + b"\0" * 4 + b"none\0")])


def separate_transform(image: Image.Image, profile: bytes) -> np.ndarray:
    """LittleCMS transform built here, independently of the code under test."""
    transform = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                        ImageCms.createProfile("sRGB"), image.mode, "RGB")
    out = ImageCms.applyTransform(image, transform)
    assert out is not None
    return np.asarray(out)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
def test_icc_rgb_profile_is_converted_to_srgb(fmt: str) -> None:
    image = photo("coffee", (60, 40))
    data = encode(image, fmt, icc_profile=ADOBE_RGB, **({"lossless": True} if fmt == "WEBP"
                                                       else {}))
    stored = Image.open(io.BytesIO(data))
    assert stored.info.get("icc_profile") == ADOBE_RGB
    stored_rgb = stored.convert("RGB")
    expected = separate_transform(stored_rgb, ADOBE_RGB)
    decoded = pixels(decode_rgb(data, SETTINGS))
    np.testing.assert_array_equal(decoded, expected)
    assert np.abs(decoded.astype(int) - np.asarray(stored_rgb, int)).max() > 10  # it did convert


def test_icc_gray_profile_and_broken_profiles() -> None:
    grey = photo("camera", (50, 40)).convert("L")
    data = encode(grey, "PNG", icc_profile=LINEAR_GRAY)
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)),
                                  separate_transform(grey, LINEAR_GRAY))
    # A profile LittleCMS cannot parse, or for the wrong colour space: ignored, like browsers.
    for profile in (b"not an icc profile" * 8, LINEAR_GRAY):
        rgb = photo("coffee", (30, 20))
        decoded = decode_rgb(encode(rgb, "PNG", icc_profile=profile), SETTINGS)
        np.testing.assert_array_equal(pixels(decoded), np.asarray(rgb))


# --- 16-bit and float --------------------------------------------------------------------------


def test_sixteen_bit_greyscale_png_and_tiff() -> None:
    values = (np.arange(64 * 48, dtype=np.int64).reshape(48, 64) * 23) % 65536
    image = Image.fromarray(values.astype(np.uint16))
    assert image.mode == "I;16"
    expected = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2)
    for fmt in ("PNG", "TIFF"):
        np.testing.assert_array_equal(pixels(decode_rgb(encode(image, fmt), SETTINGS)), expected)


def test_sixteen_bit_rgb_png_and_tiff() -> None:
    import tifffile

    values = ((np.arange(48 * 64 * 3).reshape(48, 64, 3) * 997) % 65536).astype(np.uint16)
    expected = (values >> 8).astype(np.uint8)
    buf = io.BytesIO()
    tifffile.imwrite(buf, values, photometric="rgb")
    np.testing.assert_array_equal(pixels(decode_rgb(buf.getvalue(), SETTINGS)), expected)
    np.testing.assert_array_equal(pixels(decode_rgb(png16_rgb(values), SETTINGS)), expected)


@pytest.mark.parametrize("layout", [{}, {"byteorder": ">"}, {"rowsperstrip": 1},
                                    {"tile": (16, 16)}, {"compression": "zlib"}])
def test_sixteen_bit_rgb_tiff_in_separate_planes(layout) -> None:
    planes = ((np.arange(3 * 48 * 64).reshape(3, 48, 64) * 997) % 65536).astype(np.uint16)
    data = separate_planes_tiff(planes, photometric="rgb", **layout)
    expected = (np.moveaxis(planes, 0, -1) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), expected)
    if "compression" not in layout:  # why tifffile reads these: Pillow alone gets them wrong
        wrong = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert not np.array_equal(wrong, expected)


def test_sixteen_bit_rgba_tiff_in_separate_planes_is_composited_on_white() -> None:
    array = rgba_array(48, 32)
    planes = np.moveaxis(array.astype(np.uint16) * 256 + 128, -1, 0)   # top 8 bits: array
    data = separate_planes_tiff(planes, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)),
                                  on_white(array[..., :3], array[..., 3]))


def test_sixteen_bit_premultiplied_rgba_tiff_in_separate_planes() -> None:
    array = rgba_array(48, 32)
    premultiplied = array.copy()
    premultiplied[..., :3] = (array[..., :3].astype(np.uint32) * array[..., 3:] + 127) // 255
    planes = np.moveaxis(premultiplied.astype(np.uint16) * 257, -1, 0)
    data = separate_planes_tiff(planes, photometric="rgb", extrasamples=["assocalpha"])
    rgba = Image.frombytes("RGBa", (48, 32), premultiplied.tobytes()).convert("RGBA")
    unpremultiplied = np.asarray(rgba)  # Pillow's own RGBa -> RGBA, as for an 8-bit file
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)),
                                  on_white(unpremultiplied[..., :3], unpremultiplied[..., 3]))


def test_separate_planes_tiff_keeps_its_orientation_tag() -> None:
    planes = ((np.arange(3 * 32 * 48).reshape(3, 32, 48) * 389) % 65536).astype(np.uint16)
    data = separate_planes_tiff(planes, photometric="rgb",
                                extratags=[(274, "H", 1, 6, True)])  # 6: rotate 90 clockwise
    stored = (np.moveaxis(planes, 0, -1) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), np.rot90(stored, k=-1))
    as_stored = decode_rgb(data, SETTINGS, apply_exif_orientation=False)
    np.testing.assert_array_equal(pixels(as_stored), stored)


def test_separate_planes_tiff_of_another_sample_type_is_refused() -> None:
    planes = np.arange(3 * 32 * 48, dtype=np.int16).reshape(3, 32, 48)
    with pytest.raises(errors.ImageDecodeError):
        decode_rgb(separate_planes_tiff(planes, photometric="rgb"), SETTINGS)


def png16_rgb(values: np.ndarray) -> bytes:
    """A 48-bit RGB PNG written out (Pillow cannot write one)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    h, w, _ = values.shape
    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("low,high,rule", [(0.0, 1.0, "x255"), (0.0, 255.0, "as is"),
                                           (-3.5, 1000.0, "min-max")])
def test_float_tiff(low: float, high: float, rule: str) -> None:
    values = np.linspace(low, high, 40 * 30, dtype=np.float32).reshape(30, 40)
    v = values.astype(np.float64)
    expected = {"x255": np.rint(v * 255), "as is": np.rint(v),
                "min-max": np.rint((v - low) * 255 / (high - low))}[rule]
    decoded = pixels(decode_rgb(encode(Image.fromarray(values), "TIFF"), SETTINGS))
    np.testing.assert_array_equal(decoded, np.repeat(expected.astype(np.uint8)[..., None], 3, 2))


# --- alpha and palettes on white ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_rgba_is_composited_on_white(fmt: str) -> None:
    array = rgba_array()
    data = encode(Image.fromarray(array), fmt,
                  **({"lossless": True, "exact": True} if fmt == "WEBP" else {}))
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    np.testing.assert_array_equal(stored, array)  # lossless: the formula sees what we wrote
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)),
                                  on_white(array[..., :3], array[..., 3]))


def test_la_is_composited_on_white() -> None:
    array = rgba_array()
    grey = np.asarray(Image.fromarray(array[..., :3]).convert("L"))
    data = encode(Image.fromarray(np.dstack([grey, array[..., 3]]), "LA"), "PNG")
    expected = on_white(np.repeat(grey[..., None], 3, 2), array[..., 3])
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), expected)


def test_palette_with_transparent_index_and_without() -> None:
    array = np.asarray(photo("astronaut", (32, 24)))
    paletted = Image.fromarray(array).quantize(16)
    palette = np.asarray(paletted.getpalette()[:48], np.uint8).reshape(16, 3)
    index = np.asarray(paletted)
    for fmt in ("PNG", "GIF"):
        plain = pixels(decode_rgb(encode(paletted, fmt), SETTINGS))
        np.testing.assert_array_equal(plain, palette[index])
        data = encode(paletted, fmt, transparency=3)
        expected = palette[index].copy()
        expected[index == 3] = 255
        np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), expected)


def test_png_trns_on_rgb_and_greyscale() -> None:
    array = np.asarray(photo("coffee", (32, 24))).copy()
    key = tuple(int(v) for v in array[5, 7])
    data = encode(Image.fromarray(array), "PNG", transparency=key)
    expected = array.copy()
    expected[(array == key).all(axis=2)] = 255
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), expected)
    grey = np.asarray(Image.fromarray(array).convert("L"))
    data = encode(Image.fromarray(grey), "PNG", transparency=int(grey[0, 0]))
    g = np.where(grey == grey[0, 0], 255, grey).astype(np.uint8)
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), np.dstack([g, g, g]))


def test_one_bit_images() -> None:
    bits = (np.indices((24, 32)).sum(axis=0) % 3 == 0)
    image = Image.fromarray(bits.astype(np.uint8) * 255).convert("1")
    expected = np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, 2)
    np.testing.assert_array_equal(pixels(decode_rgb(encode(image, "PNG"), SETTINGS)), expected)


# --- CMYK --------------------------------------------------------------------------------------


def cmyk_formula(cmyk: np.ndarray) -> np.ndarray:
    c = cmyk.astype(np.float64)
    k = c[..., 3:4]
    return np.rint((255.0 - c[..., :3]) * (255.0 - k) / 255.0).astype(np.uint8)


def test_cmyk_tiff_and_jpeg() -> None:
    rng = np.random.default_rng(1)
    cmyk = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    image = Image.fromarray(cmyk, "CMYK")
    np.testing.assert_array_equal(pixels(decode_rgb(encode(image, "TIFF"), SETTINGS)),
                                  cmyk_formula(cmyk))
    jpeg = encode(image, "JPEG", quality=95)
    stored = np.asarray(Image.open(io.BytesIO(jpeg)))  # the decoder's CMYK values
    np.testing.assert_array_equal(pixels(decode_rgb(jpeg, SETTINGS)), cmyk_formula(stored))


# --- animations and pages: the first frame -----------------------------------------------------


FRAME_COLOURS = [(200, 30, 40), (10, 220, 30), (20, 40, 230)]


def frames() -> List[Image.Image]:
    return [Image.new("RGB", (40, 30), colour) for colour in FRAME_COLOURS]


@pytest.mark.parametrize("fmt,kwargs", [("GIF", {}), ("WEBP", {"lossless": True}),
                                        ("PNG", {}), ("TIFF", {})])
def test_first_frame_or_page(fmt: str, kwargs: dict) -> None:
    first, *rest = frames()
    data = encode(first, fmt, save_all=True, append_images=rest, duration=100, **kwargs)
    opened = Image.open(io.BytesIO(data))
    assert getattr(opened, "n_frames", 1) == 3  # really animated / multi-page
    expected = np.broadcast_to(np.asarray(FRAME_COLOURS[0], np.uint8), (30, 40, 3))
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), expected)


def test_animated_gif_with_transparent_first_frame() -> None:
    palette = [c for colour in FRAME_COLOURS for c in colour] + [0] * (256 * 3 - 9)
    gif_frames = []
    for index in range(3):
        frame = Image.new("P", (40, 30), index)
        frame.putpalette(palette)
        frame.paste(1, (0, 0, 20, 30))  # left half: colour 1 (green), right half: index
        gif_frames.append(frame)
    data = encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:],
                  transparency=0, disposal=2, duration=100)
    expected = np.empty((30, 40, 3), np.uint8)
    expected[:, :20] = FRAME_COLOURS[1]
    expected[:, 20:] = 255  # index 0 is transparent: white
    np.testing.assert_array_equal(pixels(decode_rgb(data, SETTINGS)), expected)


# --- reduced decoding (issue 8) ----------------------------------------------------------------


def big_jpeg(size: Tuple[int, int] = (2000, 1500)) -> bytes:
    return encode(photo("astronaut", size), "JPEG", quality=92)


def test_reduced_decode_scale_choice_and_bit_exact_off_switch() -> None:
    data = big_jpeg()
    full = decode_rgb(data, SETTINGS)
    assert full.size == (2000, 1500)
    reduced = decode_rgb(data, SETTINGS, reduce_for=224)   # 1500 / 2 / 2 = 375 < 448: 1/2
    assert reduced.size == (1000, 750)
    assert decode_rgb(data, SETTINGS, reduce_for=100).size == (500, 375)  # 1/4: 375 >= 200
    assert decode_rgb(data, SETTINGS, reduce_for=50).size == (250, 188)   # 1/8
    assert decode_rgb(data, SETTINGS, reduce_for=800).size == (2000, 1500)  # not worth it
    off = ServingSettings(reduced_decode=False)
    np.testing.assert_array_equal(pixels(decode_rgb(data, off, reduce_for=224)), pixels(full))
    # Not a JPEG: never reduced.
    png = encode(photo("astronaut", (1200, 900)), "PNG")
    assert decode_rgb(png, SETTINGS, reduce_for=50).size == (1200, 900)


def test_reduced_decode_is_a_faithful_downscale() -> None:
    data = big_jpeg()
    reduced = decode_rgb(data, SETTINGS, reduce_for=224)
    reference = decode_rgb(data, SETTINGS).resize(reduced.size, Image.BILINEAR, reducing_gap=None)
    diff = np.abs(pixels(reduced).astype(int) - pixels(reference).astype(int))
    assert diff.mean() < 2.0


def test_reduced_decode_keeps_exif_orientation_and_mpo() -> None:
    image = photo("astronaut", (1600, 1000))
    exif = image.getexif()
    exif[0x0112] = 6
    data = encode(image, "JPEG", exif=exif)
    assert decode_rgb(data, SETTINGS, reduce_for=100).size == (250, 400)
    buf = io.BytesIO()
    image.save(buf, "MPO", save_all=True, append_images=[photo("rocket", (1600, 1000))])
    assert decode_rgb(buf.getvalue(), SETTINGS, reduce_for=100,
                      expected_format="JPEG").size == (400, 250)


# --- corrupt and truncated ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP"])
def test_truncated_files(fmt: str) -> None:
    data = encode(photo("coffee", (64, 48)), fmt)
    for cut in (len(data) // 2, len(data) - 20, 40, 8):
        try:
            decoded = decode_rgb(data[:cut], SETTINGS)
        except errors.ServingError as err:
            assert err.code in ("image_decode_failed", "invalid_image_geometry"), err.code
        else:  # some decoders stop gracefully on a truncated tail; it is still an RGB image
            assert decoded.mode == "RGB"


# --- properties --------------------------------------------------------------------------------

SEEDS = [encode(photo("coffee", (24, 16)), fmt, **kw) for fmt, kw in [
    ("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {}),
    ("PNG", {"icc_profile": ADOBE_RGB}), ("JPEG", {"progressive": True})]]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TIGHT = ServingSettings(max_image_pixels=1_000_000)


def _decode_or_serving_error(data: bytes, **kwargs: object) -> None:
    try:
        image = decode_rgb(data, TIGHT, **kwargs)  # type: ignore[arg-type]
    except errors.ServingError as err:
        assert err.client_error
        return
    assert image.mode == "RGB" and image.size[0] * image.size[1] <= 1_000_000


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                        max_size=6), st.integers(0, 10**6) | st.none())
def test_mutated_images_decode_or_raise_serving_errors(seed: bytes, flips: list, cut: int) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    _decode_or_serving_error(bytes(data))
    _decode_or_serving_error(bytes(data), reduce_for=8, expected_format="JPEG")


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_serving_errors(data: bytes) -> None:
    _decode_or_serving_error(data)


@FUZZ
@given(st.text(max_size=60) | st.from_regex(r"(data:image/png;base64,)?[A-Za-z0-9+/_=\s-]{0,40}",
                                            fullmatch=True))
def test_base64_text_decodes_or_raises_serving_errors(text: str) -> None:
    try:
        decode_base64(text, 30)
    except errors.ServingError as err:
        assert err.code in ("invalid_base64", "image_too_large")


def test_module_constants() -> None:
    assert images.REDUCED_DECODE_MARGIN >= 1.0
