"""Explanations: Grad-CAM heatmaps, overlays, the CLI, and the two sanity checks of issue 6.

The sanity checks run on a model that provably learnt something: a tiny CNN
trained here on synthetic films whose class is a bright patch at a random place
(the shipped default model would not do: a check needs a known right answer).
The tiny CNN has no BatchNorm on purpose: a BN network (cxr_cnn's design)
finds the patch by its edges, so its CAM peaks on the rim, outside the box
(docs/explain.md has the numbers).
"""
from __future__ import annotations

import copy
import io
import json
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from conftest import CLASSES, sample_images
from cxrkit.cli.main import main
from cxrkit.data.io import read_image
from cxrkit.data.preprocess import Preprocess, to_model_input
from cxrkit.explain import (explain_image, explainer_copies, gradcam, overlay, overlay_png, pointing_game,
                            randomization_test, randomized_copy, target_layer_name)
from cxrkit.inference.bundle import ModelBundle, resolve_model
from cxrkit.models import create_model, list_models, model_info

SIDE, PATCH = 64, 14


def _patch_films(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """Noisy gray films; label 1 carries a bright square at a random place (its box is returned)."""
    imgs = rng.normal(110, 25, size=(n, SIDE, SIDE)).clip(0, 255)
    labels = np.arange(n) % 2
    boxes = []
    for img, y in zip(imgs, labels):
        top, left = rng.integers(0, SIDE - PATCH, size=2)
        boxes.append((int(top), int(left), int(top) + PATCH, int(left) + PATCH))
        if y:
            img[top:top + PATCH, left:left + PATCH] = rng.normal(235, 10, size=(PATCH, PATCH)).clip(0, 255)
    return imgs.astype(np.uint8), labels, boxes


def _tiny_cnn() -> nn.Module:
    """Three conv-ReLU stages, global average pooling, one logit: the CAM is at 1/4 of the input side."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))


@pytest.fixture(scope="module")
def patch_task():
    """(trained bundle, positive test images, their boxes); trains in a few seconds on one thread."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    pre = Preprocess(size=SIDE, channels=1, mean=0.5, std=0.25)
    model = _tiny_cnn()
    x_train, y_train, _ = _patch_films(256, rng)
    x = to_model_input(torch.from_numpy(x_train), pre)
    y = torch.from_numpy(y_train).float()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(12):
        for idx in torch.randperm(len(x)).split(32):
            loss = F.binary_cross_entropy_with_logits(model(x[idx])[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    bundle = ModelBundle(model.eval(), "tiny_cnn", CLASSES, pre)
    x_test, y_test, boxes = _patch_films(60, rng)
    with torch.inference_mode():
        acc = ((model(to_model_input(torch.from_numpy(x_test), pre))[:, 0] > 0).numpy() == y_test).mean()
    assert acc >= 0.9, f"the synthetic task did not train (test accuracy {acc:.2f})"
    pos = y_test == 1
    return bundle, list(x_test[pos]), [b for b, p in zip(boxes, pos) if p]


def test_pointing_game_trained_model_finds_the_patch(patch_task):
    bundle, images, boxes = patch_task
    assert pointing_game(bundle, images, boxes, target="PNEUMONIA") >= 0.8


def test_pointing_game_fails_for_a_randomized_model(patch_task):
    """The check can fail: a model with re-initialised weights no longer points at the patch."""
    bundle, images, boxes = patch_task
    assert pointing_game(randomized_copy(bundle), images, boxes, target="PNEUMONIA") < 0.5


def test_randomization_test_heatmaps_depend_on_the_weights(patch_task):
    bundle, images, _ = patch_task
    result = randomization_test(bundle, images[:12], bound=0.5)
    assert result.passed, result
    assert len(result.spearman) == 12 and result.median < 0.5 and result.uninformative < 6


def test_randomization_test_fails_when_the_weights_do_not_change(patch_task, monkeypatch):
    """The bound is not vacuous: an 'explanation' that ignores the weights (here the same model twice) fails."""
    import cxrkit.explain.sanity as sanity

    bundle, images, _ = patch_task
    monkeypatch.setattr(sanity, "randomized_copy", lambda b, seed=0: b)
    result = sanity.randomization_test(bundle, images[:4])
    assert not result.passed and min(result.spearman) > 0.99


def test_randomization_test_does_not_pass_on_empty_maps(patch_task, monkeypatch):
    """A randomized copy that finds no evidence (all-zero Grad-CAM) compares nothing: no pass, and it is counted."""
    import cxrkit.explain.sanity as sanity

    bundle, images, _ = patch_task

    def blind_copy(b, seed=0):
        rand = randomized_copy(b, seed)
        with torch.no_grad():
            rand.model[-1].weight.zero_()  # no gradient reaches the layer: every map is constant
        return rand
    monkeypatch.setattr(sanity, "randomized_copy", blind_copy)
    result = sanity.randomization_test(bundle, images[:4])
    assert result.uninformative == 4 and not result.passed and np.isnan(result.median)


def test_randomized_copy_leaves_the_original_alone(patch_task):
    bundle, images, _ = patch_task
    before = gradcam(bundle, images[0], target="PNEUMONIA")
    rand = randomized_copy(bundle, seed=1)
    assert not torch.equal(rand.model[-1].weight, bundle.model[-1].weight)
    np.testing.assert_array_equal(gradcam(bundle, images[0], target="PNEUMONIA"), before)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_explainer_copies_stop_the_backward_and_keep_the_heatmap(patch_task, method):
    bundle, images, _ = patch_task
    copies = explainer_copies(bundle, n=2)
    assert len(copies) == 2 and copies[0].model is not copies[1].model is not bundle.model
    for c in copies:
        assert not any(p.requires_grad for p in c.model.parameters())  # the fast path is on
    assert all(p.requires_grad for p in bundle.model.parameters())  # the caller's model is left alone
    for img in images[:4]:
        ref = explain_image(bundle, img, method=method)
        assert ref.heatmap.max() > 0.5
        np.testing.assert_allclose(explain_image(copies[0], img, method=method).heatmap, ref.heatmap, atol=1e-5)


def test_explainer_copies_fall_back_to_plain_copies_for_an_in_place_layer(patch_task):
    """A ReLU that rewrites the explained layer's output in place breaks the leaf; the probe check must see it."""
    bundle, images, _ = patch_task
    model = copy.deepcopy(bundle.model)
    model[7] = nn.ReLU(inplace=True)  # the last ReLU, right after the explained conv
    plain = ModelBundle(model.eval(), "tiny_cnn", CLASSES, bundle.preprocess)
    (c,) = explainer_copies(plain, layer="6")
    assert all(p.requires_grad for p in c.model.parameters())
    np.testing.assert_allclose(explain_image(c, images[0], layer="6").heatmap,
                               explain_image(plain, images[0], layer="6").heatmap, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "layercam", "eigencam"])
def test_explanation_decides_as_prediction_does(method):
    """The gradient methods take the decision from the CAM pass's own forward, the others from a separate one:
    either way the probabilities and label are those of `predict`, and a fixed target does not change the decision."""
    from cxrkit.inference.predictor import predict_arrays

    bundle = resolve_model("cxr_cnn")
    films = [read_image(p) for p in sample_images("test", "NORMAL")[:3] + sample_images("test", "PNEUMONIA")[:3]]
    probs = predict_arrays(bundle, films)
    for film, ref in zip(films, probs):
        e = explain_image(bundle, film, method=method)
        np.testing.assert_allclose([e.probabilities[c] for c in CLASSES], ref, atol=1e-4)
        assert e.label == e.explained == CLASSES[int(ref[1] >= bundle.threshold)]
        other = CLASSES[1 - CLASSES.index(e.label)]
        forced = explain_image(bundle, film, target=other, method=method)
        assert forced.label == e.label and forced.explained == other


def test_gradcam_shape_range_in_the_input_frame():
    bundle = resolve_model("cxr_cnn")
    img = read_image(sample_images("test", "PNEUMONIA")[0])[:, :180]  # not square: the map follows the image
    e = explain_image(bundle, img, target="PNEUMONIA")
    assert e.heatmap.shape == img.shape and e.heatmap.dtype == np.float32
    assert 0.0 <= e.heatmap.min() and e.heatmap.max() <= 1.0 and e.heatmap.max() > 0.5
    assert e.layer == "features" and e.explained == "PNEUMONIA"
    assert abs(sum(e.probabilities.values()) - 1) < 1e-5 and e.label in CLASSES


def test_gradcam_pad_resize_maps_back_to_the_content():
    """A 'pad' model sees the image letterboxed; the heatmap must cover the image, not the padding."""
    bundle = resolve_model("cxr_cnn")
    bundle.preprocess = Preprocess(**{**bundle.preprocess.to_dict(), "resize": "pad"})
    img = read_image(sample_images("test", "NORMAL")[0])[:, :112]
    heat = gradcam(bundle, img, target="PNEUMONIA")
    assert heat.shape == img.shape and heat.max() > 0.5


@pytest.mark.parametrize("name", list_models())
def test_target_layer_is_a_spatial_block_for_every_model(name):
    pre = model_info(name).preprocess
    # an ensemble is built from trained members; two small CNNs stand in for them
    member = {"arch": "cxr_cnn", "model_kwargs": {"widths": (8, 8, 8, 8, 8)}, "preprocess": pre.to_dict()}
    model = create_model(name, **({"members": [member, member]} if name == "ensemble" else {}))
    layers = target_layer_name(model, pre).split(",")
    assert len(layers) == (2 if name == "ensemble" else 1)  # an ensemble: one layer in each member
    for layer in layers:
        assert layer in dict(model.named_modules())
        assert layer.rsplit(".", 1)[-1] not in ("head", "classifier", "fc2", "")


def test_overlay_and_png_bytes():
    img = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    heat = np.zeros((32, 64), np.float32)
    heat[:, 32:] = 1.0
    rgb = np.asarray(overlay(img, heat))
    assert rgb.shape == (32, 64, 3)
    np.testing.assert_array_equal(rgb[:, :32], np.repeat(img[:, :32, None], 3, axis=2))  # no heat: plain film
    assert (rgb[:, 40:, 0] > rgb[:, 40:, 2]).all()  # full heat: red end of the colour map
    assert Image.open(io.BytesIO(overlay_png(img, heat))).size == (64, 32)
    with pytest.raises(ValueError):
        overlay(img, heat[:, :10])


def test_cli_explain_folder_writes_overlays_gallery_and_json(tmp_path, capsys, sample_dir):
    rc = main(["explain", str(sample_dir / "test" / "NORMAL"), "--out", str(tmp_path / "x"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    records = json.loads(out)
    assert len(records) == len(sample_images("test", "NORMAL"))
    assert [r["confidence"] for r in records] == sorted((r["confidence"] for r in records), reverse=True)
    for r in records:
        assert Image.open(r["overlay"]).mode == "RGB" and r["true_label"] == "NORMAL"
    assert "<img" in (tmp_path / "x" / "index.html").read_text()


def test_cli_explain_into_a_reused_folder_keeps_only_this_runs_overlays(tmp_path, capsys, sample_dir):
    out = tmp_path / "x"
    assert main(["explain", str(sample_dir / "test" / "NORMAL"), "--out", str(out), "--quiet"]) == 0
    (out / "mine.png").write_bytes(b"the user's own file")
    one = sample_images("test", "PNEUMONIA")[0]
    assert main(["explain", str(one), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    overlays = sorted(p.name for p in out.glob("*.png"))
    assert overlays == sorted([f"0000_{one.stem}.png", "mine.png"]), overlays


def test_cli_explain_bad_file_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "scan.jpeg"
    bad.write_text("not an image")
    rc = main(["explain", str(bad), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("cxrkit: error: ") and "scan.jpeg" in err[0]


def test_cli_explain_unknown_class_is_one_error_line(tmp_path, capsys):
    rc = main(["explain", str(sample_images("test", "NORMAL")[0]), "--target", "COVID", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["cxrkit: error: unknown class 'COVID'; the model's classes: NORMAL, PNEUMONIA"]


def test_confident_errors_groups_and_orders_mistakes():
    from cxrkit.explain.errors import confident_errors

    bundle = ModelBundle(nn.Identity(), "x", CLASSES, Preprocess(), threshold=0.6)
    p_pos = np.array([0.95, 0.70, 0.55, 0.10, 0.40, 0.99, 0.61])
    labels = np.array([0, 0, 0, 1, 1, 1, 0])  # 0.55 is below the 0.6 threshold: a correct NORMAL
    groups = confident_errors(bundle, np.stack([1 - p_pos, p_pos], axis=1), labels, k=2)
    assert groups == {("NORMAL", "PNEUMONIA"): [0, 1], ("PNEUMONIA", "NORMAL"): [3, 4]}


def test_evaluate_report_shows_the_most_confident_mistakes(tmp_path, sample_dir):
    from cxrkit.evaluation.evaluate import evaluate_folder, write_report

    bundle = resolve_model("cxr_cnn")
    ev = evaluate_folder(bundle, sample_dir, progress=False, n_boot=0)
    text = write_report(ev, tmp_path, explain=bundle).read_text()
    section = text[text.index("## Explanations"):text.index("## Figures")]
    wrong = {(t, p) for t, p in zip(ev.labels, ev.probabilities[:, 1] >= bundle.threshold) if t != p}
    assert wrong, "the shipped model makes mistakes on the sample; the check needs some"
    pngs = sorted((tmp_path / "explanations").glob("*.png"))
    assert 1 <= len(pngs) <= 6 and all(f"explanations/{p.name}" in section for p in pngs)
    assert ("false negatives" in section) == any(t == 1 for t, _ in wrong)
    assert ("false positives" in section) == any(t == 0 for t, _ in wrong)


def test_hide_names_keeps_identifying_file_names_out_of_reports_galleries_and_output(tmp_path, capsys, sample_dir):
    import hashlib
    import shutil

    data = tmp_path / "site"  # file names that identify patients, one of them unreadable
    digests = set()
    for cls in CLASSES:
        for i, src in enumerate(sample_images("test", cls)):
            dst = data / "test" / cls / f"jane_doe_mrn{i:05d}.jpeg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            digests.add(hashlib.sha256(dst.read_bytes()).hexdigest()[:12])
    (data / "test" / "NORMAL" / "jane_doe_mrn99999.jpeg").write_text("not an image")

    def leaks(folder):
        for f in folder.rglob("*"):
            assert "jane" not in f.name and "mrn" not in f.name, f
            if f.suffix in (".md", ".json", ".html"):
                assert "jane_doe" not in f.read_text(), f

    assert main(["evaluate", "--data", str(data), "--out", str(tmp_path / "r"), "--bootstrap", "0", "--quiet",
                 "--hide-names"]) == 0
    said = capsys.readouterr()
    assert "jane_doe" not in said.out + said.err
    leaks(tmp_path / "r")
    report = (tmp_path / "r" / "report.md").read_text()
    shown = set(re.findall(r"`film-([0-9a-f]{12})`", report))
    assert shown and shown <= digests  # the named mistakes are films of the folder, found again by their hash
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["unreadable"][0].startswith("film-")

    assert main(["explain", str(data / "test"), "--out", str(tmp_path / "x"), "--json", "--hide-names"]) == 1
    said = capsys.readouterr()  # exit 1: one file was skipped, by its pseudonym
    assert "jane_doe" not in said.out + said.err and "skipped film-" in said.err
    leaks(tmp_path / "x")
    assert {r["path"].removeprefix("film-") for r in json.loads(said.out)} == digests

    assert main(["evaluate", "--data", str(data), "--out", str(tmp_path / "named"), "--bootstrap", "0",
                 "--quiet"]) == 0  # without the option, films are named by path (so a mistake can be found)
    capsys.readouterr()
    assert "jane_doe_mrn" in (tmp_path / "named" / "report.md").read_text()


def test_train_hide_names_lists_unreadable_training_films_by_pseudonym(tmp_path, capsys, fast_recipe):
    """run.json records the training pool's unreadable files; with --hide-names by their hash, not their name."""
    import shutil

    import yaml

    data = tmp_path / "site"
    for cls in CLASSES:
        for i, src in enumerate(sample_images("train", cls)):
            dst = data / "train" / cls / f"jane_doe_mrn{i:05d}.jpeg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    (data / "train" / "PNEUMONIA" / "jane_doe_mrn99999.jpeg").write_text("not an image")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(fast_recipe.replace(epochs=1, calibrate=False, uncertain_rule="none").to_dict()))

    def run(out, *extra):
        assert main(["train", "--recipe", str(recipe), "--data", str(data), "--out", str(out), "--max-steps", "1",
                     "--quiet", *extra]) == 0
        said = capsys.readouterr()
        return json.loads((out / "run.json").read_text())["unreadable"], said.out + said.err

    hidden, said = run(tmp_path / "hidden", "--hide-names")
    assert len(hidden) == 1 and hidden[0].startswith("film-") and "jane_doe" not in said
    assert not any("jane_doe" in f.read_text(errors="ignore") for f in (tmp_path / "hidden").glob("*.json"))
    named, _ = run(tmp_path / "named")  # without the option the path is kept, so the file can be found and fixed
    assert "jane_doe_mrn99999" in named[0]
