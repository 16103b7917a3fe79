"""Model registry, recipes (round trips and errors) and single-file model bundles."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from cxrkit.data.augment import Augment
from cxrkit.data.preprocess import Preprocess
from cxrkit.inference.bundle import (ModelBundle, ModelLoadError, load_bundle, read_metadata, resolve_model,
                                    save_bundle)
from cxrkit.inference.predictor import predict_arrays
from cxrkit.models import create_model, is_model, list_models, model_info
from cxrkit.recipes import RECIPES, Recipe, RecipeError, list_recipes, load_recipe


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ registry


def test_list_models():
    names = list_models()
    assert {"seed_cnn", "cxr_cnn"} <= set(names)
    assert names == sorted(names)
    assert set(list_models(family="cnn")) >= {"seed_cnn", "cxr_cnn"}
    assert list_models(family="no-such-family") == []
    assert is_model("cxr_cnn") and not is_model("resnet9000")


def test_seed_cnn_matches_seed_001_keras_model():
    model = create_model("seed_cnn").eval()
    assert n_params(model) == 1_848_129  # Keras summary of seed 001's network
    with torch.no_grad():
        out = model(torch.rand(3, 1, 128, 128))
    assert out.shape == (3, 1)


def test_seed_cnn_fast_rewrite_is_the_keras_function():
    """Pool-before-ReLU and HWC flatten must compute exactly Keras' Conv-ReLU-Pool-...-Flatten(HWC) network."""
    torch.manual_seed(0)
    m = model = create_model("seed_cnn").eval()
    x = torch.randn(3, 1, 128, 128)
    with torch.no_grad():
        h = F.max_pool2d(F.relu(m.conv1(x)), 2)
        h = F.max_pool2d(F.relu(m.conv2(h)), 2)
        h = h.permute(0, 2, 3, 1).reshape(3, -1)  # Keras flattens NHWC tensors
        want = m.fc2(F.relu(m.fc1(h)))
        got = model(x)
        got_cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(got_cl, want, atol=1e-4)


def test_cxr_cnn_is_smaller_and_accepts_224():
    cxr, seed = create_model("cxr_cnn").eval(), create_model("seed_cnn")
    assert n_params(cxr) < n_params(seed)
    with torch.no_grad():
        assert cxr(torch.rand(2, 1, 224, 224)).shape == (2, 1)
        assert cxr(torch.rand(2, 1, 96, 96)).shape == (2, 1)  # global pooling: any size


@pytest.mark.parametrize("name, size", [("seed_cnn", 128), ("cxr_cnn", 128)])
def test_three_class_head(name, size):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, size, size)).shape == (2, 3)


def test_model_kwargs_change_width():
    small = create_model("cxr_cnn", widths=(8, 16, 16, 32, 32))
    assert n_params(small) < n_params(create_model("cxr_cnn")) / 10


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError) as info:
        create_model("resnet9000")
    msg = info.value.args[0]
    assert "resnet9000" in msg and "seed_cnn" in msg and "cxr_cnn" in msg
    with pytest.raises(KeyError):
        model_info("resnet9000")


def test_model_info_fields():
    seed = model_info("seed_cnn")
    assert seed.name == "seed_cnn" and seed.family == "cnn" and seed.paper == "001"
    assert seed.classes == ("NORMAL", "PNEUMONIA")
    assert isinstance(seed.preprocess, Preprocess)
    assert seed.preprocess.size == 128 and seed.preprocess.channels == 1
    assert seed.description
    assert callable(seed.builder)
    cxr = model_info("cxr_cnn")
    assert cxr.preprocess.size == 224
    assert cxr.shipped_weights is not None and cxr.shipped_weights.is_file()
    assert seed.shipped_weights is None


def test_pretrained_without_weights_is_an_error():
    with pytest.raises(ValueError, match="ships no trained weights"):
        create_model("seed_cnn", pretrained=True)


# ------------------------------------------------------------------ recipes


def test_builtin_recipes():
    assert {"seed001", "cxr_cnn"} <= set(list_recipes())
    for name, recipe in RECIPES.items():
        assert recipe.name == name and is_model(recipe.model)
    seed = load_recipe("seed001")
    assert (seed.model, seed.image_size, seed.batch_size, seed.lr, seed.epochs) == ("seed_cnn", 128, 32, 1e-3, 10)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_round_trip_yaml_and_json(name, tmp_path):
    recipe = RECIPES[name]
    y = tmp_path / f"{name}.yaml"
    y.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    loaded = load_recipe(y)
    assert loaded == recipe
    assert isinstance(loaded.augment, Augment) and isinstance(loaded.invariance_augment, Augment)
    j = tmp_path / f"{name}.json"
    j.write_text(json.dumps(recipe.to_dict()))
    assert load_recipe(str(j)) == recipe
    s = tmp_path / "saved.yaml"
    recipe.save(s)
    assert load_recipe(s) == recipe


def test_recipe_round_trip_with_changes(tmp_path):
    recipe = load_recipe("cxr_cnn").replace(epochs=3, lr=0.01, augment=Augment(rotation=5, hflip=True), seed=7)
    recipe.save(tmp_path / "r.yaml")
    loaded = load_recipe(tmp_path / "r.yaml")
    assert loaded == recipe and loaded != load_recipe("cxr_cnn")


def test_run_config_nesting_and_directory(tmp_path):
    recipe = load_recipe("seed001").replace(epochs=2)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe.to_dict()}))
    assert load_recipe(tmp_path) == recipe


def test_unknown_recipe_name_suggests_close_ones():
    """A typo gets the nearest built-ins, not a wall of all of them."""
    with pytest.raises(RecipeError, match="did you mean cxr_cnn_wide") as err:
        load_recipe("cxr_cnn_wdie")
    assert "seed001" not in str(err.value)
    with pytest.raises(RecipeError) as err:
        load_recipe("nope")
    assert "did you mean" not in str(err.value) and "cxrkit recipes" in str(err.value)


def test_recipe_unknown_key(tmp_path):
    data = load_recipe("seed001").to_dict() | {"learning_rate": 0.1}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="learning_rate"):
        load_recipe(path)
    with pytest.raises(RecipeError):
        Recipe.from_dict({"name": "x", "model": "seed_cnn", "augment": {"spin": 3}})
    with pytest.raises(RecipeError, match="name"):
        Recipe.from_dict({"model": "seed_cnn"})


@pytest.mark.parametrize("change, words", [
    ({"optimizer": "adamm"}, "optimizer must be one of adam | adamw | sgd"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"precision": "fp16"}, "precision must be one of"),
    ({"early_stopping_metric": "val_acc"}, "early_stopping_metric must be one of"),
    ({"resize": "crop"}, "resize must be one of"),
    ({"batch_size": 0}, "batch_size must be 1 or more"),
    ({"epochs": -1}, "epochs must be 0 or more"),
    ({"epochs": 0}, "trains nothing"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"val_fraction": 0.6}, "val_fraction must be in (0, 0.5)"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in [0, 1)"),
    ({"image_size": 8}, "image_size must be 16 to 4096 px"),
    ({"epochs": "ten"}, "epochs must be a whole number"),
    ({"epochs": True}, "epochs must be a whole number"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"threshold_rule": "sensitivity:1.5"}, "unknown threshold rule"),
    ({"threshold_rule": "fixed:half"}, "unknown threshold rule"),
    ({"augment": {"zoom": 1.5}}, "augment.zoom must be a number, 0 or more and below 1"),
    ({"augment": {"spectrum_mix": 1.5}}, "augment.spectrum_mix must be a number, from 0 to 1"),
    ({"augment": {"hflip": "yes"}}, "augment.hflip must be true or false"),
    ({"mixup": -0.2}, "mixup must be a Beta parameter from 0 (off) to 10"),
    ({"split_seed": -2}, "split_seed must be a seed of 0 or more, or -1"),
    ({"invariance_augment": {"rotation": -10}}, "invariance_augment.rotation must be a number, 0 or more"),
])
def test_recipe_values_are_checked_when_read(change, words, tmp_path):
    """A bad value fails in one line when the recipe is read (file or override), before any film is decoded."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(load_recipe("seed001").to_dict() | change))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_recipe_yaml_reads_exponent_floats_and_seed004_trains_its_head_only(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: mine\nmodel: seed_cnn\nlr: 1e-3\nweight_decay: 5e-4\n")  # strings to PyYAML
    recipe = load_recipe(path)
    assert recipe.lr == 0.001 and recipe.weight_decay == 0.0005
    assert load_recipe("seed004").epochs == 0  # head epochs alone are training


def test_recipe_unknown_name_or_unparsable(tmp_path):
    with pytest.raises(RecipeError, match="no_such_recipe"):
        load_recipe("no_such_recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(RecipeError, match="cannot parse"):
        load_recipe(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(lst)


# ------------------------------------------------------------------ bundles


def _bundle(arch="cxr_cnn", kwargs=None, classes=("NORMAL", "PNEUMONIA")) -> ModelBundle:
    torch.manual_seed(0)
    kwargs = kwargs or {}
    model = create_model(arch, num_classes=len(classes), **kwargs).eval()
    return ModelBundle(model, arch, tuple(classes), Preprocess(size=64, mean=0.5, std=0.25), 0.37, kwargs,
                       {"recipe": "test"})


def test_bundle_round_trip_identical_outputs(tmp_path):
    bundle = _bundle(kwargs={"widths": (8, 16, 16, 32, 32)})
    # give BatchNorm non-trivial running statistics so buffers are tested too
    bundle.model.train()
    with torch.no_grad():
        bundle.model(torch.rand(4, 1, 64, 64) * 3)
    bundle.model.eval()
    path = save_bundle(bundle, tmp_path / "m.safetensors")
    loaded = load_bundle(path)
    assert loaded.arch == "cxr_cnn" and loaded.classes == bundle.classes
    assert loaded.preprocess == bundle.preprocess
    assert loaded.threshold == pytest.approx(0.37)
    assert loaded.model_kwargs == {"widths": [8, 16, 16, 32, 32]}
    assert loaded.info == {"recipe": "test"}
    assert loaded.source == str(path)
    x = torch.rand(5, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), bundle.model(x), rtol=0, atol=0)
    assert resolve_model(path).arch == "cxr_cnn"


def test_bundle_round_trip_three_classes(tmp_path):
    bundle = _bundle("seed_cnn", classes=("NORMAL", "BACTERIA", "VIRUS"))
    bundle.preprocess = Preprocess(size=128)
    path = save_bundle(bundle, tmp_path / "m3.safetensors")
    loaded = load_bundle(path)
    arrays = [np.random.default_rng(i).integers(0, 256, (150, 170), dtype=np.uint8) for i in range(3)]
    p1, p2 = predict_arrays(bundle, arrays), predict_arrays(loaded, arrays)
    assert p1.shape == (3, 3)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-5)


def test_run_directory_resolves_to_its_model(tmp_path):
    save_bundle(_bundle(), tmp_path / "model.safetensors")
    assert resolve_model(tmp_path).source == str(tmp_path / "model.safetensors")
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        resolve_model(empty)


def test_corrupt_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError) as info:
        load_bundle(junk)
    assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(ModelLoadError, match="metadata"):
        load_bundle(foreign)
    with pytest.raises(ModelLoadError, match="no such"):
        load_bundle(tmp_path / "absent.safetensors")
    with pytest.raises(ModelLoadError, match="not a shipped model"):
        resolve_model(str(tmp_path / "absent.safetensors"))
    with pytest.raises(ModelLoadError, match="ships no trained weights"):
        resolve_model("seed_cnn")


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    path = save_bundle(_bundle(), tmp_path / "m.safetensors")
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["cxrkit"])
    meta["model_kwargs"] = {"widths": [8, 16, 16, 32, 32]}  # claims a narrower net than the weights
    save_file(load_file(str(path)), str(tmp_path / "lie.safetensors"), metadata={"cxrkit": json.dumps(meta)})
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_bundle(tmp_path / "lie.safetensors")
    for field, value in [("model_kwargs", {"evil": 1}), ("preprocess", {"foo": 1}), ("classes", 5),
                         ("threshold", "high"), ("preprocess", {**meta["preprocess"], "size": 100_000})]:  # 40 GB  # a tampered or foreign field: one line, no traceback
        bad = {**meta, "model_kwargs": {}, field: value}
        save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), metadata={"cxrkit": json.dumps(bad)})
        with pytest.raises(ModelLoadError, match="malformed cxrkit metadata"):
            load_bundle(tmp_path / "bad.safetensors")
    # a header asking for 32 GB of weights is refused before they are allocated (meta-device skeleton)
    huge = {**meta, "model_kwargs": {"widths": [16, 32, 64, 128, 30_000]}}
    save_file(load_file(str(path)), str(tmp_path / "huge.safetensors"), metadata={"cxrkit": json.dumps(huge)})
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_bundle(tmp_path / "huge.safetensors")
    # JSON nested past Python's recursion limit, and ensembles chained into 2**depth forward passes per film
    save_file(load_file(str(path)), str(tmp_path / "deep.safetensors"), metadata={"cxrkit": "[" * 100_000})
    with pytest.raises(ModelLoadError, match="not a cxrkit model file"):
        load_bundle(tmp_path / "deep.safetensors")
    leaf = {"arch": meta["arch"], "model_kwargs": {}, "preprocess": meta["preprocess"]}
    two_views = [{"name": "as is"}, {"name": "flip", "flip": True}]
    for depth, words in ((5, "nested more than 3 deep"), (300, "nested more than 3 deep")):
        member = leaf
        for _ in range(depth):
            member = {"arch": "ensemble", "model_kwargs": {"members": [member], "views": two_views},
                      "preprocess": meta["preprocess"]}
        chain = {**meta, "arch": "ensemble", "model_kwargs": member["model_kwargs"]}
        save_file(load_file(str(path)), str(tmp_path / "chain.safetensors"), metadata={"cxrkit": json.dumps(chain)})
        with pytest.raises(ModelLoadError, match=words):
            load_bundle(tmp_path / "chain.safetensors")
    wide = {**meta, "arch": "ensemble", "model_kwargs": {"members": [leaf] * 300}}
    save_file(load_file(str(path)), str(tmp_path / "wide.safetensors"), metadata={"cxrkit": json.dumps(wide)})
    with pytest.raises(ModelLoadError, match="more than 256 member forward passes"):
        load_bundle(tmp_path / "wide.safetensors")
    meta["arch"] = "resnet9000"
    save_file(load_file(str(path)), str(tmp_path / "arch.safetensors"), metadata={"cxrkit": json.dumps(meta)})
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        load_bundle(tmp_path / "arch.safetensors")


def test_resolve_shipped_model():
    bundle = resolve_model("cxr_cnn")
    assert bundle.arch == "cxr_cnn" and bundle.source == "cxr_cnn"
    assert bundle.classes == ("NORMAL", "PNEUMONIA")
    recorded = read_metadata(model_info("cxr_cnn").shipped_weights)["preprocess"]  # the file's, not the registry's
    assert (bundle.preprocess.size, bundle.preprocess.clahe) == (recorded["size"], recorded["clahe"])
    assert 0.0 < bundle.threshold < 1.0
    assert not bundle.model.training
    default = resolve_model(None)
    assert default.arch == "cxr_cnn"
    # same weights either way, and they are not a fresh random init
    fresh = create_model("cxr_cnn")
    for (k, a), b in zip(bundle.model.state_dict().items(), default.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, b) for a, b in zip(bundle.model.state_dict().values(),
                                                     fresh.state_dict().values()))


def test_precision_auto_follows_native_bf16_and_rejects_unknown():
    from pathlib import Path

    from cxrkit.training.trainer import resolve_precision

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert resolve_precision("auto") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8")


@pytest.mark.parametrize("name", ["seed_cnn", "cxr_cnn"])
def test_compiled_inference_copies_match_the_eager_model(name):
    """Each engine's compiled copy gives the eager model's probabilities, and really is that engine's."""
    from cxrkit.inference.onnxruntime_forward import OnnxRuntimeForward
    from cxrkit.inference.predictor import predict_resized, use_precision

    torch.manual_seed(1)
    pre = model_info(name).preprocess
    bundle = ModelBundle(create_model(name).eval(), name, ("NORMAL", "PNEUMONIA"), pre)
    size = pre.size
    for engine, kind in (("auto", OnnxRuntimeForward), ("torchscript", torch.jit.ScriptModule)):
        bundle.engine = engine
        for n in (1, 5):
            images = torch.randint(0, 256, (n, size, size), dtype=torch.uint8)
            eager = predict_resized(bundle, images, optimize=False)
            fast = predict_resized(bundle, images)
            assert fast.shape == (n, 2) and abs(fast - eager).max() < 1e-4
        assert isinstance(bundle.frozen[("fp32", engine)], kind)  # the fast path was really taken
    use_precision(bundle, "bf16")  # opt-in: a frozen bfloat16 copy beside the fp32 ones, always TorchScript
    bf16 = predict_resized(bundle, images)
    assert abs(bf16 - eager).max() < 0.05 and isinstance(bundle.frozen[("bf16", "auto")], torch.jit.ScriptModule)


def test_binarized_networks_and_unknown_engines_stay_off_onnxruntime():
    """A BNN's signs flip on 1e-7 float differences, so it keeps TorchScript; a misspelt engine is an error."""
    from cxrkit.inference.predictor import frozen_for_inference

    bundle = ModelBundle(create_model("cxr_bnn").eval(), "cxr_bnn", ("NORMAL", "PNEUMONIA"), model_info("cxr_bnn").preprocess)
    assert isinstance(frozen_for_inference(bundle), torch.jit.ScriptModule)
    bundle.engine = "tensorrt"
    with pytest.raises(ValueError, match="engine 'tensorrt'"):
        frozen_for_inference(bundle)


def test_trained_models_ship_under_their_own_name(tmp_path, monkeypatch):
    """A weights file named after a trained model (not an architecture) is listed and loads by that name."""
    import shutil

    from cxrkit.inference.bundle import resolve_model
    from cxrkit.models import _registry

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(_registry.shipped_models()["cxr_cnn"], weights / "my_task.safetensors")
    monkeypatch.setattr(_registry, "shipped_models",
                        lambda: {p.name[:-len(".safetensors")]: p for p in weights.glob("*.safetensors")})
    monkeypatch.setattr("cxrkit.inference.bundle.shipped_models", _registry.shipped_models)
    bundle = resolve_model("my_task")
    assert bundle.arch == "cxr_cnn" and bundle.source == "my_task"
