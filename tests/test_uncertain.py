"""UNCERTAIN predictions and calibration fields: bundle round-trip, old files, prediction output."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import CLASSES, sample_images
from cxrkit.cli.main import main
from cxrkit.data.preprocess import Preprocess
from cxrkit.inference.bundle import ModelBundle, load_bundle, probabilities, resolve_model, save_bundle
from cxrkit.inference.decision import uncertain_mask
from cxrkit.inference.predictor import Prediction, predict_paths
from cxrkit.models import create_model, model_info

SMALL = Preprocess(size=64, mean=0.5, std=0.25)


def _bundle(temperature=1.0, confidence_threshold=0.0) -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle(create_model("seed_cnn", img_size=64).eval(), "seed_cnn", CLASSES, SMALL,
                       model_kwargs={"img_size": 64}, temperature=temperature,
                       confidence_threshold=confidence_threshold)


def test_bundle_round_trips_calibration_fields(tmp_path):
    path = save_bundle(_bundle(2.5, 0.8), tmp_path / "m.safetensors")
    loaded = load_bundle(path)
    assert (loaded.temperature, loaded.confidence_threshold) == (2.5, 0.8)


def test_old_bundle_without_fields_loads_with_neutral_defaults(tmp_path):
    """Files written before calibration existed (the first shipped cxr_cnn was one) carry neither field."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shipped = model_info("cxr_cnn").shipped_weights
    with safe_open(str(shipped), framework="pt") as f:
        meta = json.loads(f.metadata()["cxrkit"])
    old = {k: v for k, v in meta.items() if k not in ("temperature", "confidence_threshold")}
    path = tmp_path / "old.safetensors"
    save_file(load_file(str(shipped)), str(path), metadata={"cxrkit": json.dumps(old)})
    bundle = resolve_model(str(path))
    assert (bundle.temperature, bundle.confidence_threshold) == (1.0, 0.0)
    assert bundle.threshold == meta["threshold"]


def test_probabilities_divide_logits_by_temperature():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.allclose(probabilities(logits, 2.0), torch.softmax(logits / 2, dim=1))
    one = torch.tensor([[3.0]])
    assert torch.allclose(probabilities(one, 3.0)[:, 1], torch.sigmoid(torch.tensor([1.0])))


def test_uncertain_mask_uses_decided_class_probability():
    probs = np.array([[0.55, 0.45], [0.1, 0.9], [0.35, 0.65]])
    bundle = ModelBundle(nn.Identity(), "x", CLASSES, SMALL, threshold=0.4, confidence_threshold=0.6)
    # decisions at P(PNEUMONIA) >= 0.4: NORMAL (0.55 < 0.6: uncertain), PNEUMONIA (0.9), PNEUMONIA (0.65)
    assert uncertain_mask(bundle, probs).tolist() == [True, False, False]
    bundle.confidence_threshold = 0.0
    assert not uncertain_mask(bundle, probs).any()


def test_prediction_dict_has_uncertain():
    assert Prediction("a.jpeg", "NORMAL", {"NORMAL": 0.6, "PNEUMONIA": 0.4}, True).to_dict()["uncertain"] is True
    assert Prediction("a.jpeg", "NORMAL", {"NORMAL": 1.0, "PNEUMONIA": 0.0}).to_dict()["uncertain"] is False


@pytest.mark.parametrize("threshold,expect_any", [(0.0, False), (1.01, True)])
def test_predict_json_marks_uncertain(tmp_path, capsys, threshold, expect_any):
    path = save_bundle(_bundle(1.0, threshold), tmp_path / "m.safetensors")
    files = [str(p) for p in sample_images("test", "NORMAL")[:3]]
    assert main(["predict", *files, "--model", str(path), "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["uncertain"] for r in rows] == [expect_any] * 3
    assert main(["predict", *files, "--model", str(path), "--quiet"]) == 0
    assert ("UNCERTAIN" in capsys.readouterr().out) is expect_any


def test_temperature_applied_in_prediction(tmp_path):
    files = sample_images("test", "PNEUMONIA")[:2]
    cold, _ = predict_paths(_bundle(1.0), files)
    hot, _ = predict_paths(_bundle(4.0), files)
    for c, h in zip(cold, hot):
        assert c.label == h.label  # temperature never changes the argmax
        assert max(h.probabilities.values()) < max(c.probabilities.values()) or max(c.probabilities.values()) == 0.5
