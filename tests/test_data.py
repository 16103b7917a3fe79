"""Data layer: patient ids, folder indexing, grouped splits, image decoding (JPEG/PNG/DICOM), cache, augmentation."""
from __future__ import annotations

import dataclasses
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import copy_images, sample_images
from serve_support import dicom_bytes
from cxrkit.data.augment import Augment, augment_batch, gaussian_blur_each
from cxrkit.data.cache import decode_samples
from cxrkit.data.folder import DatasetError, Sample, index_folder
from cxrkit.data.io import ImageReadError, read_image
from cxrkit.data.patients import patient_id, pneumonia_subtype
from cxrkit.data.preprocess import Preprocess, clahe_levels, equalized_levels, resize_gray, to_model_input
from cxrkit.data.splits import grouped_split

# ------------------------------------------------------------------ patient ids


@pytest.mark.parametrize("name, patient, subtype", [
    ("person1_bacteria_1.jpeg", "person1", "bacteria"),
    ("person1159_virus_1944.jpeg", "person1159", "virus"),
    ("IM-0115-0001.jpeg", "IM-0115", None),
    ("IM-0001-0001-0002.jpeg", "IM-0001", None),
    ("NORMAL2-IM-0587-0001-0001.jpeg", "NORMAL2-IM-0587", None),
    ("chest_scan_42.png", None, None),
])
def test_patient_id_and_subtype(name, patient, subtype):
    assert patient_id(name) == patient
    assert patient_id(Path("some/dir") / name) == patient  # only the file name counts
    assert pneumonia_subtype(name) == subtype


def test_same_child_bacterial_and_viral_films_share_a_patient():
    assert patient_id("person12_bacteria_3.jpeg") == patient_id("person12_virus_40.jpeg")
    assert patient_id("person12_bacteria_3.jpeg") != patient_id("person120_bacteria_3.jpeg")


# ------------------------------------------------------------------ index_folder


def test_index_folder_split_layout(tmp_path):
    root = tmp_path / "data"
    copy_images(root / "train" / "NORMAL", "train", "NORMAL", 3)
    copy_images(root / "train" / "PNEUMONIA", "train", "PNEUMONIA", 2)
    copy_images(root / "test" / "NORMAL", "test", "NORMAL", 1)
    copy_images(root / "test" / "PNEUMONIA", "test", "PNEUMONIA", 2)
    (root / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    (root / "train" / "PNEUMONIA" / "labels.csv").write_text("a,b\n")
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\0")

    index = index_folder(root)
    assert index.classes == ("NORMAL", "PNEUMONIA")
    assert index.has_splits
    assert index.splits == ["train", "test"]
    assert len(index.split("train")) == 5 and len(index.split("test")) == 3
    assert sorted(p.name for p in index.skipped) == ["labels.csv", "notes.txt"]
    for s in index.samples:
        assert index.classes[s.label] == s.path.parent.name
        assert s.split == s.path.parent.parent.name
        assert s.patient == patient_id(s.path)
    assert all(s.path.suffix == ".jpeg" for s in index.samples)


def test_index_folder_flat_layout_classes_sorted(tmp_path):
    root = tmp_path / "flat"
    # created out of order: label ids must follow sorted names, not creation order
    copy_images(root / "PNEUMONIA", "train", "PNEUMONIA", 2)
    copy_images(root / "NORMAL", "train", "NORMAL", 2)
    copy_images(root / "COVID", "test", "NORMAL", 1)
    index = index_folder(root)
    assert index.classes == ("COVID", "NORMAL", "PNEUMONIA")
    assert not index.has_splits and index.splits == [None]
    assert len(index.samples) == 5
    assert {s.split for s in index.samples} == {None}
    for s in index.samples:
        assert index.classes[s.label] == s.path.parent.name


def test_index_folder_fixed_class_order_and_foreign_class(tmp_path):
    root = tmp_path / "flat"
    copy_images(root / "NORMAL", "train", "NORMAL", 1)
    copy_images(root / "PNEUMONIA", "train", "PNEUMONIA", 1)
    index = index_folder(root, classes=("PNEUMONIA", "NORMAL"))
    assert index.classes == ("PNEUMONIA", "NORMAL")
    for s in index.samples:
        assert index.classes[s.label] == s.path.parent.name
    with pytest.raises(DatasetError, match="folders PNEUMONIA are not among the expected classes"):
        index_folder(root, classes=("NORMAL",))
    for i in range(7):  # a wrong folder (a home directory, say) is named by its first few entries, not all of them
        (root / f"other{i}" / "x.png").parent.mkdir()
    with pytest.raises(DatasetError, match=r"folders PNEUMONIA, other0, other1, other2, other3 and 3 more are") as err:
        index_folder(root, classes=("NORMAL",))
    assert "other6" not in str(err.value)


def test_patient_falls_back_to_file_stem(tmp_path):
    root = tmp_path / "d"
    src = sample_images("train", "NORMAL")[0]
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    shutil.copy(src, root / "A" / "scan_7.jpeg")
    shutil.copy(src, root / "B" / "scan_8.png")
    index = index_folder(root)
    assert sorted(s.patient for s in index.samples) == ["scan_7", "scan_8"]


def test_index_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        index_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        index_folder(empty)
    a_file = tmp_path / "file.jpeg"
    shutil.copy(sample_images("train", "NORMAL")[0], a_file)
    with pytest.raises(DatasetError, match="not a folder"):
        index_folder(a_file)
    no_images = tmp_path / "noimg"
    (no_images / "NORMAL").mkdir(parents=True)
    (no_images / "NORMAL" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="no JPEG"):
        index_folder(no_images)


def test_dataset_error_messages_are_one_line(tmp_path):
    for bad in (tmp_path / "missing", tmp_path):
        with pytest.raises(DatasetError) as info:
            index_folder(bad)
        assert "\n" not in str(info.value) and str(bad) in str(info.value)


# ------------------------------------------------------------------ grouped_split


def _multi_image_samples(n_per_class=20, images_per_patient=3) -> list[Sample]:
    samples = []
    for label, prefix in enumerate(("IM", "person")):
        for p in range(n_per_class):
            for i in range(images_per_patient + p % 2):  # 3 or 4 films per child
                name = f"IM-{p:04d}-{i:04d}.jpeg" if label == 0 else f"person{p}_bacteria_{i}.jpeg"
                path = Path("/data/train") / ("NORMAL", "PNEUMONIA")[label] / name
                samples.append(Sample(path, label, "train", patient_id(path)))
    return samples


def test_grouped_split_keeps_patients_together_and_stratifies():
    samples = _multi_image_samples()
    assert len({s.patient for s in samples}) == 40
    train, val = grouped_split(samples, 0.2, seed=3)
    assert len(train) + len(val) == len(samples)
    assert set(map(id, train)).isdisjoint(map(id, val))
    assert {s.patient for s in train}.isdisjoint({s.patient for s in val})
    assert {s.label for s in val} == {0, 1}
    assert {s.label for s in train} == {0, 1}
    assert 0.1 < len(val) / len(samples) < 0.3


def test_grouped_split_deterministic_per_seed():
    samples = _multi_image_samples()
    a = grouped_split(samples, 0.2, seed=11)
    b = grouped_split(samples, 0.2, seed=11)
    assert [s.path for s in a[1]] == [s.path for s in b[1]]
    assert [s.path for s in a[0]] == [s.path for s in b[0]]
    vals = {tuple(sorted(str(s.path) for s in grouped_split(samples, 0.2, seed=k)[1])) for k in range(5)}
    assert len(vals) > 1, "the seed has no effect on the split"


def test_grouped_split_rejects_bad_fraction():
    with pytest.raises(ValueError):
        grouped_split(_multi_image_samples(), 0.0, seed=0)
    with pytest.raises(ValueError):
        grouped_split(_multi_image_samples(), 0.6, seed=0)


# ------------------------------------------------------------------ read_image: rasters


def test_read_real_jpeg_path_and_bytes():
    path = sample_images("test", "NORMAL")[0]
    arr = read_image(path)
    assert arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape == (224, 224)
    assert arr.std() > 10  # a radiograph, not a flat image
    np.testing.assert_array_equal(read_image(path.read_bytes()), arr)


def test_read_png_8bit_and_rgb(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)
    rgb = np.stack([gray] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == gray.shape
    assert np.abs(out.astype(int) - gray).max() <= 1


def test_read_png_16bit_is_rescaled_to_8bit(tmp_path):
    arr16 = np.tile(np.linspace(1000, 40000, 64).astype(np.uint16), (8, 1))
    Image.fromarray(arr16).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode.startswith("I")
    out = read_image(tmp_path / "x16.png")
    assert out.dtype == np.uint8 and out.shape == (8, 64)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0) and np.diff(out[0].astype(int)).sum() == 255


def _assert_one_line_error(exc_info, name_part: str):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    assert name_part in msg


def test_text_file_named_jpeg(tmp_path):
    bad = tmp_path / "fake.jpeg"
    bad.write_text("this is not an image\nsecond line\n")
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    _assert_one_line_error(info, "fake.jpeg")


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jpeg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty") as info:
        read_image(empty)
    _assert_one_line_error(info, "empty.jpeg")
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_truncated_jpeg(tmp_path):
    data = sample_images("test", "PNEUMONIA")[0].read_bytes()
    cut = tmp_path / "cut.jpeg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(cut)
    _assert_one_line_error(info, "cut.jpeg")
    with pytest.raises(ImageReadError):
        read_image(data[: len(data) // 2], name="upload.jpeg")


# ------------------------------------------------------------------ read_image: DICOM


GRADIENT = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (24, 1))


def test_dicom_monochrome2_gradient(tmp_path):
    path = tmp_path / "no_suffix_export"  # DICOM is recognised by content, not name
    path.write_bytes(dicom_bytes(GRADIENT))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == GRADIENT.shape
    row = out[0].astype(int)
    assert np.all(np.diff(row) > 0), "increasing stored values must give increasing brightness"
    assert row[0] == 0 and row[-1] == 255
    assert np.all(out == out[0])  # every row identical


def test_dicom_monochrome1_is_inverted():
    m2 = read_image(dicom_bytes(GRADIENT, "MONOCHROME2"))
    m1 = read_image(dicom_bytes(GRADIENT, "MONOCHROME1"))
    np.testing.assert_array_equal(m1, 255 - m2)
    assert np.all(np.diff(m1[0].astype(int)) < 0)


def test_dicom_window_is_applied():
    center, width = 2000.0, 1000.0
    out = read_image(dicom_bytes(GRADIENT, window=(center, width)))[0].astype(int)
    values = GRADIENT[0].astype(float)
    below, above = values < center - width / 2 - 1, values > center + width / 2
    inside = ~below & ~above
    assert below.any() and above.any() and inside.sum() > 3
    assert np.all(out[below] == 0)
    assert np.all(out[above] == 255)
    assert np.all(np.diff(out[inside]) > 0)
    # the window stretches contrast: far more grey levels per stored unit than without it
    plain = read_image(dicom_bytes(GRADIENT))[0].astype(int)
    assert np.ptp(out[inside]) > 2 * np.ptp(plain[inside])


def test_dicom_without_pixel_data():
    with pytest.raises(ImageReadError, match="(?i)pixel data") as info:
        read_image(dicom_bytes(None), name="nopix.dcm")
    _assert_one_line_error(info, "nopix.dcm")


@pytest.mark.parametrize("photometric, spp", [("YBR_FULL", 3), ("PALETTE COLOR", 1)])
def test_dicom_unsupported_photometric(photometric, spp):
    pixels = np.stack([GRADIENT] * 3, axis=-1) if spp == 3 else GRADIENT
    with pytest.raises(ImageReadError, match=photometric) as info:
        read_image(dicom_bytes(pixels, photometric, spp), name="color.dcm")
    _assert_one_line_error(info, "color.dcm")


# ------------------------------------------------------------------ decode cache


def test_decode_samples_skips_unreadable_and_fingerprints(tmp_path):
    root = tmp_path / "d"
    good = copy_images(root / "NORMAL", "train", "NORMAL", 2) + copy_images(root / "PNEUMONIA", "train",
                                                                             "PNEUMONIA", 2)
    bad = root / "PNEUMONIA" / "broken.jpeg"
    bad.write_text("garbage")
    index = index_folder(root)
    assert len(index.samples) == 5
    ds = decode_samples(index.samples, 32, root=root, progress=False, workers=2)
    assert ds.images.shape == (4, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [s.label for s in ds.samples]
    assert sorted(s.path for s in ds.samples) == sorted(good)
    assert len(ds.failures) == 1 and "broken.jpeg" in ds.failures[0]

    again = decode_samples(index.samples, 32, root=root, progress=False, workers=2)
    assert again.fingerprint == ds.fingerprint
    assert torch.equal(again.images, ds.images)

    target = good[0]
    target.write_bytes(sample_images("test", "NORMAL")[0].read_bytes())  # same name, other pixels
    changed = decode_samples(index.samples, 32, root=root, progress=False, workers=2)
    assert changed.fingerprint != ds.fingerprint
    assert not torch.equal(changed.images, ds.images)


def test_decode_samples_fingerprint_ignores_location_but_not_labels(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        copy_images(root / "NORMAL", "train", "NORMAL", 2)
        copy_images(root / "PNEUMONIA", "train", "PNEUMONIA", 2)
    fa = decode_samples(index_folder(a).samples, 16, root=a, progress=False).fingerprint
    fb = decode_samples(index_folder(b).samples, 16, root=b, progress=False).fingerprint
    assert fa == fb  # relative paths: the same data copied elsewhere is the same data
    swapped = index_folder(a, classes=("PNEUMONIA", "NORMAL")).samples
    assert decode_samples(swapped, 16, root=a, progress=False).fingerprint != fa


# ------------------------------------------------------------------ augmentation and resizing


def _batch() -> torch.Tensor:
    imgs = [read_image(p) for p in sample_images("train", "PNEUMONIA")[:4]]
    return torch.from_numpy(np.stack([resize_gray(a, 64) for a in imgs])).unsqueeze(1).float() / 255.0


def test_augment_batch_shape_range_and_determinism():
    x = _batch()
    aug = Augment(rotation=10, zoom=0.15, shift=0.08, hflip=True, brightness=0.2, contrast=0.2)
    out1 = augment_batch(x, aug, torch.Generator().manual_seed(5))
    out2 = augment_batch(x, aug, torch.Generator().manual_seed(5))
    out3 = augment_batch(x, aug, torch.Generator().manual_seed(6))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert float(out1.min()) >= 0.0 and float(out1.max()) <= 1.0
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, out3)
    assert not torch.equal(out1, x)
    # each image drawn independently: no two images moved identically
    assert not torch.allclose(out1[0] - x[0], out1[1] - x[1])
    assert torch.equal(x, _batch()), "the input batch must not be modified in place"


def test_augment_disabled_is_identity():
    x = _batch()
    assert not Augment().enabled
    assert torch.equal(augment_batch(x, Augment(), torch.Generator().manual_seed(0)), x)


def test_acquisition_augment_stays_in_range_and_keeps_the_earlier_draws():
    x = _batch()
    base = Augment(rotation=10, brightness=0.2)
    acq = dataclasses.replace(base, gamma=0.4, sharpness=1.0, noise=0.05)
    plain = augment_batch(x, base, torch.Generator().manual_seed(3))
    out = augment_batch(x, acq, torch.Generator().manual_seed(3))
    assert torch.equal(out, augment_batch(x, acq, torch.Generator().manual_seed(3)))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 and not torch.allclose(out, plain, atol=1e-3)
    # gamma alone keeps every image's pixel order; blurring or sharpening leaves a flat image flat
    g = augment_batch(x, Augment(gamma=0.5), torch.Generator().manual_seed(0))
    assert not torch.allclose(g, x) and torch.equal(g[0].flatten().argsort(stable=True),
                                                    x[0].flatten().argsort(stable=True))
    flat = torch.full((3, 1, 16, 16), 0.25)
    assert torch.allclose(augment_batch(flat, Augment(sharpness=2.0), torch.Generator().manual_seed(0)), flat)


def test_blur_augment_draws_a_sigma_per_film_and_matches_torchvision_at_the_top():
    from torchvision.transforms.v2.functional import gaussian_blur

    x = _batch()
    at_top = gaussian_blur_each(x, torch.full((x.shape[0],), 2.0), 2.0)
    assert torch.allclose(at_top, gaussian_blur(x, [13, 13], [2.0, 2.0]), atol=1e-5)
    assert torch.allclose(gaussian_blur_each(x, torch.zeros(x.shape[0]), 2.0), x, atol=1e-6)
    out = augment_batch(x, Augment(blur=2.0), torch.Generator().manual_seed(0))
    assert torch.equal(out, augment_batch(x, Augment(blur=2.0), torch.Generator().manual_seed(0)))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # a blur keeps each film's mean and takes from its fine detail, by a different amount for each film
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02)
    detail = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(1, 2, 3)) / (x[..., 1:] - x[..., :-1]).abs().mean(
        dim=(1, 2, 3))
    assert bool((detail < 1.0).all()) and float(detail.max() - detail.min()) > 0.05
    flat = torch.full((3, 1, 16, 16), 0.25)
    assert torch.allclose(augment_batch(flat, Augment(blur=2.0), torch.Generator().manual_seed(0)), flat)


def test_haze_augment_veils_each_film_by_its_own_amount():
    x = _batch()
    out = augment_batch(x, Augment(haze=0.6), torch.Generator().manual_seed(0))
    assert torch.equal(out, augment_batch(x, Augment(haze=0.6), torch.Generator().manual_seed(0)))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # the veil keeps each film's mean, takes coarse contrast by a different amount for each film, never all of it
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02)
    spread = out.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert bool((spread < 1.0).all()) and bool((spread > 0.3).all()) and float(spread.max() - spread.min()) > 0.05
    flat = torch.full((3, 1, 64, 64), 0.25)
    assert torch.allclose(augment_batch(flat, Augment(haze=0.6), torch.Generator().manual_seed(0)), flat)
    small = x[..., ::4, ::4]  # 16 px, under the veil's +-48 px kernel: the widest kernel the image can reflect
    out = augment_batch(small, Augment(haze=0.6), torch.Generator().manual_seed(0))
    assert out.shape == small.shape and float(out.std()) < float(small.std())


def test_spectrum_mix_trades_each_films_texture_with_another_films():
    sharp = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2  # fine detail
    soft = torch.nn.functional.avg_pool2d(sharp, 9, stride=1, padding=4, count_include_pad=False)  # the same, hazy
    x = torch.cat([sharp, soft])
    out = augment_batch(x, Augment(spectrum_mix=1.0), torch.Generator().manual_seed(3))
    assert torch.equal(out, augment_batch(x, Augment(spectrum_mix=1.0), torch.Generator().manual_seed(3)))
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    def detail(t):
        return (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))

    # the sharp films lend texture to the hazy ones they were paired with, and take haze in return
    assert float(detail(out[:4]).mean()) < float(detail(sharp).mean())
    assert float(detail(out[4:]).mean()) > float(detail(soft).mean())
    # the phase is kept: a film stays closer to itself than to any other film of the batch
    distance = torch.cdist(out.flatten(1), x.flatten(1))
    assert torch.equal(distance[:4, :4].argmin(dim=1), torch.arange(4))
    same = sharp[:1].expand(3, -1, -1, -1)  # films of one amplitude spectrum are left as they are
    assert torch.allclose(augment_batch(same, Augment(spectrum_mix=0.8), torch.Generator().manual_seed(0)), same,
                          atol=1e-5)


def test_mixup_blends_each_film_with_a_partner_by_one_beta_draw():
    from scipy import stats

    from cxrkit.data.augment import mix_pairs

    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out, partner, lam = mix_pairs(x, 0.4, torch.Generator().manual_seed(5))
    assert sorted(partner.tolist()) == list(range(8)) and 0.0 <= lam <= 1.0
    assert torch.allclose(out, lam * x + (1 - lam) * x[partner])
    again = mix_pairs(x, 0.4, torch.Generator().manual_seed(5))  # one generator, one draw: resumable
    assert torch.equal(again[0], out) and torch.equal(again[1], partner) and again[2] == lam
    # the weights follow Beta(alpha, alpha): mostly near 0 or 1 for a small alpha, spread for alpha 1
    gen = torch.Generator().manual_seed(1)
    for alpha in (0.2, 1.0):
        draws = [mix_pairs(x[:2], alpha, gen)[2] for _ in range(400)]
        assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 0.01, alpha


def test_geometric_only_augment_stays_in_range():
    x = _batch()
    out = augment_batch(x, Augment(rotation=30, zoom=0.3, shift=0.2), torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6


def test_aspect_augment_stretches_one_way_and_keeps_area():
    square = torch.zeros(8, 1, 96, 96)
    square[:, :, 32:64, 32:64] = 1.0
    out = augment_batch(square, Augment(aspect=0.6), torch.Generator().manual_seed(0))
    widths = (out[:, 0].amax(dim=1) > 0.5).sum(dim=1).float()  # columns the square covers
    heights = (out[:, 0].amax(dim=2) > 0.5).sum(dim=1).float()
    ratios = widths / heights
    assert float(ratios.min()) < 0.9 and float(ratios.max()) > 1.1  # both ways, per image
    assert float(ratios.min()) > math.exp(-0.6) * 0.85 and float(ratios.max()) < math.exp(0.6) * 1.15
    assert torch.allclose(widths * heights, torch.full_like(widths, 32.0 * 32.0), rtol=0.12)


def test_resize_gray_pad_keeps_aspect():
    wide = np.full((100, 200), 255, dtype=np.uint8)
    out = resize_gray(wide, 64, "pad")
    assert out.shape == (64, 64) and out.dtype == np.uint8
    assert np.all(out[:14] == 0) and np.all(out[-14:] == 0), "black bars top and bottom"
    assert np.all(out[20:44] == 255), "the image band is untouched white"
    assert np.all(out[:, 0][20:44] == 255) and np.all(out[:, -1][20:44] == 255), "no bars left/right"
    squashed = resize_gray(wide, 64, "squash")
    assert squashed.shape == (64, 64) and np.all(squashed == 255)


def test_resize_gray_pad_tall_image_bars_left_right():
    tall = np.full((200, 50), 200, dtype=np.uint8)
    out = resize_gray(tall, 40, "pad")
    assert out.shape == (40, 40)
    assert np.all(out[:, :12] == 0) and np.all(out[:, -12:] == 0)
    assert np.all(out[:, 17:23] == 200)


def test_equalization_removes_monotone_exposure_differences():
    """Equalised, a film and its brighter / higher-contrast copies are the same input (the point of the option)."""
    film = resize_gray(read_image(sample_images("train", "NORMAL")[0]), 64) // 2  # grey levels 0..127
    pre = Preprocess(size=64, mean=0.5, std=0.25, equalize=True)
    plain = to_model_input(torch.from_numpy(film[None]), pre)
    for exposed in (film * 2, film + 100):  # contrast doubled, brightness raised: strictly increasing maps
        assert torch.equal(to_model_input(torch.from_numpy(exposed.astype(np.uint8)[None]), pre), plain)
    unequalized = Preprocess(size=64, mean=0.5, std=0.25)
    assert not torch.equal(to_model_input(torch.from_numpy(film[None] * 2), unequalized),
                           to_model_input(torch.from_numpy(film[None]), unequalized))
    # augmented films arrive as float (B, 1, H, W) in [0, 1]: equalised on the same 256 grey levels
    as_float = torch.from_numpy(film[None, None]).float() / 255.0
    assert torch.equal(to_model_input(as_float, pre), plain)
    levels = equalized_levels(film[None])
    assert levels.max() == 1.0 and levels.min() > 0 and levels.dtype == np.float32


def test_clahe_evens_out_local_contrast_that_global_equalisation_keeps():
    """One film, one grey ramp, its left half's texture at a third of the right's: global equalisation is one
    monotone map for both halves and keeps the left flat; CLAHE equalises each tile on its own and lifts it."""
    from scipy.ndimage import gaussian_filter

    rows, cols = np.mgrid[0:160, 0:160]
    texture = gaussian_filter(np.random.default_rng(0).normal(size=(160, 160)), 1.5)
    film = (60 + 120 * rows / 160 + np.where(cols < 80, 6.0, 18.0) * texture / texture.std())
    film = film.clip(0, 255).astype(np.uint8)[None]

    def left_over_right(x):  # fine detail of the left half over the right half's
        detail = x[0] - gaussian_filter(x[0].astype(np.float32), 4)
        return detail[:, 10:70].std() / detail[:, 90:150].std()

    assert left_over_right(clahe_levels(film, 4.0)) > left_over_right(equalized_levels(film)) + 0.05
    out = clahe_levels(film, 2.0)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    # the float path of augmented films quantises to the same 256 levels first
    pre = Preprocess(size=160, mean=0.5, std=0.25, clahe=2.0)
    as_float = torch.from_numpy(film[:, None]).float() / 255.0
    assert torch.equal(to_model_input(as_float, pre), to_model_input(torch.from_numpy(film), pre))


@pytest.mark.parametrize("kwargs, words", [({"clahe": 2.0, "equalize": True}, "choose one"),
                                           ({"clahe": -1.0}, "clip limit"), ({"clahe": True}, "clip limit")])
def test_clahe_settings_are_checked(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Preprocess(size=64, **kwargs)


@pytest.mark.parametrize("clip", [0.0, 0.5, 2.0, 4.0, 40.0])
def test_clahe_twins_are_opencvs_to_the_bit(clip):
    """cxrkit's CLAHE (NumPy for the runtimes, PyTorch for training and ONNX graphs) must give OpenCV's grey levels:
    on real films at each recipe size, on noise, on flat and few-level films (where the clip's remainder is spread)
    and on non-square ones."""
    import cv2

    from cxrkit.data.preprocess import _clahe_levels_torch

    rng = np.random.default_rng(int(clip * 10))
    paths = sample_images("test", "NORMAL")[:3] + sample_images("test", "PNEUMONIA")[:3]
    cases = [np.stack([resize_gray(read_image(p), size) for p in paths]) for size in (224, 160, 128, 32)]
    cases += [rng.integers(0, 256, (3, 64, 64), dtype=np.uint8), np.full((1, 64, 64), 77, np.uint8),
              (cases[0] // 40) * 40, np.ascontiguousarray(cases[0][:, :96, :])]
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8))
    for levels in cases:
        reference = np.stack([op.apply(np.ascontiguousarray(f)) for f in levels]).astype(np.float32) / np.float32(255)
        assert np.array_equal(clahe_levels(levels, clip), reference), levels.shape
        assert np.array_equal(_clahe_levels_torch(torch.from_numpy(levels).long(), clip).numpy(), reference)


def test_clahe_needs_a_size_its_tiles_divide():
    """OpenCV pads other sizes, the NumPy twin does not: such a model is refused when made, not at its first film."""
    from cxrkit.recipes import RecipeError, load_recipe

    assert Preprocess(size=224, clahe=2.0).clahe == 2.0
    with pytest.raises(ValueError, match="divisible by 8"):
        Preprocess(size=299, clahe=2.0)
    with pytest.raises(RecipeError, match="divisible by 8.*got 100"):
        load_recipe("cxr_cnn_fast160_clahe").replace(size_schedule=[[2, 100]])
