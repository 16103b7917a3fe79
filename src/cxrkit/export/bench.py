"""Size, memory, latency, throughput and accuracy of one model in several deployment formats.

Laid out like seed 003's int8-vs-float32 table, measured on this machine:
every format is exported from the same bundle, timed on the same real images
with the same thread counts, and scored on the same test folder, so the
ratios against the first format are like for like.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.cache import decode_samples
from ..data.folder import DatasetError, index_folder
from ..data.preprocess import to_model_array
from ..evaluation.metrics import evaluate_probabilities
from ..inference.bundle import ModelBundle
from ..runtime.onnx_model import OnnxModel, load_onnx
from .api import DEFAULT_N_CALIB, export_model
from .calibration import check_images
from .footprint import activation_peak_bytes
from .result import ExportError

EXPORT_OF = {"float32": "onnx", "int8": "onnx-int8", "int8-dense": "onnx-int8-dense", "bnn": "bnn-packed"}
FILE_OF = {"float32": "model.onnx", "int8": "model.int8.onnx", "int8-dense": "model.int8dense.onnx",
           "bnn": "model.bnn.npz"}
BYTES_PER_ACTIVATION = {"float32": 4, "int8": 1, "int8-dense": 4}
WARMUP = 10


def _open(fmt: str, path: Path, threads: int):
    if fmt == "bnn":
        from ..bnn import load_packed

        return load_packed(path, threads=threads)
    return load_onnx(path, threads=threads)


def _probabilities(model, images: np.ndarray) -> np.ndarray:
    return model.predict_resized(images) if isinstance(model, OnnxModel) else model.predict_proba(images)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fresh_process_rss(path: Path, threads: int) -> dict:
    """Run :mod:`cxrkit.runtime.probe` in a new interpreter; its peak RSS is this format's alone."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-m", "cxrkit.runtime.probe", str(path), str(threads)],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"memory probe failed on {path.name}: {last}")
    return json.loads(proc.stdout)


def _latency_ms(model, x: np.ndarray, runs: int, max_seconds: float) -> list[float]:
    for _ in range(WARMUP):
        model.logits(x)
    times = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < runs and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        model.logits(x)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _timings(fmt: str, path: Path, images: np.ndarray, threads: tuple[int, ...], runs: int, batch: int,
             max_seconds: float) -> dict:
    out = {}
    for n in threads:
        model = _open(fmt, path, n)
        pre = model.preprocess
        one = to_model_array(images[:1], pre)
        many = to_model_array(np.resize(images, (batch, *images.shape[1:])), pre)
        ms = _latency_ms(model, one, runs, max_seconds)
        batch_ms = _latency_ms(model, many, max(3, runs // 20), max_seconds)
        out[str(n)] = {"latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
                       "latency_runs": len(ms), "throughput_img_s": float(batch * 1000 / np.median(batch_ms))}
    return out


def _test_set(data_dir: Path, bundle: ModelBundle) -> tuple[np.ndarray, np.ndarray]:
    index = index_folder(data_dir, classes=bundle.classes)
    samples = index.split("test") if index.has_splits else list(index.samples)
    if not samples:
        raise DatasetError(f"{data_dir}: no test/ images to score the formats on")
    pre = bundle.preprocess
    data = decode_samples(samples, pre.size, pre.resize, data_dir, "decode test", progress=False)
    return data.images.numpy(), data.labels.numpy()


def bench_model(bundle: ModelBundle, formats: list[str], out_dir: str | Path, data_dir: str | Path | None = None,
                calib_dir: str | Path | None = None, calib_method: str = "minmax", n_calib: int = DEFAULT_N_CALIB,
                threads: tuple[int, ...] = (1, 2), runs: int = 200, batch: int = 32,
                max_seconds: float = 20.0, progress: bool = False) -> dict:
    """Export ``bundle`` to each of ``formats`` (float32 | int8 | int8-dense | bnn) in ``out_dir``; measure each.

    ``data_dir``: labelled folder scored for accuracy and ROC-AUC (its test/
    split when it has splits). int8 calibrates on ``calib_dir``, by default
    ``data_dir``'s train/ split. ``progress``: a bar of the steps (export,
    memory probe, timing per thread count, scoring), which take minutes.
    """
    unknown = [f for f in formats if f not in EXPORT_OF]
    if unknown or not formats:
        raise ExportError(f"unknown bench formats {unknown} (choose from {', '.join(EXPORT_OF)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir else None
    calib_dir = calib_dir or data_dir
    test = _test_set(data_dir, bundle) if data_dir else None
    images = check_images(bundle.preprocess)  # real radiographs for the timing inputs
    rows = []
    bar = tqdm(total=len(formats) * (3 + (test is not None)), desc="bench", unit="step", disable=not progress)
    for fmt in formats:
        path = out / FILE_OF[fmt]
        bar.set_description(f"bench {fmt}: export")
        export_model(bundle, EXPORT_OF[fmt], path, calib_dir=calib_dir, calib_method=calib_method, n_calib=n_calib)
        bar.update()
        bar.set_description(f"bench {fmt}: memory")
        row = {"format": fmt, "file": str(path), "size_bytes": path.stat().st_size,
               **_fresh_process_rss(path, threads[0])}
        if fmt in BYTES_PER_ACTIVATION:
            row["activation_peak_bytes_est"] = activation_peak_bytes(path, BYTES_PER_ACTIVATION[fmt])
        bar.update()
        bar.set_description(f"bench {fmt}: timing")
        row["threads"] = _timings(fmt, path, images, threads, runs, batch, max_seconds)
        bar.update()
        if test is not None:
            bar.set_description(f"bench {fmt}: test set")
            probs = _probabilities(_open(fmt, path, max(threads)), test[0])
            m = evaluate_probabilities(test[1], probs, bundle.classes, bundle.threshold, n_boot=0)
            row.update(accuracy=m["accuracy"], roc_auc=m["roc_auc"], test_images=m["n"])
            bar.update()
        rows.append(row)
    bar.close()
    import onnxruntime

    calibration = {"folder": str(calib_dir) if calib_dir else None, "method": calib_method, "images": n_calib}
    return {"model": bundle.source or bundle.arch, "arch": bundle.arch, "threshold": bundle.threshold,
            "data": str(data_dir) if data_dir else None, "calibration": calibration,
            "machine": {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__},
            "batch": batch, "rows": rows, "relative": _relative(rows, threads)}


def _relative(rows: list[dict], threads: tuple[int, ...]) -> list[dict]:
    """Each format against the first: speed-up (p50 at batch 1), size ratio, accuracy and AUC change."""
    base = rows[0]
    rel = []
    for row in rows[1:]:
        r = {"format": row["format"], "vs": base["format"], "size_ratio": row["size_bytes"] / base["size_bytes"]}
        for n in map(str, threads):
            r[f"speedup_{n}t"] = base["threads"][n]["latency_ms_p50"] / row["threads"][n]["latency_ms_p50"]
        if "accuracy" in row:
            r["accuracy_change_points"] = 100 * (row["accuracy"] - base["accuracy"])
            r["roc_auc_change"] = row["roc_auc"] - base["roc_auc"]
        rel.append(r)
    return rel


def _kb(n: float) -> str:
    return f"{n / 1024:,.0f} KB" if n < 10 * 1024 ** 2 else f"{n / 1024 ** 2:,.1f} MB"


def to_markdown(result: dict) -> str:
    rows, threads = result["rows"], list(result["rows"][0]["threads"])
    scored = "accuracy" in rows[0]
    head = ["Model version"] + (["Accuracy", "ROC-AUC"] if scored else [])
    for n in threads:
        head += [f"Latency p50 / p95 ({n} thr)", f"Throughput ({n} thr)"]
    head += ["Peak RSS (process)", "Peak RSS (model)", "Est. activation RAM", "File size"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [r["format"]] + ([f"{100 * r['accuracy']:.1f}%", f"{r['roc_auc']:.4f}"] if scored else [])
        for n in threads:
            t = r["threads"][n]
            cells += [f"{t['latency_ms_p50']:.2f} / {t['latency_ms_p95']:.2f} ms",
                      f"{t['throughput_img_s']:,.0f} img/s"]
        act = r.get("activation_peak_bytes_est")
        cells += [_kb(r["peak_rss_kb"] * 1024), _kb((r["peak_rss_kb"] - r["rss_after_import_kb"]) * 1024),
                  _kb(act) if act else "-", _kb(r["size_bytes"])]
        lines.append("| " + " | ".join(cells) + " |")
    for rel in result["relative"]:
        parts = [f"size ×{rel['size_ratio']:.2f}"] + [f"speed-up ×{rel[f'speedup_{n}t']:.2f} at {n} thread(s)"
                                                      for n in threads]
        if "accuracy_change_points" in rel:
            parts += [f"accuracy {rel['accuracy_change_points']:+.1f} points",
                      f"ROC-AUC {rel['roc_auc_change']:+.4f}"]
        lines.append(f"\n{rel['format']} vs {rel['vs']}: " + ", ".join(parts) + ".")
    m = result["machine"]
    n_test = rows[0].get("test_images")
    lines.append(f"\nModel `{result['model']}`; {m['cpu']} ({m['logical_cpus']} logical CPUs), ONNX Runtime "
                 f"{m['onnxruntime']}; latency at batch 1, throughput at batch {result['batch']}"
                 + (f"; accuracy at the stored threshold {result['threshold']:.3f} on {n_test} test images of "
                    f"`{result['data']}`" if scored else "") + ".")
    return "\n".join(lines) + "\n"
