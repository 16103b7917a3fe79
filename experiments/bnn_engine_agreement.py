#!/usr/bin/env python3
"""Does the packed engine decide like PyTorch on a whole labelled folder?

The unit tests check agreement on the bundled sample; this checks it on every film of a folder (the 624-film test
split for the shipped model) and prints, as JSON: both accuracies at the model's threshold, the engine's ROC-AUC,
how many decisions agree, and the largest logit gap against the largest logit:

    python experiments/bnn_engine_agreement.py --model cxr_bnn --data ../shared/data/kermany_224/test
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from cxrkit.bnn import export_packed, load_packed
from cxrkit.data.folder import index_folder
from cxrkit.data.io import read_image
from cxrkit.data.preprocess import resize_gray, to_model_array
from cxrkit.inference.bundle import resolve_model
from cxrkit.inference.predictor import predict_resized


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cxr_bnn", help="a bnn-family registry name, run directory or .safetensors")
    ap.add_argument("--data", required=True, help="labelled folder ROOT/CLASS/*")
    ap.add_argument("--real-dtype", default="float32", choices=("float32", "float16"),
                    help="how the packed file stores the real-valued parts")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = resolve_model(args.model)
    packed = load_packed(export_packed(bundle, Path(tempfile.mkdtemp()) / "model.bnn.npz", args.real_dtype))
    samples = list(index_folder(args.data).samples)
    pre = bundle.preprocess
    films = np.stack([resize_gray(read_image(s.path), pre.size, pre.resize) for s in samples])
    x = to_model_array(films, pre)
    y = np.array([s.label for s in samples])
    engine = np.concatenate([packed.logits(x[i:i + 64]) for i in range(0, len(x), 64)])
    with torch.inference_mode():
        reference = np.concatenate([bundle.model(torch.from_numpy(x[i:i + 64])).numpy() for i in range(0, len(x), 64)])
    p_engine = packed.predict_proba(films)[:, 1]
    p_torch = predict_resized(bundle, torch.from_numpy(films))[:, 1]
    engine_says, torch_says = p_engine >= bundle.threshold, p_torch >= bundle.threshold
    print(json.dumps({
        "real_dtype": args.real_dtype, "n": len(y), "threshold": bundle.threshold,
        "engine_accuracy": float((engine_says == y).mean()), "torch_accuracy": float((torch_says == y).mean()),
        "engine_roc_auc": float(roc_auc_score(y, p_engine)),
        "same_decision": int((engine_says == torch_says).sum()),
        "max_abs_logit_gap": float(np.abs(engine - reference).max()), "max_abs_logit": float(np.abs(reference).max()),
    }, indent=1))


if __name__ == "__main__":
    main()
