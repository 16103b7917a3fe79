"""Geometric stress test: a model that reads shape loses its score, one that reads the lungs keeps it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrkit.cli.main import main
from cxrkit.data.preprocess import Preprocess
from cxrkit.evaluation.geometry import geometry_threshold
from cxrkit.evaluation.metrics import choose_threshold
from cxrkit.evaluation.stress import (BLUR_VIEWS, EXPOSURE_VIEWS, GEOMETRY_VIEWS, HAZE_VIEWS, View, blurred,
                                     compare_stress, comparison_table, TONE_VIEWS, lifted_darks, stress_table,
                                     stress_test, stress_views, veiled, warp, washed_out)

SIZE = 64


def _films(n: int = 40) -> tuple[torch.Tensor, np.ndarray]:
    """NORMAL: a dark, wide chest; PNEUMONIA: a bright, narrow one, as the squashed training pool suggests."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(n):
        label = i % 2
        half_width = int(rng.integers(18, 22)) if label == 0 else int(rng.integers(10, 14))
        img = np.zeros((SIZE, SIZE), dtype=np.uint8)
        img[8:56, 32 - half_width:32 + half_width] = 90 if label == 0 else 200
        images.append(img)
        labels.append(label)
    return torch.from_numpy(np.stack(images)), np.array(labels)


class _Rule:
    """A stand-in model: P(PNEUMONIA) from one image feature, threshold 0.5."""

    classes = ("NORMAL", "PNEUMONIA")
    threshold = 0.5
    confidence_threshold = 0.0
    preprocess = Preprocess(size=SIZE)

    def __init__(self, feature):
        self.feature = feature

    def predict_resized(self, images, batch_size):
        p = np.array([self.feature(img) for img in np.asarray(images)], dtype=np.float32)
        return np.stack([1 - p, p], axis=1)


def _width(img: np.ndarray) -> float:  # narrow chest -> PNEUMONIA: the shortcut
    body = img > 40
    return float(body.any(axis=0).sum() / body.any(axis=1).sum() < 0.67)


def _brightness(img: np.ndarray) -> float:  # bright lungs -> PNEUMONIA: the sign itself
    return float(img[img > 40].mean() > 145)


def _contrast(img: np.ndarray) -> float:  # lungs far brighter than the film around them -> PNEUMONIA
    body = img > 40
    return float(img[body].mean() - img[~body].mean() > 145)


def _lung_grey(img: np.ndarray) -> float:  # lungs lighter than a fixed grey -> PNEUMONIA: reads the grey itself
    return float(img[img > 40].mean() > 120)


def _body_share(img: np.ndarray) -> float:  # a small body -> PNEUMONIA: reads the film by the rank of its greys
    return float((img > img.min()).mean() < 0.375)


def _crisp_dark(img: np.ndarray) -> float:  # NORMAL only with dark lungs and a crisp outline: reads sharpness too
    step = np.abs(np.diff(img.astype(int), axis=1)).max()
    return float(img[img > 40].mean() > 145 or step < 60)


def _rim_contrast(img: np.ndarray) -> float:  # NORMAL only with dark lungs standing clear of the film beside them
    profile = img[16:48].astype(float).mean(axis=0)  # across the chest; the rim: 6 px either side of its edges
    inside = np.nonzero(profile >= profile.max() / 2)[0]
    left, right = inside[0], inside[-1]
    rim = (profile[left:left + 6].mean() + profile[right - 5:right + 1].mean()) / 2
    beside = (profile[max(left - 6, 0):left].mean() + profile[right + 1:right + 7].mean()) / 2
    return float(img[img > 40].mean() > 145 or rim - beside < 62)


def _centre_grey(img: np.ndarray) -> float:  # a bright centre of the chest -> PNEUMONIA: blind to its rim
    return float(img[24:40, 28:36].mean() > 120)


def test_warp_identity_and_directions():
    square = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
    square[:, 16:48, 16:48] = 255
    assert torch.equal(warp(square, GEOMETRY_VIEWS[0]), square)

    def extent(img, axis):
        return int((img[0] > 127).any(dim=axis).sum())

    narrower = warp(square, View("n", 1.0, 1.25))
    assert extent(narrower, 0) == 32 and extent(narrower, 1) == 40  # taller, same width: relatively narrower
    zoomed_out = warp(square, View("o", 0.8, 0.8))
    assert extent(zoomed_out, 0) < 32 and extent(zoomed_out, 1) < 32


def test_shape_reader_loses_its_score_lung_reader_keeps_it():
    images, labels = _films()
    shortcut = stress_test(_Rule(_width), images, labels)
    honest = stress_test(_Rule(_brightness), images, labels)
    assert shortcut.views[0].balanced_accuracy == 1.0 and honest.views[0].balanced_accuracy == 1.0
    assert honest.score == 1.0
    assert shortcut.score < 0.9
    by_view = {v.view: v for v in shortcut.views}
    narrower = by_view[GEOMETRY_VIEWS[1].name]  # squeezed across: the wide NORMAL chests look like PNEUMONIA
    assert narrower.recall["NORMAL"] < 0.5 and narrower.recall["PNEUMONIA"] == 1.0
    table = stress_table(shortcut)
    assert table.count("\n") == len(GEOMETRY_VIEWS) + 2 and f"{shortcut.score:.3f}" in table


def test_washed_out_keeps_each_films_mean_and_shrinks_its_spread():
    images, _ = _films(6)
    assert torch.equal(washed_out(images, 1.0), images)
    hazy = washed_out(images, 0.65).float()
    x = images.float()
    assert torch.allclose(hazy.mean(dim=(1, 2)), x.mean(dim=(1, 2)), atol=0.5)
    assert torch.allclose(hazy.std(dim=(1, 2)), 0.65 * x.std(dim=(1, 2)), rtol=0.02)


def test_lifted_darks_brighten_the_dark_greys_most_and_keep_black_white_and_order():
    levels = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    assert torch.equal(lifted_darks(levels, 1.0), levels)
    lifted = lifted_darks(levels, 0.65).long()[0].flatten()
    assert lifted[0] == 0 and lifted[255] == 255
    assert bool((lifted[1:] >= lifted[:-1]).all())  # a tone curve: the order of grey levels survives
    gain = lifted - torch.arange(256)
    assert bool((gain >= 0).all()) and int(gain[64]) > int(gain[224]) > 0  # darks lifted more than brights


def test_stress_view_sets_are_a_union_with_the_film_as_is_once_and_first():
    assert stress_views("geometry") == GEOMETRY_VIEWS
    both = stress_views("geometry, exposure")
    assert both == GEOMETRY_VIEWS + EXPOSURE_VIEWS
    assert stress_views("exposure,geometry")[0] == GEOMETRY_VIEWS[0] and len(stress_views("exposure,geometry")) == 7
    every = stress_views("geometry,exposure,tone,blur,haze")
    assert every == GEOMETRY_VIEWS + EXPOSURE_VIEWS + TONE_VIEWS + BLUR_VIEWS + HAZE_VIEWS
    assert len(stress_views("tone")) == 3 and len(stress_views("haze")) == 3
    with pytest.raises(ValueError, match="unknown stress views colour"):
        stress_views("geometry,colour")


# Each view set against two stand-in models: one that reads the cue the views change (it loses its score there)
# and one that reads the films another way (it keeps it), and the class the changed films drift to.
# - exposure: washing out moves a reader of the lungs' brightness against the film, not one of the chest's outline;
# - tone: lifting the dark greys moves a reader of the lungs' grey, not one that ranks the greys (as histogram
#   equalisation does: a tone curve keeps every pixel's rank);
# - blur: softening moves a model that needs a crisp outline to call a film NORMAL, not a reader of the lungs' grey
#   (a blur keeps the grey levels' mean over the lungs), and the tone views do not move it;
# - haze: a scatter veil moves a model that needs the chest to stand clear of the film beside it over a band of
#   pixels, not a reader of the grey at the chest's centre, and a blur of 2 px, which softens only the edge itself, does not.
@pytest.mark.parametrize("spec, sensitive, insensitive, drifts_from, unmoved_by", [
    ("exposure", _contrast, _width, "PNEUMONIA", "geometry"),  # the hazy bright lungs read as NORMAL
    ("tone", _lung_grey, _body_share, "NORMAL", "geometry"),  # the hazier dark lungs read as PNEUMONIA
    ("blur", _crisp_dark, _brightness, "NORMAL", "tone"),  # the softened NORMAL films read as PNEUMONIA
    ("haze", _rim_contrast, _centre_grey, "NORMAL", "blur"),  # the veiled NORMAL films read as PNEUMONIA
])
def test_each_view_set_catches_the_reader_of_its_cue_and_spares_another(spec, sensitive, insensitive, drifts_from,
                                                                        unmoved_by):
    images, labels = _films()
    caught = stress_test(_Rule(sensitive), images, labels, views=stress_views(spec))
    assert stress_test(_Rule(insensitive), images, labels, views=stress_views(spec)).score == 1.0
    assert caught.views[0].balanced_accuracy == 1.0 and caught.views[-1].balanced_accuracy < 0.75
    assert caught.views[-1].recall[drifts_from] < 0.5
    assert stress_test(_Rule(sensitive), images, labels, views=stress_views(unmoved_by)).score == 1.0


def test_blurred_keeps_a_flat_film_and_its_mean_and_softens_an_edge():
    images, _ = _films(6)
    flat = torch.full((2, SIZE, SIZE), 120, dtype=torch.uint8)
    assert torch.equal(blurred(flat, 2.0), flat)
    soft = blurred(images, 2.0)
    assert soft.dtype == torch.uint8 and soft.shape == images.shape
    assert torch.allclose(soft.float().mean(dim=(1, 2)), images.float().mean(dim=(1, 2)), atol=1.0)

    def steepest(x):
        return int((x[:, :, 1:].int() - x[:, :, :-1].int()).abs().max())
    assert steepest(soft) < steepest(blurred(images, 1.0)) < steepest(images)


def test_veiled_keeps_a_flat_film_and_its_mean_and_takes_coarse_contrast_more_than_a_blur():
    images, _ = _films(6)
    flat = torch.full((2, SIZE, SIZE), 120, dtype=torch.uint8)
    assert torch.equal(veiled(flat, 8.0, 0.5), flat) and torch.equal(veiled(images, 8.0, 1.0), images)
    hazy = veiled(images, 16.0, 0.5)
    assert hazy.dtype == torch.uint8 and hazy.shape == images.shape
    assert torch.allclose(hazy.float().mean(dim=(1, 2)), images.float().mean(dim=(1, 2)), atol=1.0)

    def coarse(x):  # the mean distance of each pixel from its 15x15 neighbourhood's mean: lung against rib
        x = x.float()[:, None]
        local = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (7, 7, 7, 7), mode="reflect"), 15, 1)
        return float((x - local).abs().mean())
    assert coarse(hazy) < coarse(veiled(images, 8.0, 0.5)) < coarse(blurred(images, 2.0)) < coarse(images)
    small = images[:, ::2, ::2].contiguous()  # 32 px: a kernel of +-48 px cannot be reflected; the widest one that can
    assert veiled(small, 16.0, 0.5).shape == small.shape and coarse(veiled(small, 16.0, 0.5)) < coarse(small)


def test_paired_comparison_separates_a_shape_reader_and_calls_a_model_even_with_itself():
    images, labels = _films()
    worse = compare_stress(_Rule(_width), images, _Rule(_brightness), images, labels, n_boot=300)
    assert worse.a.score == stress_test(_Rule(_width), images, labels).score and worse.b.score == 1.0
    lo, hi = worse.interval
    assert lo <= worse.difference <= hi < 0  # worse beyond the films' noise
    same = compare_stress(_Rule(_width), images, _Rule(_width), images, labels, n_boot=300)
    assert same.difference == 0 and same.interval == (0.0, 0.0)
    table = comparison_table(worse)
    assert f"{worse.difference:+.3f}" in table and "paired bootstrap" in table
    assert "paired bootstrap" not in comparison_table(compare_stress(_Rule(_width), images, _Rule(_width), images,
                                                                     labels, n_boot=0))


class _Scored(_Rule):
    """A model whose P(PNEUMONIA) reads brightness a little and how narrow the chest is a lot: a continuous score."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def predict_resized(self, images, batch_size):
        def score(img):
            body = img > 40
            narrowness = 1.0 - body.any(axis=0).sum() / body.any(axis=1).sum()  # 0 square, ~0.5 narrow
            return 1 / (1 + np.exp(-(0.02 * (img[body].mean() - 145) + 10.0 * (narrowness - 0.35))))

        p = np.array([score(img) for img in np.asarray(images)], dtype=np.float64)
        return np.stack([1 - p, p], axis=1)


def test_geometry_threshold_is_the_cut_off_that_holds_best_across_the_views():
    """Youden on the films as they are may sit where a re-shaped film falls on the wrong side (here: just under
    the narrow PNEUMONIA chests, which the stretched view widens). Youden across the views is the cut-off with
    the highest stress score: checked against every candidate cut-off."""
    images, labels = _films()
    clean = choose_threshold(labels, _Scored().predict_resized(images, 64)[:, 1], "youden")
    across = geometry_threshold(_Scored(), images, labels)
    at_clean, at_across = stress_test(_Scored(clean), images, labels), stress_test(_Scored(across), images, labels)
    assert at_across.score > at_clean.score
    assert at_across.views[0].balanced_accuracy == 1.0  # the films as they are still all decided right
    pooled = np.concatenate([_Scored().predict_resized(warp(images, v), 64)[:, 1] for v in GEOMETRY_VIEWS])
    best = max(stress_test(_Scored(t), images, labels).score for t in np.unique(pooled))
    assert at_across.score == pytest.approx(best)


def test_stress_cli_on_a_shipped_model(sample_dir, capsys):
    rc = main(["stress", "--model", "cxr_cnn", "--data", str(sample_dir), "--split", "test", "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [v["view"] for v in out["views"]] == [v.name for v in GEOMETRY_VIEWS]
    assert out["n"] > 0 and 0.0 <= out["score"] <= 1.0
    assert abs(out["score"] - np.mean([v["balanced_accuracy"] for v in out["views"]])) < 1e-9


def test_stress_cli_exposure_tone_blur_and_haze_views_and_a_typo(sample_dir, capsys):
    rc = main(["stress", "--model", "cxr_bnn", "--data", str(sample_dir), "--split", "test", "--views",
               "geometry,exposure,tone,blur,haze", "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [v["view"] for v in out["views"]] == [v.name for v in GEOMETRY_VIEWS + EXPOSURE_VIEWS + TONE_VIEWS
                                                + BLUR_VIEWS + HAZE_VIEWS]
    rc = main(["stress", "--model", "cxr_bnn", "--data", str(sample_dir), "--views", "exposur"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "exposur" in err and "Traceback" not in err


def test_stress_cli_against_a_second_model_on_the_same_films(sample_dir, capsys):
    rc = main(["stress", "--model", "cxr_bnn", "--against", "cxr_cnn", "--data", str(sample_dir), "--split", "test",
               "--bootstrap", "200", "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["a"]["n"] == out["b"]["n"] > 0
    assert out["difference"] == pytest.approx(out["a"]["score"] - out["b"]["score"])
    lo, hi = out["interval"]
    assert lo <= out["difference"] <= hi
    alone = json.loads(_stress_json(["--model", "cxr_cnn", "--data", str(sample_dir), "--split", "test"], capsys))
    assert alone["score"] == pytest.approx(out["b"]["score"])  # B scored as it is scored alone
    # on validation each model is stressed on the films it never trained on: other seeds, other films
    rc = main(["stress", "--model", "cxr_bnn", "--against", "cxr_cnn", "--data", str(sample_dir), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "validated on different films" in err and len(err.strip().splitlines()) == 1


def _stress_json(args, capsys) -> str:
    assert main(["stress", *args, "--json", "--quiet"]) == 0
    return capsys.readouterr().out


def test_stress_cli_missing_folder_is_one_line(tmp_path, capsys):
    rc = main(["stress", "--model", "cxr_cnn", "--data", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _write_shape_cued_films(root, n: int = 48) -> None:
    """Training films whose classes differ clearly in shape and only a little in brightness."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(n):
        label = i % 2
        cls = "PNEUMONIA" if label else "NORMAL"
        half_width = int(rng.integers(10, 14)) if label else int(rng.integers(18, 22))
        img = rng.normal(30, 8, (SIZE, SIZE))
        img[8:56, 32 - half_width:32 + half_width] = rng.normal(150 if label else 130, 15)
        img += rng.normal(0, 6, img.shape)
        folder = root / "train" / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"film{i:03d}.png")


def _shape_sensitivity(run_dir, root) -> tuple[float, float]:
    """Mean |change of P(PNEUMONIA)| when the training films are re-shaped (every view but "as is"), and the
    films' ROC-AUC as they are."""
    from cxrkit.data.io import read_image
    from cxrkit.inference.bundle import resolve_model
    from cxrkit.inference.predictor import predict_resized

    bundle = resolve_model(str(run_dir))
    files = sorted(root.rglob("*.png"))
    images = torch.from_numpy(np.stack([read_image(f) for f in files]))
    p = predict_resized(bundle, images)[:, 1]
    moved = np.mean([np.abs(predict_resized(bundle, warp(images, v))[:, 1] - p).mean() for v in GEOMETRY_VIEWS[1:]])
    return float(moved), float(roc_auc_score([f.parent.name == "PNEUMONIA" for f in files], p))


def test_invariance_penalty_makes_the_output_ignore_shape(tmp_path, fast_recipe):
    from cxrkit.data.augment import Augment
    from cxrkit.training import train

    _write_shape_cued_films(tmp_path / "data")
    plain = fast_recipe.replace(epochs=8, augment=Augment(), label_smoothing=0.0, class_weighting="none",
                                early_stopping_metric="none", keep_best=False, calibrate=False,
                                uncertain_rule="none", threshold_rule="fixed:0.5")
    invariant = plain.replace(invariance_weight=1.0, invariance_augment=Augment(zoom=0.3, aspect=0.5))
    # the same warp in the penalty's extra view, its first view a no-op: the extra term must do the work alone
    in_extra_view = plain.replace(invariance_weight=1.0, extra_invariance_augment=Augment(zoom=0.3, aspect=0.5))
    for name, recipe in (("plain", plain), ("invariant", invariant), ("extra", in_extra_view)):
        train(recipe, tmp_path / "data", tmp_path / name, progress=False)
    moved_plain, _ = _shape_sensitivity(tmp_path / "plain", tmp_path / "data")
    moved_invariant, auc_invariant = _shape_sensitivity(tmp_path / "invariant", tmp_path / "data")
    moved_extra, auc_extra = _shape_sensitivity(tmp_path / "extra", tmp_path / "data")
    assert moved_plain > 0.1, moved_plain  # the plain network does read the shape
    assert moved_invariant < 0.5 * moved_plain, (moved_invariant, moved_plain)
    assert moved_extra < 0.5 * moved_plain, (moved_extra, moved_plain)
    assert min(auc_invariant, auc_extra) > 0.7, (auc_invariant, auc_extra)  # the penalised still learned brightness


def test_a_seed_override_is_re_carved_as_trained(tmp_path, fast_recipe, sample_dir):
    """`train --seed N` holds out other films than the recipe's own seed: stress, calibrate and ensemble must
    re-carve the films the model never trained on (before the record, they re-carved by the recipe's seed)."""
    from cxrkit.evaluation.recalibrate import carve_validation, validation_split_of
    from cxrkit.inference.bundle import load_bundle
    from cxrkit.training import train

    recipe = fast_recipe.replace(epochs=1, seed=fast_recipe.seed + 3)
    result = train(recipe, sample_dir, tmp_path / "run", progress=False)
    bundle = load_bundle(tmp_path / "run" / "model.safetensors")
    assert validation_split_of(bundle) == (recipe.val_fraction, recipe.seed)
    held_out = json.loads((result.run_dir / "run.json").read_text())["data_fingerprint"]["val"]
    recarved = carve_validation(sample_dir, bundle.classes, bundle.preprocess, *validation_split_of(bundle))
    by_recipe_seed = carve_validation(sample_dir, bundle.classes, bundle.preprocess, recipe.val_fraction,
                                      fast_recipe.seed)
    assert recarved.fingerprint == held_out
    assert by_recipe_seed.fingerprint != held_out  # the test could fail: the two seeds carve different films


def test_a_recipe_can_take_its_threshold_across_the_views(tmp_path, fast_recipe, sample_dir, monkeypatch):
    """``threshold_rule: youden-geometry`` in a recipe: the trained model's cut-off is Youden's over its own
    validation films warped as the stress views, at its fitted temperature; its decisions and UNCERTAIN cut-off
    are fitted around that threshold."""
    from cxrkit.evaluation.recalibrate import carve_validation, validation_split_of
    from cxrkit.inference.bundle import load_bundle
    from cxrkit.evaluation import geometry
    from cxrkit.inference.predictor import use_precision
    from cxrkit.training import train

    engines, real = [], geometry.predict_resized
    monkeypatch.setattr(geometry, "predict_resized", lambda b, x, *a, **k: engines.append(b.engine) or real(b, x, *a, **k))
    recipe = fast_recipe.replace(epochs=1, threshold_rule="youden-geometry")
    result = train(recipe, sample_dir, tmp_path / "run", progress=False)
    assert engines and set(engines) == {"torchscript"}
    monkeypatch.undo()
    bundle = load_bundle(tmp_path / "run" / "model.safetensors")
    val = carve_validation(sample_dir, bundle.classes, bundle.preprocess, *validation_split_of(bundle))
    assert bundle.temperature != 1.0  # fitted first, and the cut-off read at it
    # read off in TorchScript, exactly: recorded runs keep their cut-off whatever engine predict defaults to
    torchscript = use_precision(bundle, "fp32", engine="torchscript")
    assert bundle.threshold == geometry_threshold(torchscript, val.images, val.labels.numpy())
    assert bundle.info["threshold_rule"] == "youden-geometry"
    assert result.val_metrics["threshold"] == pytest.approx(bundle.threshold)
