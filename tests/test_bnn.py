"""Binarized networks: seed 000's model, STE and clipping, the packed file and the torch-free engine."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import CLASSES, SAMPLE
from cxrkit.bnn import PackedFormatError, export_packed, load_packed, pack_signs, unpack_signs
from cxrkit.bnn.engine import _popcount_table
from cxrkit.bnn.packing import read_packed
from cxrkit.data.io import read_image
from cxrkit.data.preprocess import Preprocess, resize_gray, to_model_input
from cxrkit.inference.bundle import ModelBundle, load_bundle, save_bundle
from cxrkit.inference.decision import uncertain_mask
from cxrkit.inference.predictor import predict_arrays, predict_resized
from cxrkit.machine import cpu_flags
from cxrkit.models import create_model, model_info
from cxrkit.models._binary import BinaryConv2d, BinaryLinear, sign_ste
from cxrkit.recipes import load_recipe
from cxrkit.training import train

SMALL = {"stem": 8, "widths": (8, 16, 16, 32), "depth": 1}  # cxr_bnn shrunk for speed, same layer types
SMALL_PRE = Preprocess(size=64, channels=1, mean=0.5, std=0.25)
# Engine vs PyTorch: the binary parts are exact integers; the real stem and pooling sum in another order, which
# moves logits by a few float32 ulps of their scale. 1e-3 of the logit scale leaves room for a rare bit flip.
REL_TOL = 1e-3
HAVE_CC = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))  # for xnor.c, the C kernels


def _binary_layers(model):
    return [m for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))]


def _randomized(model):
    """Random BN statistics and thresholds, so that an untrained model exercises every folded parameter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
            if getattr(m, "threshold", None) is not None:
                m.threshold.uniform_(-0.2, 0.2, generator=g)
            if hasattr(m, "shift_in"):
                m.shift_in.uniform_(-0.2, 0.2, generator=g)
    return model.eval()


def _bundle(name, pre, **kwargs):
    torch.manual_seed(0)
    return ModelBundle(_randomized(create_model(name, **kwargs)), name, CLASSES, pre, 0.5, kwargs)


def _sample_arrays():
    paths = sorted(SAMPLE.rglob("*.jpeg"))
    assert len(paths) > 20
    return [read_image(p) for p in paths]


# ------------------------------------------------------------------ seed 000


def test_seed_bnn_matches_seed_000_layer_table():
    model = create_model("seed_bnn").eval()
    counts = [sum(p.numel() for p in m.parameters()) for m in (*_binary_layers(model), model.classifier[-1])]
    assert counts == [896, 18_496, 7_372_928, 258]
    assert sum(p.numel() for p in model.parameters()) == 7_392_578
    info = model_info("seed_bnn")
    assert info.family == "bnn" and info.preprocess == Preprocess(size=128, channels=3, mean=0.0, std=1.0)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 128, 128)).shape == (2, 2)  # two logits, softmax


def test_seed_bnn_binarized_inputs_make_the_output_constant():
    """sign(MaxPool(ReLU(.))) is +1 everywhere, so Larq's usual pattern cannot see the image."""
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        out = create_model("seed_bnn").eval()(x)
        free = create_model("seed_bnn", binarize_inputs=False).eval()(x)
    assert torch.equal(out[0], out[1])
    assert not torch.equal(free[0], free[1])


def test_seed000_recipe_is_the_published_setup():
    r = load_recipe("seed000")
    assert (r.model, r.image_size, r.optimizer, r.lr, r.epochs, r.batch_size) == ("seed_bnn", 128, "adam", 1e-3, 10, 32)
    assert r.threshold_rule == "fixed:0.5" and r.class_weighting == "none" and r.label_smoothing == 0
    assert r.augment.rotation == 0 and r.augment.zoom == 0 and r.augment.shift == 0


# ------------------------------------------------------------------ STE, clipping, training


def test_sign_ste_forward_and_gradient_mask():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]  # zero maps to +1, as Larq's ste_sign
    (y * torch.arange(1.0, 8.0)).sum().backward()
    assert x.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]  # passed where |x| <= 1


def test_weight_gradient_is_larqs_ste_for_clipped_weights():
    """Binary layers pass the weight gradient unmasked: identical to ste_sign's |w| <= 1 mask on the clipped
    latent weights the trainer guarantees (exactly +-1 included), and at -0.0 the sign is +1."""
    layer = BinaryLinear(7, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([-1.0, -0.5, -0.0, 0.0, 0.25, 1.0, 0.9]).repeat(3, 1))
    x = torch.randn(4, 7)
    layer(x).sum().backward()
    w = layer.weight.detach().clone().requires_grad_(True)
    F.linear(x, sign_ste(w)).sum().backward()
    assert torch.equal(layer.weight.grad, w.grad)
    assert layer.binary_weight()[0].tolist() == [-1, -1, 1, 1, 1, 1, 1]


def test_seed_bnn_flattens_like_keras():
    """(H, W, C) order, as Keras's Flatten on NHWC maps: feature k of the dense input is pixel k // 64, channel
    k % 64 of the last pooled map."""
    model = create_model("seed_bnn").eval()
    x = torch.arange(2 * 64 * 30 * 30, dtype=torch.float32).reshape(2, 64, 30, 30)
    flat = model.classifier[0](x)
    assert flat.shape == (2, 57600) and torch.equal(flat[:, :64], x[:, :, 0, 0])
    assert torch.equal(flat[:, 64], x[:, 0, 0, 1])


def test_binary_conv_uses_sign_of_weights_and_one_padding():
    conv = BinaryConv2d(2, 3, 3, padding=1, bias=False, binarize_input=True)
    x = torch.randn(1, 2, 5, 5)
    expected = F.conv2d(F.pad(torch.where(x >= 0, 1.0, -1.0), (1,) * 4, value=1.0),
                        torch.where(conv.weight >= 0, 1.0, -1.0))
    assert torch.equal(conv(x), expected)


def test_trainer_clips_latent_weights(tmp_path, sample_dir):
    recipe = load_recipe("cxr_bnn").replace(image_size=64, batch_size=8, epochs=1, lr=5.0, model_kwargs=SMALL)
    result = train(recipe, sample_dir, tmp_path / "run", progress=False, verbose=False, max_steps=2)
    weights = torch.cat([m.weight.detach().flatten() for m in _binary_layers(result.bundle.model)])
    assert weights.abs().max() <= 1.0
    assert (weights.abs() == 1.0).float().mean() > 0.5  # lr 5 pushes most of them to the clip


def test_stage_one_binarizes_activations_only():
    torch.manual_seed(0)
    real = create_model("cxr_bnn", binary_weights=False, **SMALL).eval()
    full = create_model("cxr_bnn", **SMALL).eval()
    full.load_state_dict(real.state_dict())  # same names and shapes: stage 1 starts stage 2
    conv = _binary_layers(real)[0]
    with torch.no_grad():
        conv.weight.mul_(20.0)
    before = conv.weight.detach().clone()
    conv.clip_latent_weights()
    assert torch.equal(conv.weight, before) and before.abs().max() > 1  # real weights are not clipped
    assert torch.equal(conv.binary_weight(), conv.weight)
    full.load_state_dict(real.state_dict())
    x = torch.randn(2, 1, 64, 64)
    assert not torch.allclose(real(x), full(x))
    with pytest.raises(ValueError, match="real"):
        export_packed(ModelBundle(real, "cxr_bnn", CLASSES, SMALL_PRE, 0.5, {"binary_weights": False, **SMALL}),
                      Path(os.devnull))


def test_two_stage_training_starts_stage_two_from_stage_one(tmp_path, sample_dir):
    base = dict(image_size=64, batch_size=8, epochs=1, teacher="", distill_weight=0.0)
    stage1 = load_recipe("cxr_bnn_stage1").replace(**base, model_kwargs={**SMALL, "binary_weights": False})
    r1 = train(stage1, sample_dir, tmp_path / "s1", progress=False, verbose=False, max_steps=2)
    stage2 = load_recipe("cxr_bnn_2stage").replace(**base, model_kwargs=SMALL)
    with pytest.raises(ValueError, match="--init-from"):
        train(stage2, sample_dir, tmp_path / "s2", progress=False, verbose=False, max_steps=2)
    seen = {}
    r2 = train(stage2.replace(init_from=str(r1.run_dir)), sample_dir, tmp_path / "s2b", progress=False,
               verbose=False, max_steps=1, on_epoch=lambda e, rec: seen.setdefault("epoch", e))
    assert r2.bundle.info["pretrained"] == f"initialised from {r1.run_dir}"
    s1, s2 = r1.bundle.model.state_dict(), r2.bundle.model.state_dict()
    # one step moves the latent weights a little; they started from stage 1's, clipped to [-1, 1]
    for key in (k for k in s1 if k.endswith("conv.weight")):
        assert (s2[key] - s1[key].clamp(-1, 1)).abs().max() < 0.05, key
    refused = {"need a trained cxr_bnn": stage2.replace(init_from="cxr_cnn"),
               # another seed carves other validation films, some of which stage 1 trained on
               "pass --seed 0": stage2.replace(init_from=str(r1.run_dir), seed=1),
               "weights do not fit": stage2.replace(init_from=str(r1.run_dir), model_kwargs={**SMALL, "depth": 2})}
    for i, (words, recipe) in enumerate(refused.items()):
        with pytest.raises(ValueError, match=words):
            train(recipe, sample_dir, tmp_path / f"refused{i}", progress=False, verbose=False, max_steps=1)
        assert not (tmp_path / f"refused{i}").exists(), f"{words}: a refused start left a run directory"
    renamed = tmp_path / "renamed"  # the same films under other class names
    for split in ("train", "test"):
        for cls, new in (("NORMAL", "healthy"), ("PNEUMONIA", "sick")):
            shutil.copytree(sample_dir / split / cls, renamed / split / new)
    with pytest.raises(ValueError, match="trained on classes"):
        train(stage2.replace(init_from=str(r1.run_dir)), renamed, tmp_path / "refused_classes", progress=False,
              verbose=False, max_steps=1)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = create_model("cxr_bnn", dropout=0.0, **SMALL).train()
    paths = [p for cls in CLASSES for p in sorted((SAMPLE / "train" / cls).glob("*.jpeg"))[:8]]
    imgs = torch.from_numpy(np.stack([resize_gray(read_image(p), 64) for p in paths]))
    x, y = to_model_input(imgs, SMALL_PRE), torch.tensor([CLASSES.index(p.parent.name) for p in paths])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        for m in _binary_layers(model):
            m.clip_latent_weights()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.7 * losses[0]


# ------------------------------------------------------------------ packing and the file


def test_pack_signs_round_trip_bit_exact():
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((5, 37)) < 0.5, -1.0, 1.0).astype(np.float32)
    packed = pack_signs(signs)
    assert packed.shape == (5, 5) and packed.dtype == np.uint8
    assert np.array_equal(unpack_signs(packed, 37), signs)
    assert np.array_equal(pack_signs(np.zeros((1, 8))), [[255]])  # zero is +1


@pytest.mark.parametrize("real_dtype", ["float32", "float16"])
def test_reals_stored_as_byte_planes_read_back_exactly_and_version_2_files_still_load(tmp_path, real_dtype):
    bundle = _bundle("cxr_bnn", SMALL_PRE, **SMALL)
    v3 = export_packed(bundle, tmp_path / "v3.npz", real_dtype=real_dtype)
    header, arrays = read_packed(v3)
    with np.load(v3, allow_pickle=False) as data:
        planes, itemsize = data["reals"], np.dtype(real_dtype).itemsize
    assert header["version"] == 3 and planes.dtype == np.uint8 and planes.shape[0] == itemsize
    # the same file in version 2's layout (reals as one flat array) must give the same tensors, bit for bit
    flat = np.ascontiguousarray(planes.T).view(real_dtype).ravel()
    v2 = _edited(v3, tmp_path / "v2.npz", lambda h: h.update(version=2))
    with np.load(v2, allow_pickle=False) as data:
        members = {name: data[name] for name in data.files}
    with v2.open("wb") as f:
        np.savez(f, **{**members, "reals": flat})
    _, old = read_packed(v2)
    assert arrays.keys() == old.keys()
    assert all(np.array_equal(arrays[k], old[k]) for k in arrays)
    reals = [k for k, v in header["tensors"].items() if v[0] == "reals"]
    assert reals and all(arrays[k].dtype == np.float32 for k in reals)


def test_popcount_fallback_matches_numpy():
    words = np.random.default_rng(0).integers(0, 2**63, (7, 5), dtype=np.uint64) | np.uint64(2**63)
    assert _popcount_table(words).tolist() == [[bin(int(v)).count("1") for v in row] for row in words]


@pytest.mark.parametrize("name, kwargs", [("seed_bnn", {}), ("cxr_bnn", {})])
def test_exported_bits_are_the_signs_of_the_latent_weights(tmp_path, name, kwargs):
    bundle = _bundle(name, model_info(name).preprocess, **kwargs)
    header, arrays = read_packed(export_packed(bundle, tmp_path / "m.npz"))
    ops = [op for op in header["ops"] if op.get("weight_bits")]
    layers = _binary_layers(bundle.model)
    assert len(ops) == len(layers)
    for op, m in zip(ops, layers):
        w = m.weight.detach()
        if w.dim() == 4:
            w = w.permute(0, 2, 3, 1)
        bits = unpack_signs(arrays[op["weight"]], op["kernel"] ** 2 * op["in"] if op["op"] == "conv" else op["in"])
        signs = torch.where(w >= 0, 1.0, -1.0).reshape(len(w), -1).numpy()
        assert np.array_equal(bits, signs)


def test_packed_files_are_small(tmp_path):
    path = export_packed(_bundle("cxr_bnn", model_info("cxr_bnn").preprocess), tmp_path / "cxr_bnn.npz")
    header, _ = read_packed(path)
    assert header["info"]["binary_fraction"] >= 0.95
    assert path.stat().st_size <= 256 * 1024
    assert 4 * header["info"]["params"] / path.stat().st_size >= 28  # float32 reals, weight scales folded
    path = export_packed(_bundle("seed_bnn", model_info("seed_bnn").preprocess), tmp_path / "seed_bnn.npz")
    header, _ = read_packed(path)
    assert 4 * header["info"]["params"] / path.stat().st_size >= 28


def test_the_deep_recipe_stays_in_the_issue_budget(tmp_path):
    """cxr_bnn_deep224 spends its extra blocks where bits are cheap: 14 binary blocks, still <= 256 KB packed."""
    recipe = load_recipe("cxr_bnn_deep224")
    pre = dataclasses.replace(model_info("cxr_bnn").preprocess, size=recipe.image_size)
    bundle = _bundle("cxr_bnn", pre, **recipe.model_kwargs)
    assert sum(isinstance(m, BinaryConv2d) for m in bundle.model.modules()) == 14
    path = export_packed(bundle, tmp_path / "deep.npz")
    header, _ = read_packed(path)
    assert header["info"]["binary_fraction"] >= 0.95
    assert path.stat().st_size <= 256 * 1024
    assert 4 * header["info"]["params"] / path.stat().st_size >= 28


def test_depth_needs_one_count_per_stage():
    with pytest.raises(ValueError, match="one per stage"):
        create_model("cxr_bnn", depth=[2, 2, 2])


def test_a_block_count_per_stage_survives_the_model_file(tmp_path):
    """The shipped cxr_bnn is rebuilt from the depth its file records, or its weights would not fit."""
    kwargs = {**SMALL, "depth": [2, 1, 3, 1]}
    bundle = _bundle("cxr_bnn", SMALL_PRE, **kwargs)
    loaded = load_bundle(save_bundle(bundle, tmp_path / "deep.safetensors"))
    assert len(loaded.model.blocks) == 7
    x = torch.rand(2, 1, SMALL_PRE.size, SMALL_PRE.size)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), bundle.model(x))


def test_float16_reals_stay_close(tmp_path):
    bundle = _bundle("cxr_bnn", SMALL_PRE, **SMALL)
    full = load_packed(export_packed(bundle, tmp_path / "full.npz"))
    half = load_packed(export_packed(bundle, tmp_path / "half.npz", real_dtype="float16"))
    arrays = _sample_arrays()
    assert np.abs(full.predict_proba(arrays) - half.predict_proba(arrays)).max() < 0.05


# ------------------------------------------------------------------ engine vs PyTorch


@pytest.mark.parametrize("name, pre, kwargs", [
    ("cxr_bnn", SMALL_PRE, SMALL),
    ("cxr_bnn", SMALL_PRE, {**SMALL, "binary": False}),  # the float twin: real convs, zero padding
    ("cxr_bnn", dataclasses.replace(SMALL_PRE, equalize=True), SMALL),  # films equalised in NumPy as in PyTorch
    ("cxr_bnn", dataclasses.replace(SMALL_PRE, clahe=2.0), SMALL),  # and locally equalised (CLAHE)
    ("cxr_bnn", Preprocess(size=96, channels=1, mean=0.5, std=0.25), {}),
    ("cxr_bnn", SMALL_PRE, {**SMALL, "depth": [2, 1, 3, 1]}),  # a block count per stage (cxr_bnn_deep224)
    ("seed_bnn", model_info("seed_bnn").preprocess, {"binarize_inputs": False}),
    ("seed_bnn", model_info("seed_bnn").preprocess, {}),
])
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_engine_matches_pytorch_on_every_sample_image(tmp_path, name, pre, kwargs, backend):
    if backend == "native" and not HAVE_CC:
        pytest.skip("no C compiler: the engine runs its NumPy path")
    bundle = _bundle(name, pre, **kwargs)
    packed = load_packed(export_packed(bundle, tmp_path / "m.npz"), backend=backend)
    assert packed.backend == backend
    arrays = _sample_arrays()
    x = to_model_input(torch.from_numpy(np.stack([resize_gray(a, pre.size) for a in arrays])), pre)
    with torch.no_grad():
        expected = bundle.model(x).numpy()
    got = packed.logits(x.contiguous().numpy())
    assert np.abs(got - expected).max() <= REL_TOL * max(1.0, np.abs(expected).max())
    probs, torch_probs = packed.predict_proba(arrays), predict_arrays(bundle, arrays)
    assert np.array_equal(probs[:, 1] >= 0.5, torch_probs[:, 1] >= 0.5)
    assert packed.predict(arrays[:2]) == [CLASSES[int(p >= 0.5)] for p in torch_probs[:2, 1]]
    resized = torch.from_numpy(np.stack([resize_gray(a, pre.size) for a in arrays]))
    assert np.allclose(predict_resized(packed, resized), probs, atol=1e-6)  # duck-types a bundle for the predictor


def test_native_kernels_equal_the_numpy_engine_to_the_bit():
    """xnor.c (whichever popcount this CPU compiles: AVX-512, AVX2 nibble lookup or scalar) sums the same integers
    and rounds as NumPy does: the shipped BNN's logits are bit-identical on both backends."""
    if not HAVE_CC:
        pytest.skip("no C compiler: the engine runs its NumPy path")
    shipped = Path(__file__).resolve().parents[1] / "src" / "cxrkit" / "weights" / "cxr_bnn.bnn.npz"
    x = np.random.default_rng(0).random((3, 1, 224, 224)).astype(np.float32)
    native, numpy_ = (load_packed(shipped, backend=b).logits(x) for b in ("native", "numpy"))
    assert np.array_equal(native, numpy_)


def test_native_kernel_is_the_one_this_cpu_has():
    """The -march=native build picks the binary loop by the CPU's popcount support, and says which one it runs."""
    if not HAVE_CC:
        pytest.skip("no C compiler: the engine runs its NumPy path")
    shipped = Path(__file__).resolve().parents[1] / "src" / "cxrkit" / "weights" / "cxr_bnn.bnn.npz"
    flags = cpu_flags()
    expected = ("AVX-512 VPOPCNTQ" if "avx512_vpopcntdq" in flags else "AVX2 nibble lookup" if "avx2" in flags
                else "scalar popcount")
    assert load_packed(shipped, backend="native").kernel == expected
    assert load_packed(shipped, backend="numpy").kernel == "NumPy bitwise_count"


def test_native_kernels_build_from_scratch_where_a_c_compiler_exists(tmp_path):
    """The C path must build in a fresh environment (empty cache), and CXRKIT_BNN_NATIVE=0 must turn it off."""
    if not HAVE_CC:
        pytest.skip("no C compiler")
    code = "import cxrkit.bnn._native as n; print(n.kernels() is not None)"
    env = {**os.environ, "CXRKIT_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "True" and list((tmp_path / "bnn").glob("xnor-*.so"))
    out = subprocess.run([sys.executable, "-c", code], env={**env, "CXRKIT_BNN_NATIVE": "0"}, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("name, pre, kwargs", [
    ("cxr_bnn", SMALL_PRE, {**SMALL, "widths": (8, 16, 80, 160)}),  # 80, 160: part-filled blocks and words
    ("seed_bnn", model_info("seed_bnn").preprocess, {"binarize_inputs": False}),  # real stem + ReLU + pool fused
    ("seed_bnn", model_info("seed_bnn").preprocess, {}),  # binary conv + pool fused, odd width (61 → 30)
])
def test_native_and_numpy_paths_agree_on_any_thread_count(tmp_path, name, pre, kwargs):
    """The same integer XNOR sums, float sums in the same order and the same rounding steps: equal logits."""
    path = export_packed(_bundle(name, pre, **kwargs), tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((5, pre.channels, pre.size, pre.size)).astype(np.float32)
    ref = load_packed(path, backend="numpy").logits(x)
    for threads in (1, 2, 3):
        assert np.array_equal(load_packed(path, backend="native", threads=threads).logits(x), ref), threads


def test_engine_runs_without_torch(tmp_path):
    path = export_packed(_bundle("cxr_bnn", SMALL_PRE, **SMALL), tmp_path / "m.npz")
    code = ("import sys, numpy as np, cxrkit.bnn as b; m = b.load_packed(sys.argv[1]); "
            "p = m.predict_proba([np.zeros((80, 70), np.uint8)]); "
            "assert p.shape == (1, 2) and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)


def test_export_rejects_a_float_model(tmp_path):
    bundle = ModelBundle(create_model("cxr_cnn").eval(), "cxr_cnn", CLASSES, Preprocess(size=64))
    with pytest.raises(ValueError, match="cannot pack"):
        export_packed(bundle, tmp_path / "m.npz")


def test_export_rejects_a_channel_first_flatten(tmp_path):
    model = create_model("seed_bnn").eval()
    model.classifier[0] = torch.nn.Flatten()  # (C, H, W) order: not what the NHWC engine computes
    with pytest.raises(ValueError, match="FlattenHWC"):
        export_packed(ModelBundle(model, "seed_bnn", CLASSES, model_info("seed_bnn").preprocess), tmp_path / "m.npz")


# ------------------------------------------------------------------ bad files


def _edited(src, dst, edit):
    """Copy of ``src`` whose header JSON went through ``edit(header)``; the blobs are unchanged."""
    with np.load(src, allow_pickle=False) as data:
        members = {name: data[name] for name in data.files}
    header = json.loads(members.pop("__header__").tobytes())
    edit(header)
    with dst.open("wb") as f:
        np.savez(f, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **members)
    return dst


def _drop_first_bits(header):
    del header["tensors"][next(k for k, v in header["tensors"].items() if v[0] == "bits")]


def _overrun(header):
    name = next(iter(header["tensors"]))
    header["tensors"][name][1] = 10**9


def test_corrupt_and_wrong_version_files_give_one_line_errors(tmp_path):
    good = export_packed(_bundle("cxr_bnn", SMALL_PRE, **SMALL), tmp_path / "good.npz")
    data = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "text.npz").write_text("hello\n")  # np.load would read it as a pickle and advise "unsafely"
    with (tmp_path / "plain.npz").open("wb") as f:
        np.savez(f, weights=np.zeros(3))
    np.savez_compressed(tmp_path / "bomb.npz", bits=np.zeros(80 * 2**20, np.uint8))  # ~80 KB on disk, 80 MiB inside
    cases = {
        "zip bomb": (tmp_path / "bomb.npz", "would unpack to 80 MiB"),
        "missing": (tmp_path / "nope.npz", "no such"),
        "truncated": (tmp_path / "trunc.npz", "not a packed BNN file"),
        "garbage": (tmp_path / "garbage.npz", "not a packed BNN file"),
        "text": (tmp_path / "text.npz", r"not a packed BNN file \(not an \.npz archive\)$"),
        "no header": (tmp_path / "plain.npz", "header"),
        "version": (_edited(good, tmp_path / "v99.npz", lambda h: h.update(version=99)),
                    "version 99 is not supported"),
        "missing tensor": (_edited(good, tmp_path / "hole.npz", _drop_first_bits), "missing"),
        "bad offset": (_edited(good, tmp_path / "overrun.npz", _overrun), "outside the"),
        "bad op": (_edited(good, tmp_path / "op.npz", lambda h: h["ops"].append({"op": "softplus"})),
                   "unknown op"),
    }
    for label, (path, message) in cases.items():
        with pytest.raises(PackedFormatError, match=message) as info:
            load_packed(path)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value), label


def test_packed_model_carries_and_applies_calibration(tmp_path):
    bundle = _bundle("cxr_bnn", SMALL_PRE, **SMALL)
    arrays = _sample_arrays()
    resized = torch.from_numpy(np.stack([resize_gray(a, SMALL_PRE.size) for a in arrays]))
    plain = predict_resized(bundle, resized)
    bundle.temperature = 3.0
    calibrated = predict_resized(bundle, resized)
    bundle.confidence_threshold = float(np.median(calibrated.max(axis=1)))
    packed = load_packed(export_packed(bundle, tmp_path / "m.npz"))
    assert (packed.temperature, packed.confidence_threshold) == (3.0, bundle.confidence_threshold)
    got = predict_resized(packed, resized)
    assert np.allclose(got, calibrated, atol=1e-3) and not np.allclose(got, plain, atol=1e-3)
    assert np.array_equal(uncertain_mask(packed, got), uncertain_mask(bundle, calibrated))
