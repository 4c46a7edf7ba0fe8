"""Unit tests of the SAFE detection pieces (no server): windows, residuals, masks, API parsing,
mask rule, AUC formula."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from vfm_serving.apis.safe import SafeApi, build_response
from vfm_serving.detection import FULLY_SYNTHESIZED, LOCALLY_EDITED, NATURAL, forensics
from vfm_serving.detection.detector import decide_mask
from vfm_serving.detection.heads import HeadsUnreadableError, read_config
from vfm_serving.detection.residuals import (
    FEATURE_NAMES,
    _filter,
    _kernel_bank,
    image_deviation,
    lower_quantile,
    patch_statistics,
)
from vfm_serving.detection.windows import plan_tiling, stitch, window_starts
from vfm_serving.errors import InvalidRequest, MediaTypeMismatch, MissingImage
from vfm_serving.outputs.masks import mask_to_png
from vfm_serving.settings import ServingSettings

SHIPPED_HEADS = Path(__file__).resolve().parents[1] / "safe_detector" / "data"


def png_to_mask(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 [H, W] in {0, 1} (any non-zero pixel -> 1)."""
    image = Image.open(io.BytesIO(data))
    return (np.asarray(image.convert("L")) != 0).astype(np.uint8)


@pytest.mark.parametrize("size", [(32, 32), (224, 224), (300, 451), (2048, 2048), (3584, 224),
                                  (225, 4000), (6000, 4000), (640, 40)])
def test_tiling_covers_the_image_within_the_window_budget(size):
    tiling = plan_tiling(*size, window=224, stride=168, max_windows=16)
    w, h = tiling.size
    assert tiling.num_windows <= 16 and min(w, h) >= 224
    covered = np.zeros((h, w), bool)
    for top, left in tiling.boxes:
        assert 0 <= top <= h - 224 and 0 <= left <= w - 224
        covered[top:top + 224, left:left + 224] = True
    assert covered.all()
    probs = torch.rand(tiling.num_windows, 16, 16)
    assert tuple(stitch(probs, tiling).shape) == (size[1], size[0])


def test_native_resolution_when_it_fits():
    tiling = plan_tiling(600, 400, window=224, stride=168, max_windows=16)
    assert tiling.size == (600, 400) and tiling.num_windows == 4 * 3
    assert window_starts(600, 224, 168) == [0, 125, 251, 376]


def test_residual_statistics_see_local_blur():
    rng = np.random.default_rng(0)
    image = rng.normal(128, 20, (224, 224, 3))
    blurred = image.copy()
    blurred[:112] = ndimage.gaussian_filter(image, (2, 2, 0))[:112]
    stats = patch_statistics(np.clip(blurred, 0, 255).astype(np.uint8)[None], 14, [(0, 0)])
    assert stats.shape == (1, 256, len(FEATURE_NAMES)) and torch.isfinite(stats).all()
    kv = FEATURE_NAMES.index("kv_logabs")
    top, bottom = stats[0, :128, kv], stats[0, 128:, kv]  # rows 0-7 blurred, 8-15 not
    assert top.max() < bottom.min()
    z, median = image_deviation(stats)
    assert z.shape == stats.shape and median.shape == (len(FEATURE_NAMES),)


def test_mask_png_is_one_bit_and_exact_size():
    mask = np.zeros((7, 13), np.uint8)
    mask[2:5, 3:9] = 1
    data = mask_to_png(mask)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "1" and image.size == (13, 7)
    np.testing.assert_array_equal(png_to_mask(data), mask)


def test_mask_rule():
    prob = torch.zeros(10, 20)
    prob[2:4, 5:9] = 0.2  # below threshold 0.5
    assert not decide_mask(NATURAL, prob, 0.5).any()
    assert decide_mask(FULLY_SYNTHESIZED, prob, 0.5).all()
    local = decide_mask(LOCALLY_EDITED, prob, 0.5)  # empty -> top-scoring region
    assert local.sum() == 8 and local[2:4, 5:9].all()


def test_mask_rule_keeps_the_regions_with_enough_probability_mass():
    """Three blobs above the threshold: a wide weak one, a small strong one, and one that
    touches the wide one only at a corner (8-connected: the same region). The region masses
    are checked against scipy's own labelling."""
    prob = torch.zeros(40, 40)
    prob[2:12, 2:22] = 0.6          # 200 px x 0.6 = 120
    prob[12:14, 22:24] = 0.6        # diagonal neighbour of the block above: +2.4 -> 122.4
    prob[25:33, 25:35] = 0.95       # 80 px x 0.95 = 76
    prob[30:32, 2:4] = 0.55         # 4 px: 2.2
    threshold = 0.5
    every = decide_mask(LOCALLY_EDITED, prob, threshold, 0.0)
    np.testing.assert_array_equal(every, (prob >= threshold).numpy())
    regions, count = ndimage.label(every, structure=np.ones((3, 3)))
    assert count == 3
    mass = ndimage.sum_labels(prob.numpy(), regions, np.arange(1, count + 1))
    for fraction in (1.0, 0.6, 0.5, 0.01):
        kept = decide_mask(LOCALLY_EDITED, prob, threshold, fraction)
        expected = np.isin(regions, 1 + np.flatnonzero(mass >= fraction * mass.max()))
        np.testing.assert_array_equal(kept, expected.astype(np.uint8))
    assert decide_mask(LOCALLY_EDITED, prob, threshold, 1.0)[2:14, 2:24].sum() == 204
    assert decide_mask(LOCALLY_EDITED, prob, threshold, 0.6)[25:33, 25:35].all()
    assert decide_mask(NATURAL, prob, threshold, 1.0).sum() == 0
    assert decide_mask(FULLY_SYNTHESIZED, prob, threshold, 1.0).all()


def test_heads_written_before_the_region_rule_keep_every_region(tmp_path):
    config = json.loads((SHIPPED_HEADS / "heads.json").read_text())
    assert config["mask_region_fraction"] == 1.0
    del config["mask_region_fraction"]
    (tmp_path / "heads.json").write_text(json.dumps(config))
    assert read_config(tmp_path).mask_region_fraction == 0.0
    config["mask_region_fraction"] = 1.5                 # would drop every region
    (tmp_path / "heads.json").write_text(json.dumps(config))
    with pytest.raises(HeadsUnreadableError, match="mask_region_fraction"):
        read_config(tmp_path)


def test_parse_request_errors():
    api = SafeApi()
    with pytest.raises(MissingImage):
        api.parse({})
    with pytest.raises(MediaTypeMismatch):
        api.parse({"image": {"mediaType": "image/webp", "data": "AAAA"}})
    with pytest.raises(InvalidRequest):
        api.parse({"image": "AAAA"})
    ok = api.parse({"image": {"mediaType": "IMAGE/PNG", "data": "eA=="}, "extra": 1})
    assert ok.options.expected_format == "PNG" and len(ok.items) == 1  # base64 decoded later


def test_unreadable_heads_have_their_own_error(tmp_path):
    (tmp_path / "heads.json").write_text("{not json")
    with pytest.raises(HeadsUnreadableError):
        read_config(tmp_path)
    with pytest.raises(HeadsUnreadableError):
        read_config(tmp_path / "missing")


def test_build_response_refuses_invalid_logprobs():
    with pytest.raises(ValueError):
        build_response(np.array([0.0, np.nan, 0.0, 0.0]), np.zeros((2, 2)))


def test_rank_auc_matches_brute_force():
    from tools.safe.train import rank_auc

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert rank_auc(scores, labels) == pytest.approx(brute)


def test_safe_settings_from_env():
    settings = ServingSettings.from_env({"VFM_SAFE_WINDOW_STRIDE": "112",
                                         "VFM_SAFE_MAX_WINDOWS": "9"})
    assert settings.safe_window_stride == 112 and settings.safe_max_windows == 9


def test_heads_of_an_older_format_fail_at_load(tmp_path):
    """Heads whose global vector was defined differently (format 2: maxima, not top-1% means)
    must not load silently."""
    from vfm_serving.detection.heads import FORMAT_VERSION, HeadsMismatchError

    config = json.loads((SHIPPED_HEADS / "heads.json").read_text())
    assert config["format_version"] == FORMAT_VERSION == 5
    config["format_version"] = 2
    (tmp_path / "heads.json").write_text(json.dumps(config))
    with pytest.raises(HeadsMismatchError, match="format_version 2"):
        read_config(tmp_path)


def test_patch_rows_without_tokens_have_the_declared_width():
    from vfm_serving.detection.detector import patch_dim, patch_matrix

    n, grid, hidden = 2, 4, 8
    features = _random_features(n, grid, hidden)
    with_tokens, without = patch_matrix(features, True), patch_matrix(features, False)
    assert with_tokens.shape == (n * grid * grid, patch_dim(hidden, True))
    assert without.shape == (n * grid * grid, patch_dim(hidden, False))
    # the token-free rows are the token rows with the first `hidden` columns removed
    torch.testing.assert_close(without, with_tokens[:, hidden:])


def test_global_pooling_does_not_grow_with_the_number_of_patches():
    """The pooled 'maxima' of the forensic features are top-1% means: an image tiled into more
    windows does not score higher just because it has more patches. On i.i.d. N(0, 1) features
    the max over 8x more patches grows by ~0.5; the top-1% mean stays near 2.67."""
    from vfm_serving.detection.detector import (
        ImageFeatures,
        global_vector,
        pooled_probabilities,
    )
    from vfm_serving.detection.forensics import NUM_FORENSIC, RELATIVE_NAMES

    rng = torch.Generator().manual_seed(0)
    r = len(FEATURE_NAMES)

    def pooled(windows: int) -> tuple:
        p = 256
        forensic = torch.randn(windows, p, NUM_FORENSIC, generator=rng)
        features = ImageFeatures(
            tiling=plan_tiling(224, 224, 224, 168, 1), patch_tokens=torch.zeros(windows, p, 4),
            cls=torch.zeros(windows, 4), stats=torch.zeros(windows, p, r),
            deviation=torch.zeros(windows, p, r), median=torch.zeros(r), grid=16,
            forensic=forensic, forensic_median=torch.zeros(len(RELATIVE_NAMES)))
        probs = torch.full((windows, p), 0.1)
        vector = global_vector(features, probs, pooled_probabilities(probs, 0.5),
                               token_features=False)
        start = 4 + 3 * r + NUM_FORENSIC           # pooled probs, residual blocks, forensic means
        top1 = vector[start:start + NUM_FORENSIC]
        return float(top1.mean()), float(forensic.reshape(-1, NUM_FORENSIC).max(0).values.mean())

    (top1_small, max_small), (top1_large, max_large) = pooled(4), pooled(32)
    assert max_large - max_small > 0.3                 # what a max would have done
    assert abs(top1_large - top1_small) < 0.15
    assert 2.4 < top1_small < 2.95 and 2.4 < top1_large < 2.95


def _busy_and_smooth_stats(rng: np.random.Generator, n: int, p: int):
    """(busy [n, p] bool, texture [n, p], stats float32 [n, p, F]): 30% busy patches (texture
    3) among smooth ones (0), noise 0.2; the TEXTURE_FEATURES columns hold the texture, the
    others 0."""
    from vfm_serving.detection.residuals import TEXTURE_FEATURES

    busy = rng.random((n, p)) < 0.3
    texture = np.where(busy, 3.0, 0.0) + rng.normal(0, 0.2, (n, p))
    stats = np.zeros((n, p, len(FEATURE_NAMES)), np.float32)
    for name in TEXTURE_FEATURES:
        stats[..., FEATURE_NAMES.index(name)] = texture
    return busy, texture, stats


def _random_features(n: int, grid: int, hidden: int):
    """ImageFeatures of n windows with random tokens, statistics and forensic maps."""
    from vfm_serving.detection.detector import ImageFeatures
    from vfm_serving.detection.forensics import NUM_FORENSIC, RELATIVE_NAMES

    r = len(FEATURE_NAMES)
    return ImageFeatures(
        tiling=plan_tiling(64, 64, 56, 56, 4), patch_tokens=torch.randn(n, grid * grid, hidden),
        cls=torch.randn(n, hidden), stats=torch.randn(n, grid * grid, r),
        deviation=torch.randn(n, grid * grid, r), median=torch.randn(r), grid=grid,
        forensic=torch.randn(n, grid * grid, NUM_FORENSIC),
        forensic_median=torch.randn(len(RELATIVE_NAMES)))


def test_texture_conditioned_deviation_keeps_minority_content_normal():
    """A smooth face (70% of the patches) against a busy background (30%): the plain robust
    z-score flags the whole background, the texture-conditioned one does not; noise added to a
    few patches stands out in both."""
    from vfm_serving.detection.residuals import texture_conditioned_deviation

    rng = np.random.default_rng(0)
    n, p = 4, 256
    busy, texture, stats = _busy_and_smooth_stats(rng, n, p)
    noise = FEATURE_NAMES.index("log_noise_mad")
    stats[..., noise] = 0.8 * texture + rng.normal(0, 0.1, (n, p))  # noise follows texture
    edited = np.zeros((n, p), bool)
    edited[0, :12] = True
    stats[..., noise][edited] += 1.0                                 # added noise: +1 log unit
    stats_t = torch.from_numpy(stats)
    plain, _ = image_deviation(stats_t)
    conditioned = texture_conditioned_deviation(stats_t)
    normal_busy = busy & ~edited
    assert float(plain[..., noise][torch.from_numpy(normal_busy)].abs().median()) > 5
    assert float(conditioned[..., noise][torch.from_numpy(normal_busy)].abs().median()) < 1.5
    assert float(conditioned[..., noise][torch.from_numpy(edited)].median()) > 3
    assert conditioned.shape == stats_t.shape and bool(conditioned.abs().max() <= 8)


def test_texture_conditioning_of_forensic_maps_keeps_smooth_content_normal():
    """A resampling-like map that is high wherever the content is smooth (bokeh, sky: their
    residuals are correlated) against busy patches: conditioned on the image's own texture, the
    smooth majority and the busy minority are ordinary and a region whose map departs from that
    relation stands out."""
    from vfm_serving.detection.residuals import texture_conditioned_deviation

    rng = np.random.default_rng(1)
    n, p = 3, 256
    busy, texture, stats = _busy_and_smooth_stats(rng, n, p)
    maps = np.stack([-0.9 * texture + rng.normal(0, 0.1, (n, p)),   # follows texture
                     rng.normal(0, 1.0, (n, p))], -1).astype(np.float32)  # does not
    edited = np.zeros((n, p), bool)
    edited[1, 40:52] = True
    maps[..., 0][edited] += 1.5
    stats_t, maps_t = torch.from_numpy(stats), torch.from_numpy(maps)
    conditioned = texture_conditioned_deviation(stats_t, maps_t)
    assert conditioned.shape == maps_t.shape and bool(conditioned.abs().max() <= 8)
    normal = torch.from_numpy(~edited)
    plain_z = (maps_t[..., 0] - maps_t[..., 0].median()) / maps_t[..., 0][normal].std()
    assert float(plain_z[torch.from_numpy(busy & ~edited)].abs().median()) > 1.5
    assert float(conditioned[..., 0][normal].abs().median()) < 1.0
    assert float(conditioned[..., 0][torch.from_numpy(edited)].median()) > 3


def test_patch_rows_end_with_the_conditioned_forensic_context():
    """The last 2K columns of a patch row: the neighbourhood mean of the texture-conditioned
    relative forensic maps, then its absolute value."""
    from vfm_serving.detection.detector import neighbourhood, patch_matrix
    from vfm_serving.detection.forensics import CM_NAMES, RELATIVE_NAMES
    from vfm_serving.detection.residuals import texture_conditioned_deviation

    features = _random_features(n=2, grid=4, hidden=8)
    rows = patch_matrix(features, token_features=False)
    k = len(RELATIVE_NAMES)
    conditioned = texture_conditioned_deviation(features.stats,
                                                features.forensic[..., len(CM_NAMES):])
    context = neighbourhood(conditioned, features.grid).reshape(-1, k)
    torch.testing.assert_close(rows[:, -2 * k:-k], context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rows[:, -k:], context.abs(), atol=1e-5, rtol=1e-5)


def test_heads_for_rows_of_another_width_fail_at_load(tmp_path):
    """Heads whose config says the patch rows hold the backbone's tokens, while their weights
    take token-free rows: refused at load, not at the first predict."""
    import shutil

    from vfm_serving.detection.detector import load_detector
    from vfm_serving.detection.heads import HeadsMismatchError

    for name in ("heads.json", "heads.safetensors"):
        shutil.copy(SHIPPED_HEADS / name, tmp_path / name)
    config = json.loads((tmp_path / "heads.json").read_text())
    assert config["patch_token_features"] is False
    config["patch_token_features"] = True
    (tmp_path / "heads.json").write_text(json.dumps(config))
    with pytest.raises(HeadsMismatchError, match="patch / global / edit rows"):
        load_detector(tmp_path, str(SHIPPED_HEADS / "standin_backbone"), stride=168,
                      max_windows=4)


@pytest.mark.parametrize("q", [0.0, 0.25, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("n", [2, 49, 196])
def test_lower_quantile_is_torch_quantile(q, n):
    values = torch.randn(3, 7, n, generator=torch.Generator().manual_seed(n))
    values[0, 0, : n // 2] = 1.5  # ties
    expected = values.quantile(q, dim=-1)
    torch.testing.assert_close(lower_quantile(values, q), expected, rtol=0, atol=1e-6)


def test_residual_filter_is_reflect_padded_conv2d():
    """The OpenCV correlation gives torch's reflect-padded conv2d (the definition) exactly."""
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.uniform(0, 255, (2, 1, 30, 23)).astype(np.float32))
    bank = _kernel_bank()
    pad = bank.shape[-1] // 2
    expected = torch.nn.functional.conv2d(
        torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect"), bank)
    torch.testing.assert_close(_filter(images, bank), expected, rtol=1e-6, atol=1e-4)


def test_block_mean_and_laplacian_match_their_definitions():
    rng = np.random.default_rng(4)
    grey = rng.uniform(0, 255, (37, 50)).astype(np.float32)
    expected = grey[:32, :48].reshape(4, 8, 6, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(forensics._block_mean(grey), expected, rtol=1e-5)
    maps = forensics._laplacian_maps(grey)
    lap = ndimage.laplace(grey.astype(np.float64))
    noise = np.log(forensics._smooth(np.abs(lap)[:32, :48].reshape(4, 8, 6, 8).mean(axis=(1, 3)),
                                     2) + 0.5)
    np.testing.assert_allclose(maps["noise_level"], noise, rtol=1e-5, atol=1e-5)


def test_calibrated_logprobs_follow_their_definition():
    """The served log-probabilities against the formula of detector.calibrated_logprobs written
    out in numpy: FullySynthesized from the global head, Natural vs the local labels from the
    edit gate, the local split from the global head; logsumexp 0; a batch equals its rows."""
    from vfm_serving.detection.detector import calibrated_logprobs

    rng = np.random.default_rng(0)
    logits, edit = rng.normal(0, 3, (64, 4)), rng.normal(0, 3, (64, 2))
    t, t_edit, b_nat, b_full = 1.3, 0.7, 0.4, -1.2

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    batch = calibrated_logprobs(torch.from_numpy(logits), torch.from_numpy(edit), t, t_edit,
                                (b_nat, b_full, 0.0, 0.0))
    assert batch.shape == (64, 4) and batch.dtype == np.float64
    for i in range(64):
        full = softmax(logits[i] / t + np.array([0, b_full, 0, 0]))[1]
        gate = softmax(edit[i] / t_edit + np.array([b_nat, 0]))
        local = softmax(logits[i, 2:] / t)
        expected = np.array([(1 - full) * gate[0], full, (1 - full) * gate[1] * local[0],
                             (1 - full) * gate[1] * local[1]])
        np.testing.assert_allclose(np.exp(batch[i]), expected, rtol=1e-10, atol=1e-15)
        one = calibrated_logprobs(torch.from_numpy(logits[i]), torch.from_numpy(edit[i]), t,
                                  t_edit, (b_nat, b_full, 0.0, 0.0))
        np.testing.assert_allclose(one, batch[i], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.log(np.exp(batch).sum(1)), 0, atol=1e-12)
    # extreme logits stay finite (no log(0) from 1 - P(Full))
    extreme = calibrated_logprobs(torch.tensor([0.0, 800.0, 0.0, 0.0]), torch.tensor([0.0, 0.0]),
                                  1.0, 1.0)
    assert np.isfinite(extreme).all() and extreme.argmax() == FULLY_SYNTHESIZED


def test_edit_gate_ignores_fully_synthesized_images():
    """The edit gate is trained on Natural vs local edits only: adding FullySynthesized rows
    changes nothing; its two outputs rank an image with a confident region above a flat one."""
    from tools.safe.train import TrainOptions, train_edit_head

    gen = torch.Generator().manual_seed(0)
    natural = torch.rand(40, 4, generator=gen) * 0.3
    edited = 0.4 + torch.rand(40, 4, generator=gen) * 0.6
    full = torch.rand(10, 4, generator=gen)
    y = torch.tensor([NATURAL] * 40 + [LOCALLY_EDITED] * 40)
    options = TrainOptions(global_epochs=50)
    gate = train_edit_head(torch.cat([natural, edited]), y, options)
    with_full = train_edit_head(torch.cat([natural, edited, full]),
                                torch.cat([y, torch.full((10,), FULLY_SYNTHESIZED)]), options)
    for key, value in gate.state_dict().items():
        torch.testing.assert_close(with_full.state_dict()[key], value)
    with torch.no_grad():
        scores = gate(torch.tensor([[0.05] * 4, [0.9] * 4]))
    assert scores.shape == (2, 2)
    assert float(scores[1, 1] - scores[1, 0]) > float(scores[0, 1] - scores[0, 0])
