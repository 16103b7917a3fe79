"""Adapting a model to a site's unlabelled films by re-estimating its BatchNorm statistics (`calibrate --unlabeled`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import sample_images
from cxrkit.cli.main import main
from cxrkit.data.cache import decode_samples
from cxrkit.data.folder import index_folder
from cxrkit.data.preprocess import Preprocess, to_model_input
from cxrkit.evaluation.batchnorm_adaptation import (
    MIN_FILMS,
    adapt_batchnorm,
    adapt_batchnorm_to_films,
    batchnorm_layers,
    training_class_mix,
)
from cxrkit.inference.bundle import ModelBundle, load_bundle, resolve_model, save_bundle
from cxrkit.inference.predictor import predict_resized
from cxrkit.models import create_model

SIZE = 64


@pytest.fixture(scope="module")
def films(sample_dir) -> torch.Tensor:
    """All 56 sample films as uint8 (N, 64, 64)."""
    return decode_samples(list(index_folder(sample_dir).samples), SIZE, progress=False).images


def random_cnn() -> ModelBundle:
    """A randomly initialised cxr_cnn without histogram equalisation, so a change of exposure reaches its BatchNorm."""
    torch.manual_seed(0)
    model = create_model("cxr_cnn", num_classes=2, widths=(8, 16, 16, 32, 32)).eval()
    return ModelBundle(model, "cxr_cnn", ("NORMAL", "PNEUMONIA"), Preprocess(size=SIZE),
                       model_kwargs={"widths": (8, 16, 16, 32, 32)})


@pytest.fixture
def small_model(tmp_path) -> str:
    """The random small cxr_cnn as a model file that records a training class mix, as trained models do: the CLI
    tests adapt it in a second where the shipped 224-px model takes ten."""
    bundle = random_cnn()
    bundle.info = {"train_class_shares": {"NORMAL": 0.26, "PNEUMONIA": 0.74}}
    return str(save_bundle(bundle, tmp_path / "small.safetensors"))


def test_running_statistics_become_those_of_the_site_films(films):
    bundle = random_cnn()
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    adapted = adapt_batchnorm(bundle, films, batch_size=len(films))  # one batch: exact per-channel moments
    first = batchnorm_layers(adapted.model)[0]
    seen = []
    hook = first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        adapted.model(to_model_input(films, adapted.preprocess))
    hook.remove()
    features = seen[0].float()
    torch.testing.assert_close(first.running_mean, features.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, features.var((0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-5)
    assert first.momentum == 0.1 and not first.training
    # the original is untouched, and nothing but BatchNorm buffers changed in the copy
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items())
    changed = {k for k, v in adapted.model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert (adapted.threshold, adapted.temperature, adapted.classes) == (bundle.threshold, bundle.temperature,
                                                                         bundle.classes)


def test_adaptation_undoes_a_change_of_exposure(films):
    """A site whose films are darker and flatter (x * 0.6 + 20): adapted on them, the model scores them almost as it
    scores the original films after adapting on those; unadapted, it scores them differently."""
    bundle = random_cnn()
    site = (films.float() * 0.6 + 20).round().to(torch.uint8)
    home = adapt_batchnorm(bundle, films)
    away = adapt_batchnorm(bundle, site)
    reference = predict_resized(home, films, optimize=False)[:, 1]
    unadapted_gap = abs(predict_resized(home, site, optimize=False)[:, 1] - reference).mean()
    adapted_gap = abs(predict_resized(away, site, optimize=False)[:, 1] - reference).mean()
    assert adapted_gap < unadapted_gap / 5


def test_resampling_to_the_training_mix_undoes_a_skewed_batch(films, monkeypatch):
    """A batch of 48 dark films and 8 bright ones that the model calls PNEUMONIA: resampled to a 50/50 training mix,
    the statistics are those of a balanced batch, not of the skewed one."""
    from cxrkit.evaluation import batchnorm_adaptation

    dark, bright = (films[:48].float() * 0.5).to(torch.uint8), (films[48:56].float() * 0.5 + 100).to(torch.uint8)
    batch = torch.cat([dark, bright])
    decided = np.array([0] * 48 + [1] * 8)
    monkeypatch.setattr(batchnorm_adaptation, "decide_indices", lambda bundle, probs: decided[:len(probs)])
    bundle, mix = random_cnn(), {"NORMAL": 0.5, "PNEUMONIA": 0.5}

    def first_mean(adapted):
        return batchnorm_layers(adapted.model)[0].running_mean

    balanced = first_mean(adapt_batchnorm(bundle, torch.cat([dark[:8], bright]), min_films=1))
    plain = first_mean(adapt_batchnorm(bundle, batch))
    resampled = first_mean(adapt_batchnorm(bundle, batch, mix))
    assert (resampled - balanced).abs().mean() < (plain - balanced).abs().mean() / 3


def test_a_told_share_of_positives_resamples_by_ranking_where_decisions_fail(films, monkeypatch):
    """The same skewed batch, seen by a model that calls every film NORMAL but ranks the bright ones highest: its
    decisions cannot rebalance the batch; told that 8 of 56 films are PNEUMONIA, its ranking can."""
    from cxrkit.evaluation import batchnorm_adaptation

    dark, bright = (films[:48].float() * 0.5).to(torch.uint8), (films[48:56].float() * 0.5 + 100).to(torch.uint8)
    batch = torch.cat([dark, bright])
    rank = np.r_[np.zeros(48), np.ones(8)] * 0.4 + np.linspace(0, 0.1, 56)
    monkeypatch.setattr(batchnorm_adaptation, "predict_resized",
                        lambda bundle, images: np.c_[1 - rank[:len(images)], rank[:len(images)]])
    monkeypatch.setattr(batchnorm_adaptation, "decide_indices", lambda bundle, probs: np.zeros(len(probs), int))
    bundle, mix = random_cnn(), {"NORMAL": 0.5, "PNEUMONIA": 0.5}

    def first_mean(adapted):
        return batchnorm_layers(adapted.model)[0].running_mean

    balanced = first_mean(adapt_batchnorm(bundle, torch.cat([dark[:8], bright]), min_films=1))
    by_decisions = first_mean(adapt_batchnorm(bundle, batch, mix))
    told = first_mean(adapt_batchnorm(bundle, batch, mix, positive_share=8 / 56))
    assert (told - balanced).abs().mean() < (by_decisions - balanced).abs().mean() / 3
    for bad in ({"positive_share": 1.5}, {"positive_share": 0.1, "class_mix": None}):
        with pytest.raises(ValueError, match="share of positive films"):
            adapt_batchnorm(bundle, batch, **{"class_mix": mix, **bad})


def test_adapted_files_record_whether_the_films_were_resampled(sample_dir, small_model):
    # the shipped models record the class mix of their recipes' training split
    assert training_class_mix(resolve_model("cxr_cnn")) == pytest.approx({"NORMAL": 0.257137, "PNEUMONIA": 0.742863})
    recorded = load_bundle(small_model)
    assert adapt_batchnorm_to_films(recorded, sample_dir).info["site_adaptation"]["resampled_to"] == \
        training_class_mix(recorded) == {"NORMAL": 0.26, "PNEUMONIA": 0.74}
    assert adapt_batchnorm_to_films(recorded, sample_dir, rebalance=False).info["site_adaptation"]["resampled_to"] \
        == "not asked"
    unknown = adapt_batchnorm_to_films(random_cnn(), sample_dir).info["site_adaptation"]["resampled_to"]
    assert unknown.startswith("not possible")


def test_models_without_batchnorm_and_too_few_films_are_refused(films):
    seed = ModelBundle(create_model("seed_cnn", num_classes=2).eval(), "seed_cnn", ("NORMAL", "PNEUMONIA"),
                       Preprocess(size=128))
    with pytest.raises(ValueError, match="no BatchNorm layers"):
        adapt_batchnorm(seed, films)
    with pytest.raises(ValueError, match=f"at least {MIN_FILMS}"):
        adapt_batchnorm(random_cnn(), films[:MIN_FILMS - 1])


def test_cxrkit_calibrate_unlabeled_writes_an_adapted_model_that_reports_say_so(sample_dir, small_model, tmp_path,
                                                                                capsys):
    site = sample_dir  # labels (the class folders) are ignored: every film under the folder is used
    out = tmp_path / "adapted.safetensors"
    assert main(["calibrate", "--model", small_model, "--unlabeled", str(site), "--out", str(out), "--quiet",
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["site_adaptation"]
    n = sum(len(sample_images(split, c)) for split in ("train", "test") for c in ("NORMAL", "PNEUMONIA"))
    assert record["films"] == n and record["folder"] == str(site)
    for shares in (record["decisions_before"], record["decisions_after"]):
        assert set(shares) == {"NORMAL", "PNEUMONIA"} and sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    shipped, adapted = load_bundle(small_model), load_bundle(out)
    assert adapted.threshold == shipped.threshold and adapted.info["site_adaptation"] == record
    first_new, first_old = batchnorm_layers(adapted.model)[0], batchnorm_layers(shipped.model)[0]
    assert not torch.allclose(first_new.running_mean, first_old.running_mean)
    report_dir = tmp_path / "report"
    assert main(["evaluate", "--model", str(out), "--data", str(site / "test"), "--out", str(report_dir),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert f"re-estimated on {n} unlabelled films" in (report_dir / "report.md").read_text()


def test_calibrate_unlabeled_says_when_the_share_was_not_given(sample_dir, small_model, tmp_path, capsys):
    """Resampling by the model's own decisions is what went wrong on skewed batches (docs/deploy.md), so a user who
    did not give the share hears it once, on stderr (stdout stays JSON)."""
    assert main(["calibrate", "--model", small_model, "--unlabeled", str(sample_dir), "--out",
                 str(tmp_path / "a.safetensors"), "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert "--positive-share" in captured.err
    assert main(["calibrate", "--model", small_model, "--unlabeled", str(sample_dir), "--positive-share", "0.5",
                 "--out", str(tmp_path / "b.safetensors"), "--quiet"]) == 0
    assert "--positive-share" not in capsys.readouterr().err


def test_unlabeled_then_site_refits_the_threshold_of_the_adapted_model(sample_dir, small_model, tmp_path, capsys):
    out = tmp_path / "both.safetensors"
    site = sample_dir / "test"
    assert main(["calibrate", "--model", small_model, "--unlabeled", str(sample_dir / "train"), "--site", str(site), "--out", str(out),
                 "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["site_adaptation"]["folder"] == str(sample_dir / "train")
    assert report["site"] and report["val_n"] == 24  # the calibration keys, as `calibrate --site --json` prints them
    assert load_bundle(out).info["site_adaptation"]["films"] == 32


@pytest.mark.parametrize("args, message", [
    ([], "give --data"),
    (["--data", "DATA", "--unlabeled", "DATA"], "not on the training data"),
    (["--unlabeled", "EMPTY"], "no JPEG, PNG or DICOM images"),
    (["--unlabeled", "FEW"], f"at least {MIN_FILMS} are needed"),
    (["--model", "seed001_missing", "--unlabeled", "DATA"], "seed001_missing"),
])
def test_cxrkit_calibrate_unlabeled_errors_are_one_line(args, message, sample_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no films here")
    few = tmp_path / "few"
    few.mkdir()
    for p in sample_images("test", "NORMAL")[:3]:
        (few / p.name).write_bytes(p.read_bytes())
    paths = {"DATA": str(sample_dir), "EMPTY": str(tmp_path / "empty"), "FEW": str(few)}
    argv = ["calibrate", *[paths.get(a, a) for a in args], "--out", str(tmp_path / "x.safetensors"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists()


def test_an_adapted_model_exports_with_its_new_statistics(films, tmp_path):
    """A site adapts, then deploys on the edge: the ONNX file and the packed BNN carry the re-estimated statistics."""
    from cxrkit.bnn import export_packed, load_packed
    from cxrkit.export import export_model
    from cxrkit.runtime import load_onnx

    site = (films.float() * 0.6 + 20).round().to(torch.uint8)
    torch.manual_seed(0)
    small_bnn = {"stem": 8, "widths": (8, 16, 16, 32), "depth": 1}
    bnn = ModelBundle(create_model("cxr_bnn", num_classes=2, **small_bnn).eval(), "cxr_bnn", ("NORMAL", "PNEUMONIA"),
                      Preprocess(size=SIZE, channels=1, mean=0.5, std=0.25), model_kwargs=small_bnn)
    for bundle, load in [(random_cnn(), lambda b: load_onnx(export_model(b, "onnx", tmp_path / "a.onnx").path)),
                         (bnn, lambda b: load_packed(export_packed(b, tmp_path / "a.npz")))]:
        adapted = adapt_batchnorm(bundle, site)
        exported = load(adapted)
        expected = predict_resized(adapted, site, optimize=False)[:, 1]
        got = exported.predict_resized(site.numpy(), 64)[:, 1]
        assert abs(got - expected).max() < 1e-3
        assert abs(expected - predict_resized(bundle, site, optimize=False)[:, 1]).max() > 1e-2  # statistics moved
