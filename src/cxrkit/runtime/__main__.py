"""``python -m cxrkit.runtime [--model NAME_OR_FILE] IMAGE_OR_DIR...``: ``cxrkit predict`` for a torch-free install.

The full ``cxrkit`` command imports PyTorch for its other sub-commands; this
entry point imports only ONNX Runtime, NumPy, Pillow (and pydicom for DICOM, the
optional ``dicom`` extra), and prints the same lines (or ``--json``) as ``cxrkit predict``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..data.folder import expand_paths
from ..data.io import MissingDecoderError
from ..inference.files import predict_files
from .onnx_model import RuntimeModelError
from .shipped import DEFAULT_MODEL, load_runtime_model, runtime_models


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxrkit.runtime", description="Classify chest X-rays without "
                                "PyTorch: a shipped model, an exported .onnx (ONNX Runtime) or a packed .npz BNN.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"shipped ({', '.join(runtime_models())}; default %(default)s) or a file written by "
                        "`cxrkit export`: .onnx or packed .npz")
    p.add_argument("--threads", type=int, help="intra-op threads (default: ONNX Runtime's choice)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, label, probabilities, uncertain}")
    args = p.parse_args(argv)
    try:
        model = load_runtime_model(args.model, threads=args.threads)
    except RuntimeModelError as exc:
        print(f"cxrkit: error: {exc}", file=sys.stderr)
        return 2
    paths = expand_paths(args.inputs)
    try:
        preds, errors = predict_files(model, paths, model.predict_resized)
    except MissingDecoderError as exc:  # not the file's fault: every DICOM would fail alike
        print(f"cxrkit: error: {exc}", file=sys.stderr)
        return 2
    for line in errors:
        print(f"cxrkit: skipped {line}", file=sys.stderr)
    if not preds:
        print("cxrkit: error: no readable images in " + " ".join(args.inputs), file=sys.stderr)
        return 2
    rows = [p.to_dict() for p in preds]
    try:
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                probs_text = "  ".join(f"{c} {v:.3f}" for c, v in r["probabilities"].items())
                print(f"{r['label']:<10} {'UNCERTAIN ' if r['uncertain'] else ''}{probs_text}  {r['path']}")
            sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
    except BrokenPipeError:  # `python -m cxrkit.runtime ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
