"""Train on the real sample, evaluate, report; resume after an interruption; reproducibility."""
from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from conftest import CLASSES, sample_images
from cxrkit.cli.main import main
from cxrkit.data.augment import Augment
from cxrkit.evaluation import metrics as metrics_mod
from cxrkit.evaluation.evaluate import evaluate_folder, write_report
from cxrkit.inference.bundle import load_bundle
from cxrkit.recipes import load_recipe
from cxrkit.training import rundir, train
from cxrkit.training import trainer as trainer_mod

TIMING_KEYS = {"train_seconds", "train_img_per_s"}


@pytest.fixture(scope="module")
def fewer_bootstraps():
    """The trainer's final validation metrics bootstrap 1,000 times by default; 100 is plenty here."""
    real = metrics_mod.evaluate_probabilities
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "evaluate_probabilities", functools.partial(real, n_boot=100))
        yield


@pytest.fixture(scope="module")
def learned_run(fast_recipe, sample_dir, tmp_path_factory, fewer_bootstraps):
    """8 epochs without augmentation or label smoothing: training loss has to fall."""
    recipe = fast_recipe.replace(epochs=8, augment=Augment(), label_smoothing=0.0, keep_best=False)
    out = tmp_path_factory.mktemp("runs") / "learned"
    result = train(recipe, sample_dir, out, progress=False, command="pytest learned_run")
    return recipe, result


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def _assert_same_history(a, b):
    assert len(a) == len(b)
    for ha, hb in zip(_strip(a), _strip(b)):
        assert ha.keys() == hb.keys()
        for key in ha:
            assert ha[key] == pytest.approx(hb[key], abs=1e-6, nan_ok=True), (ha["epoch"], key)


def _assert_same_model(a, b, size):
    x = torch.rand(6, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.model(x), b.model(x), rtol=0, atol=1e-6)


def _interrupt_after_epoch_2_then_resume(recipe, sample_dir, out, monkeypatch):
    """Train ``recipe`` into ``out``, kill it as Ctrl-C would right after epoch 2 is saved, then ``--resume``."""
    real_write = rundir.write_json

    def killing_write(path, obj):
        real_write(path, obj)
        if path.name == "history.json" and len(obj) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "write_json", killing_write)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, sample_dir, out, progress=False, verbose=False)
    monkeypatch.setattr(rundir, "write_json", real_write)
    return train(recipe, sample_dir, out, resume=True, progress=False, verbose=False)


# ------------------------------------------------------------------ one training run, fully inspected


def test_run_directory_contents(learned_run, sample_dir):
    recipe, result = learned_run
    run = result.run_dir
    for name in ("config.yaml", "run.json", "history.json", "checkpoint.pt", "training_curves.png",
                 "val_metrics.json", "model.safetensors"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not list(run.glob("*.tmp")), "atomic writes left temporary files behind"
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == recipe.seed and info["recipe"] == recipe.name
    assert info["classes"] == list(CLASSES)
    fp = info["data_fingerprint"]
    assert set(fp) == {"train", "val"} and all(len(v) == 64 for v in fp.values()) and fp["train"] != fp["val"]
    assert {"torch", "numpy", "python", "cxrkit", "scikit-learn"} <= set(info["versions"])
    assert info["versions"]["torch"] == torch.__version__
    assert info["command"] == "pytest learned_run"
    assert (info["device"], info["world_size"]) == ("cpu", 1)
    n_train = len(sample_images("train", "NORMAL")) + len(sample_images("train", "PNEUMONIA"))
    assert info["split"]["train"] + info["split"]["val"] == n_train
    assert info["split"]["val"] >= 2 and info["unreadable"] == []

    # config.yaml is itself a recipe that reproduces the run
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config == json.loads(json.dumps(recipe.to_dict()))
    assert load_recipe(run).to_dict() == config

    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, recipe.epochs + 1))
    assert _strip(history) == _strip(result.history)
    for h in history:
        assert {"train_loss", "val_loss", "val_acc", "val_auc", "lr"} <= set(h)

    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == recipe.epochs and len(ck["history"]) == recipe.epochs

    val = json.loads((run / "val_metrics.json").read_text())
    assert val["n"] == info["split"]["val"]
    assert val["threshold"] == pytest.approx(result.bundle.threshold)

    bundle = load_bundle(run / "model.safetensors")
    assert bundle.arch == recipe.model and bundle.classes == CLASSES
    assert bundle.preprocess.size == recipe.image_size
    assert bundle.info["recipe"] == recipe.name and bundle.info["threshold_rule"] == recipe.threshold_rule
    assert 0.0 <= bundle.threshold <= 1.0
    # the class mix of the films the model trained on (its BatchNorm statistics'), for calibrate --unlabeled
    shares = bundle.info["train_class_shares"]
    assert list(shares) == list(CLASSES) and sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    assert shares["NORMAL"] * info["split"]["train"] == pytest.approx(round(shares["NORMAL"] * info["split"]["train"]),
                                                                      abs=1e-3)
    _assert_same_model(bundle, result.bundle, recipe.image_size)


def test_training_learns(learned_run):
    recipe, result = learned_run
    assert recipe.class_weighting == "balanced" and recipe.label_smoothing == 0.0
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0], losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    # With balanced class weights, no input-blind prediction gets the weighted BCE below ln 2:
    # ending well under it means the model separates the training images.
    assert max(losses[-2:]) < 0.8 * np.log(2), losses
    assert losses[0] > 0.5 * np.log(2), "the first epoch cannot already be fitted"


def test_evaluate_and_report(learned_run, sample_dir, tmp_path):
    _, result = learned_run
    ev = evaluate_folder(result.bundle, sample_dir, split="test", progress=False, n_boot=100)
    n_test = len(sample_images("test", "NORMAL")) + len(sample_images("test", "PNEUMONIA"))
    m = ev.metrics
    assert m["n"] == n_test == len(ev.labels) == len(ev.paths)
    assert ev.probabilities.shape == (n_test, 2)
    assert all("/test/" in p.replace("\\", "/") for p in ev.paths), "only the test split is scored"
    assert sum(map(sum, m["confusion_matrix"])) == n_test
    assert m["threshold"] == pytest.approx(result.bundle.threshold)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(ev.labels, ev.probabilities[:, 1]))

    report = write_report(ev, tmp_path / "report", run_dir=result.run_dir)
    assert report == tmp_path / "report" / "report.md"
    text = report.read_text()
    for word in ("Accuracy", "Sensitivity", "Specificity", "ROC-AUC", "Confusion matrix", "NORMAL", "PNEUMONIA",
                 f"{m['accuracy']:.3f}", f"{m['roc_auc']:.3f}"):
        assert word in text, word
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for key in ("n", "accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1", "threshold",
                "confusion_matrix", "classes"):
        assert key in saved, key
    assert saved["n"] == n_test and saved["classes"] == list(CLASSES)
    for fig in ("roc.png", "pr.png", "confusion.png", "reliability.png", "training_curves.png"):
        assert (tmp_path / "report" / fig).is_file(), fig
        assert f"({fig})" in text


# ------------------------------------------------------------------ resume and reproducibility


@pytest.fixture(scope="module")
def small_recipe(fast_recipe):
    """Augmentation, dropout and one-cycle on: resuming must restore every RNG and the schedule."""
    return fast_recipe.replace(epochs=4, image_size=32, seed=3)


@pytest.fixture(scope="module")
def run_a(small_recipe, sample_dir, tmp_path_factory, fewer_bootstraps):
    return train(small_recipe, sample_dir, tmp_path_factory.mktemp("runs") / "a", progress=False)


def test_resume_after_interruption_matches_uninterrupted_run(run_a, small_recipe, sample_dir, tmp_path,
                                                            monkeypatch, fewer_bootstraps):
    assert small_recipe.augment.enabled
    real_write = rundir.write_json

    def killing_write(path, obj):
        real_write(path, obj)
        if path.name == "history.json" and len(obj) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived right after epoch 2 was saved

    out = tmp_path / "b"
    monkeypatch.setattr(rundir, "write_json", killing_write)
    with pytest.raises(KeyboardInterrupt):
        train(small_recipe, sample_dir, out, progress=False)
    monkeypatch.setattr(rundir, "write_json", real_write)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (out / "model.safetensors").exists()

    with pytest.raises(FileExistsError):
        train(small_recipe, sample_dir, out, progress=False)  # never silently overwrite a run

    # a resume continues the run as it started: another recipe or other films are refused before any step
    checkpoint = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"changes its recipe \(lr "):
        train(small_recipe.replace(lr=2 * small_recipe.lr), sample_dir, out, resume=True, progress=False)
    fewer = tmp_path / "fewer"
    shutil.copytree(sample_dir, fewer)
    next((fewer / "train" / "NORMAL").iterdir()).unlink()
    with pytest.raises(ValueError, match="data the run started on"):
        train(small_recipe, fewer, out, resume=True, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == checkpoint

    # the command line resumes from the run's own config.yaml when --recipe is left out
    assert main(["train", "--data", str(sample_dir), "--out", str(out), "--resume", "--quiet"]) == 0
    resumed = load_bundle(out / "model.safetensors")
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    _assert_same_history(history, run_a.history)
    _assert_same_model(resumed, run_a.bundle, small_recipe.image_size)
    assert resumed.threshold == pytest.approx(run_a.bundle.threshold, abs=1e-6)
    assert resumed.info["best_epoch"] == run_a.bundle.info["best_epoch"]


def test_resume_without_checkpoint_is_an_error(small_recipe, sample_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(small_recipe, sample_dir, tmp_path / "never_started", resume=True, progress=False)


def test_same_seed_same_run(run_a, small_recipe, sample_dir, tmp_path, fewer_bootstraps):
    again = train(small_recipe, sample_dir, tmp_path / "c", progress=False)
    _assert_same_history(again.history, run_a.history)
    _assert_same_model(again.bundle, run_a.bundle, small_recipe.image_size)
    run_json = [json.loads((r / "run.json").read_text()) for r in (run_a.run_dir, again.run_dir)]
    assert run_json[0]["data_fingerprint"] == run_json[1]["data_fingerprint"]
    losses_a = [h["train_loss"] for h in run_a.history]
    other = train(small_recipe.replace(seed=4), sample_dir, tmp_path / "d", progress=False)
    assert [h["train_loss"] for h in other.history] != losses_a, "the seed has no effect"


def test_one_cycle_schedule_survives_a_handful_of_steps(fast_recipe, sample_dir, tmp_path):
    """A smoke run of 1 epoch x 2 steps must not crash inside OneCycleLR's warm-up arithmetic."""
    recipe = fast_recipe.replace(epochs=1, image_size=32, schedule="onecycle")
    result = train(recipe, sample_dir, tmp_path / "short", progress=False, verbose=False, max_steps=2)
    assert len(result.history) == 1 and (tmp_path / "short" / "model.safetensors").is_file()


def test_equalize_recipe_option_reaches_the_saved_model(fast_recipe, sample_dir, tmp_path):
    recipe = fast_recipe.replace(epochs=1, image_size=32, equalize=True)
    train(recipe, sample_dir, tmp_path / "eq", progress=False, verbose=False, max_steps=2)
    assert yaml.safe_load((tmp_path / "eq" / "config.yaml").read_text())["equalize"] is True
    assert load_bundle(tmp_path / "eq" / "model.safetensors").preprocess.equalize


def test_clahe_recipe_option_reaches_the_saved_model(fast_recipe, sample_dir, tmp_path):
    recipe = fast_recipe.replace(epochs=1, image_size=32, clahe=2.0)
    train(recipe, sample_dir, tmp_path / "clahe", progress=False, verbose=False, max_steps=2)
    assert yaml.safe_load((tmp_path / "clahe" / "config.yaml").read_text())["clahe"] == 2.0
    assert load_bundle(tmp_path / "clahe" / "model.safetensors").preprocess.clahe == 2.0


# ------------------------------------------------------------------ weight average (recipe.ema_decay)


def test_weight_average_is_the_exponential_average_of_every_steps_weights(small_recipe, sample_dir, tmp_path,
                                                                        monkeypatch, fewer_bootstraps):
    """The saved model of an ``ema_decay`` run is the EMA of the weights and BatchNorm statistics the plain run
    goes through, step by step (recorded by an optimizer hook on a run without the average: the average must
    not change the training trajectory itself)."""
    decay = 0.8
    recipe = small_recipe.replace(epochs=2, keep_best=False)
    trajectory = []
    real_optimizer = trainer_mod._optimizer

    def recording_optimizer(recipe_, model):
        opt = real_optimizer(recipe_, model)
        opt.register_step_post_hook(lambda *_: trajectory.append(
            {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return opt

    monkeypatch.setattr(trainer_mod, "_optimizer", recording_optimizer)
    plain = train(recipe, sample_dir, tmp_path / "plain", progress=False, verbose=False)
    monkeypatch.setattr(trainer_mod, "_optimizer", real_optimizer)
    averaged = train(recipe.replace(ema_decay=decay), sample_dir, tmp_path / "ema", progress=False, verbose=False)

    expected = dict(trajectory[0])
    for state in trajectory[1:]:
        expected = {k: (decay * v + (1 - decay) * state[k]) if v.is_floating_point() else v
                    for k, v in expected.items()}
    got = averaged.bundle.model.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the plain run ships its last step's weights (so the hook saw the real trajectory); the average differs
    plain_state = plain.bundle.model.state_dict()
    floats = [k for k, v in expected.items() if v.is_floating_point()]
    for key in floats:
        torch.testing.assert_close(plain_state[key], trajectory[-1][key], rtol=0, atol=0, msg=key)
    assert any(not torch.allclose(got[k], trajectory[-1][k]) for k in floats)
    # validation (and so the best epoch) judges the average, not the step's weights
    assert all(a["val_loss"] != b["val_loss"] for a, b in zip(averaged.history, plain.history))
    assert [a["train_loss"] for a in averaged.history] == [b["train_loss"] for b in plain.history]
    assert yaml.safe_load((tmp_path / "ema" / "config.yaml").read_text())["ema_decay"] == decay


@pytest.mark.parametrize("option", [{"ema_decay": 0.9}, {"mixup": 0.4}], ids=["weight_average", "mixup"])
def test_training_option_resumes_exactly(option, small_recipe, sample_dir, tmp_path, monkeypatch, fewer_bootstraps):
    """The weight average lives in the checkpoint, mixup's draws in the run's generator: both continue exactly."""
    recipe = small_recipe.replace(epochs=3, **option)
    whole = train(recipe, sample_dir, tmp_path / "whole", progress=False, verbose=False)
    resumed = _interrupt_after_epoch_2_then_resume(recipe, sample_dir, tmp_path / "cut", monkeypatch)
    _assert_same_history(resumed.history, whole.history)
    _assert_same_model(resumed.bundle, whole.bundle, recipe.image_size)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_weight_average_decay_out_of_range_is_a_recipe_error(decay):
    from cxrkit.recipes import RecipeError

    with pytest.raises(RecipeError, match="ema_decay"):
        load_recipe("cxr_cnn").replace(ema_decay=decay)


# ------------------------------------------------------------------ mixup (recipe.mixup)


def test_mixup_run_learns_the_training_films(fast_recipe, sample_dir, tmp_path, fewer_bootstraps):
    """Blended targets keep the loss above a plain run's floor, but the network must still rank its own training
    films: mixup teaches between the classes, not instead of them."""
    recipe = fast_recipe.replace(epochs=8, augment=Augment(), label_smoothing=0.0, keep_best=False, mixup=0.4)
    result = train(recipe, sample_dir, tmp_path / "mixup", progress=False, verbose=False)
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    seen = evaluate_folder(result.bundle, sample_dir, split="train", progress=False, n_boot=0).metrics
    assert seen["roc_auc"] > 0.8, seen["roc_auc"]
    assert yaml.safe_load((tmp_path / "mixup" / "config.yaml").read_text())["mixup"] == 0.4


def test_mixup_loss_is_the_blend_of_both_targets_losses(small_recipe, sample_dir, tmp_path, monkeypatch,
                                                        fewer_bootstraps):
    """With every film its own partner the blend is the film itself, and lam * loss + (1 - lam) * loss must give
    the plain run's trajectory: the two target terms carry the same class weights and normalisation."""
    plain = train(small_recipe.replace(epochs=2), sample_dir, tmp_path / "plain", progress=False, verbose=False)
    monkeypatch.setattr(trainer_mod, "mix_pairs", lambda x, alpha, gen: (x, torch.arange(x.shape[0]), 0.3))
    mixed = train(small_recipe.replace(epochs=2, mixup=0.4), sample_dir, tmp_path / "self", progress=False,
                  verbose=False)
    _assert_same_history(mixed.history, plain.history)
    monkeypatch.undo()  # the real blend, with real partners, changes the trajectory
    blended = train(small_recipe.replace(epochs=2, mixup=0.4), sample_dir, tmp_path / "real", progress=False,
                    verbose=False)
    assert blended.history[0]["train_loss"] != plain.history[0]["train_loss"]



# ------------------------------------------------------------------ progressive resizing (recipe.size_schedule)


def test_size_schedule_trains_small_then_full_and_validates_at_full_size(small_recipe, sample_dir, tmp_path,
                                                                        monkeypatch, fewer_bootstraps):
    """Epochs 1-2 see 16 px films, 3 sees 24, 4 the recipe's 32; validation and the saved model are at 32."""
    recipe = small_recipe.replace(size_schedule=[[2, 16], [3, 24]])
    seen: list[tuple[bool, int]] = []  # (training?, side) of every forward pass
    real_create = trainer_mod.create_model

    def recording_create(*args, **kwargs):
        model = real_create(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inputs: seen.append((m.training, inputs[0].shape[-1])))
        return model

    monkeypatch.setattr(trainer_mod, "create_model", recording_create)
    result = train(recipe, sample_dir, tmp_path / "progressive", progress=False, verbose=False)
    assert [h["image_size"] for h in result.history] == [16, 16, 24, 32]
    trained_sides = [side for training, side in seen if training]
    assert sorted(set(trained_sides)) == [16, 24, 32] and trained_sides == sorted(trained_sides)
    assert {side for training, side in seen if not training} == {32}
    assert result.bundle.preprocess.size == 32
    assert yaml.safe_load((tmp_path / "progressive" / "config.yaml").read_text())["size_schedule"] == [[2, 16],
                                                                                                        [3, 24]]
    plain = train(small_recipe, sample_dir, tmp_path / "plain", progress=False, verbose=False)
    assert [h["train_loss"] for h in result.history][:2] != [h["train_loss"] for h in plain.history][:2]


def test_size_schedule_resumes_exactly_across_the_size_change(small_recipe, sample_dir, tmp_path, monkeypatch,
                                                              fewer_bootstraps):
    recipe = small_recipe.replace(epochs=3, size_schedule=[[2, 16]])
    whole = train(recipe, sample_dir, tmp_path / "whole", progress=False, verbose=False)
    resumed = _interrupt_after_epoch_2_then_resume(recipe, sample_dir, tmp_path / "cut", monkeypatch)
    _assert_same_history(resumed.history, whole.history)
    _assert_same_model(resumed.bundle, whole.bundle, recipe.image_size)


@pytest.mark.parametrize("schedule", [[[2, 64]], [[2, 8]], [[3, 16], [2, 24]], [[2, 24], [3, 16]], [[2]],
                                      [[2.5, 16]], "2:16", [[0, 16]]])
def test_bad_size_schedule_is_a_recipe_error(schedule):
    from cxrkit.recipes import RecipeError

    with pytest.raises(RecipeError, match="size_schedule"):
        load_recipe("cxr_cnn_fast").replace(image_size=32, size_schedule=schedule)


def test_size_schedule_round_trips_through_a_run_config(tmp_path):
    recipe = load_recipe("cxr_cnn_fast").replace(image_size=224, epochs=9, size_schedule=[[6, 128]])
    recipe.save(tmp_path / "r.yaml")
    again = load_recipe(tmp_path / "r.yaml")
    assert again == recipe
    assert [again.epoch_size(e) for e in range(1, 10)] == [128] * 6 + [224] * 3
