#!/usr/bin/env python3
"""How much does a washed-out exposure move a model's NORMAL films toward PNEUMONIA? (validation films only)

Session 20 saw the test split's false positives look hazier than the films called right, and probed it on each
model's own validation NORMAL films (never the test split): every pixel pulled toward the film's mean grey
(contrast x0.8, x0.65) before the model's own preprocessing, then the share called PNEUMONIA at the model's stored
cut-off. A model that equalises its input should barely move; one that reads global contrast will
(docs/robustness.md, session 20 and item 29). Session 26 added the dark greys lifted by a tone curve (gamma 0.8,
0.65), a haze that keeps black and white, and, with --blur, a Gaussian blur (sigma 1 and 2 pixels at the model's
input size), a softer film; session 28 added, with --haze, a scatter veil halving the detail above 8 and 16 pixels
(less lung-rib contrast, each region's mean kept). `cxrkit stress --views exposure,tone,blur,haze` scores the same
views by balanced accuracy.
Prints a Markdown table:

    python experiments/exposure_probe.py --data ../shared/data/kermany_224 --models cxr_cnn,cxr_bnn,RUN_DIR
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from cxrkit.evaluation.recalibrate import carve_validation, validation_split_of
from cxrkit.evaluation.stress import HAZE_VIEWS, blurred, lifted_darks, veiled, washed_out
from cxrkit.inference.bundle import resolve_model
from cxrkit.inference.predictor import predict_resized

CONTRASTS = (1.0, 0.8, 0.65)
GAMMAS = (0.8, 0.65)
BLURS = (1.0, 2.0)


def called_positive(model, images: torch.Tensor) -> float:
    probs = predict_resized(model, images)
    return float(np.mean(probs[:, 1] >= model.threshold))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="data folder whose train/ the models' validation splits come from")
    ap.add_argument("--models", required=True, help="comma-separated names, run directories or model files")
    ap.add_argument("--blur", action="store_true", help="add the two blurred views")
    ap.add_argument("--haze", action="store_true", help="add the two veiled views of `cxrkit stress --views haze`")
    args = ap.parse_args()
    blurs = BLURS if args.blur else ()
    hazes = HAZE_VIEWS if args.haze else ()
    print("| model | validation NORMALs | " + " | ".join(f"contrast x{c:g}" for c in CONTRASTS) + " | "
          + " | ".join([f"gamma {g:g}" for g in GAMMAS] + [f"blur sigma {b:g}" for b in blurs]
                        + [f"veil {h.sigma:g} px x{h.keep:g}" for h in hazes]) + " |")
    print("|---|---:|" + "---:|" * (len(CONTRASTS) + len(GAMMAS) + len(blurs) + len(hazes)))
    for name in args.models.split(","):
        model = resolve_model(name)
        fraction, seed = validation_split_of(model)
        val = carve_validation(args.data, model.classes, model.preprocess, fraction, seed)
        normal = val.images[val.labels == list(model.classes).index("NORMAL")]
        shares = ([called_positive(model, washed_out(normal, c)) for c in CONTRASTS]
                  + [called_positive(model, lifted_darks(normal, g)) for g in GAMMAS]
                  + [called_positive(model, blurred(normal, b)) for b in blurs]
                  + [called_positive(model, veiled(normal, h.sigma, h.keep)) for h in hazes])
        print(f"| {name} | {len(normal)} | " + " | ".join(f"{s:.3f}" for s in shares) + " |")


if __name__ == "__main__":
    main()
