"""The ``cxrkit`` command: real subprocesses where the process boundary matters, in-process where cheaper."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLASSES, sample_images
from cxrkit.cli.main import main
from cxrkit.inference.bundle import load_bundle, read_metadata, resolve_model
from cxrkit.models import list_models, model_info, shipped_models
from cxrkit.recipes import RECIPES, load_recipe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "cxrkit", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def call(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def n_test_images() -> int:
    return sum(len(sample_images("test", c)) for c in CLASSES)


def assert_user_error(rc: int, stdout: str, stderr: str):
    assert rc == 2, (rc, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cxrkit: error: ") and len(lines[0]) > len("cxrkit: error: ") + 5, lines[0]


# ------------------------------------------------------------------ help


def test_help_exits_zero(tmp_path):
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    for command in ("train", "evaluate", "predict", "view", "models", "recipes", "data", "demo"):
        assert command in top.stdout
    sub = run_cli("train", "--help", cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    for flag in ("--recipe", "--data", "--out", "--resume", "--epochs", "--max-steps"):
        assert flag in sub.stdout


def test_help_and_recipes_answer_without_importing_torch(tmp_path):
    """`cxrkit --help`, `train --help` and `recipes` need neither torch nor scikit-learn; importing them took 3-5 s
    of a 0.5 s answer on 2 cores."""
    probe = ("import sys, contextlib, io\n"
             "from cxrkit.cli.main import main\n"
             "for argv in (['--help'], ['train', '--help'], ['recipes'], ['recipes', 'cxr_bnn_deep224_eq_warm']):\n"
             "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
             "        main(argv)\n"
             "print(sorted(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


@pytest.mark.parametrize("name", ["cxr_cnn.int8.onnx", "cxr_bnn.bnn.npz"])
def test_predict_with_an_exported_model_needs_no_torch_and_matches_the_torch_path(name, sample_dir, tmp_path):
    """An exported model at fp32 runs without importing torch (0.4-0.6 s for one film instead of ~3.4 s), and
    gives the very numbers the PyTorch-side predictor gives for the same file."""
    from cxrkit.data.folder import expand_paths
    from cxrkit.inference.predictor import predict_paths

    probe = ("import sys, contextlib, io, json\n"
             "from cxrkit.cli.main import main\n"
             "out = io.StringIO()\n"
             f"with contextlib.redirect_stdout(out):\n"
             f"    rc = main(['predict', {str(sample_dir / 'test')!r}, '--model', {name!r}, '--json', '--quiet'])\n"
             "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, 'rows': json.loads(out.getvalue())}))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["rc"] == 0 and got["torch"] is False
    preds, errors = predict_paths(resolve_model(name), expand_paths([str(sample_dir / "test")]))
    assert not errors and got["rows"] == [p.to_dict() for p in preds]


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


# ------------------------------------------------------------------ listing


def test_models_json(tmp_path):
    proc = run_cli("models", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    archs = [r for r in rows if r["name"] in list_models()]
    assert [r["name"] for r in archs] == list_models()
    from cxrkit.runtime.shipped import runtime_files
    runtime = {r["name"]: r for r in rows if r["name"] in runtime_files()}  # int8 ONNX, packed BNN: by file name
    assert set(runtime) == {"cxr_cnn.int8.onnx", "cxr_bnn.bnn.npz"}
    for name, r in runtime.items():
        original = read_metadata(shipped_models()[name.split(".")[0]])
        assert r["shipped"] and r["weights_bytes"] == runtime_files()[name].stat().st_size
        assert r["arch"] == original["arch"] and r["classes"] == original["classes"] and "no heatmaps" in r["description"]
    trained = [r for r in rows if r["name"] not in list_models() and r["name"] not in runtime]  # own names
    assert {r["name"] for r in trained} == set(shipped_models()) - set(list_models())
    for r in trained:
        assert r["shipped"] and r["weights_bytes"] == shipped_models()[r["name"]].stat().st_size
        assert r["arch"] in list_models() and len(r["classes"]) >= 2
    assert {"cxr_mobilenetv2": ["NORMAL", "PNEUMONIA"], "kermany3": ["BACTERIAL", "NORMAL", "VIRAL"]}.items() <= \
        {r["name"]: r["classes"] for r in trained}.items()
    for r in archs:
        for key in ("name", "family", "classes", "input_size", "shipped", "weights_bytes"):
            assert key in r, key
        info = model_info(r["name"])
        assert r["family"] == info.family
        # a shipped architecture is listed as its weights were trained, not as the registry's defaults
        meta = read_metadata(info.shipped_weights) if info.shipped_weights else \
            {"preprocess": dataclasses.asdict(info.preprocess), "classes": list(info.classes)}
        pre, classes = meta["preprocess"], meta["classes"]
        assert r["classes"] == classes
        assert r["input_size"] == [pre["channels"], pre["size"], pre["size"]]
        assert r["shipped"] == (info.shipped_weights is not None)
        if r["shipped"]:
            assert r["weights_bytes"] == info.shipped_weights.stat().st_size
        else:
            assert r["weights_bytes"] is None
    assert {r["name"]: r["shipped"] for r in rows}["cxr_cnn"] is True


def test_models_lists_a_shipped_architecture_as_its_weights_were_trained(capsys, monkeypatch):
    """If the file shipped under an architecture's name was trained at another size or for other classes, the
    listing must say so: kermany3's weights are cxr_cnn at 128 px for 3 classes (the registry says 224 px, 2)."""
    import cxrkit.models
    import cxrkit.models._registry as registry
    other = {"cxr_cnn": shipped_models()["kermany3"]}
    monkeypatch.setattr(registry, "shipped_models", lambda: other)
    monkeypatch.setattr(cxrkit.models, "shipped_models", lambda: other)
    rc, out, _ = call(["models", "--json"], capsys)
    assert rc == 0
    row = {r["name"]: r for r in json.loads(out)}["cxr_cnn"]
    assert row["input_size"] == [1, 128, 128] and row["classes"] == ["BACTERIAL", "NORMAL", "VIRAL"]
    assert model_info("cxr_cnn").preprocess.size == 224


def test_models_table(capsys):
    rc, out, _ = call(["models"], capsys)
    assert rc == 0
    assert all(name in out for name in list_models())


def test_recipes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "110")
    rc, out, _ = call(["recipes"], capsys)
    assert rc == 0 and "seed001" in out and "cxr_cnn" in out
    rows = [line for line in out.splitlines() if line and not line.startswith("#")][:-1]
    assert len(rows) == len(RECIPES) and out.index("seed000") < out.index("cxr_bnn ") < out.index("cxr_bnn_long ")
    assert max(map(len, rows)) <= 110  # one line each, shortened to the terminal's width
    rc, long_out, _ = call(["recipes", "--long"], capsys)
    assert rc == 0 and RECIPES["cxr_bnn_deep224_haze_warm"].description in long_out
    rc, out, _ = call(["recipes", "seed001", "--json"], capsys)
    assert rc == 0
    assert json.loads(out) == json.loads(json.dumps(load_recipe("seed001").to_dict()))


# ------------------------------------------------------------------ predict / evaluate / view / data / demo


def test_predict_json_subprocess(sample_dir, tmp_path):
    proc = run_cli("predict", sample_dir / "test", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    preds = json.loads(proc.stdout)
    assert isinstance(preds, list) and len(preds) == n_test_images()
    bundle = resolve_model(None)
    for p in preds:
        assert set(p) == {"path", "label", "probabilities", "uncertain"}
        assert Path(p["path"]).is_file()
        assert set(p["probabilities"]) == set(bundle.classes)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        expected = bundle.classes[int(p["probabilities"][bundle.classes[1]] >= bundle.threshold)]
        assert p["label"] == expected


def test_predict_skips_unreadable_but_keeps_going(sample_dir, tmp_path, capsys):
    bad = tmp_path / "fake.jpeg"
    bad.write_text("not an image")
    good = sample_images("test", "NORMAL")[0]
    rc, out, err = call(["predict", good, bad, "--json"], capsys)
    assert rc == 1  # partial success is not success
    preds = json.loads(out)
    assert [p["path"] for p in preds] == [str(good)]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxrkit: skipped") and "fake.jpeg" in lines[0]


def test_evaluate_json(sample_dir, capsys):
    rc, out, err = call(["evaluate", "--data", sample_dir, "--json", "--bootstrap", "50"], capsys)
    assert rc == 0, err
    m = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(m, dict)
    for key in ("n", "accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1", "threshold",
                "confusion_matrix", "classes"):
        assert key in m, key
    assert m["n"] == n_test_images() and m["classes"] == list(CLASSES)
    assert m["split"] == "test"
    assert sum(map(sum, m["confusion_matrix"])) == m["n"]
    assert 0.0 <= m["accuracy"] <= 1.0


def test_evaluate_writes_report(sample_dir, tmp_path, capsys):
    out_dir = tmp_path / "rep"
    rc, out, err = call(["evaluate", "--data", sample_dir, "--out", out_dir, "--bootstrap", "50"], capsys)
    assert rc == 0, err
    assert (out_dir / "report.md").is_file() and (out_dir / "metrics.json").is_file()
    assert str(out_dir / "report.md") in out
    assert "ROC-AUC" in out and "ROC-AUC" in (out_dir / "report.md").read_text()
    assert json.loads((out_dir / "metrics.json").read_text())["n"] == n_test_images()


def test_view_writes_png(sample_dir, tmp_path, capsys):
    png = tmp_path / "grid.png"
    rc, out, err = call(["view", sample_dir / "test", "--out", png, "--max-images", "4"], capsys)
    assert rc == 0, err
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert str(png) in out


def test_data_check(sample_dir, capsys, tmp_path):
    rc, out, err = call(["data", "check", sample_dir], capsys)
    assert rc == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["train"],
                                                                                                  ["test"])}
    for split in ("train", "test"):
        counts = [len(sample_images(split, c)) for c in CLASSES]
        assert rows[split][:3] == [str(counts[0]), str(counts[1]), str(sum(counts))], out
    assert "unreadable images:        0" in out

    # a broken copy: the problems are reported, not fatal
    root = tmp_path / "copy"
    shutil.copytree(sample_dir, root)
    (root / "train" / "NORMAL" / "fake.jpeg").write_text("x")
    shutil.copy(sample_images("train", "NORMAL")[0], root / "test" / "NORMAL" / "leaked.jpeg")
    rc, out, err = call(["data", "check", root, "--json"], capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["counts"]["train"]["NORMAL"] == len(sample_images("train", "NORMAL")) + 1
    assert len(report["unreadable"]) == 1 and "fake.jpeg" in report["unreadable"][0]
    assert len(report["cross_split_images"]) == 1


def test_demo(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    rc, out, err = call(["demo", "--out", out_dir], capsys)
    assert rc == 0, err
    for name in ("report.md", "predictions.json", "predictions_grid.png", "metrics.json"):
        assert (out_dir / name).is_file(), name
    preds = json.loads((out_dir / "predictions.json").read_text())
    assert len(preds) == n_test_images()
    assert (out_dir / "predictions_grid.png").read_bytes()[:8] == PNG_MAGIC
    assert "report:" in out


# ------------------------------------------------------------------ train


@pytest.fixture(scope="module")
def cli_run(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["train", "--recipe", "cxr_cnn", "--data", str(sample_dir), "--out", str(out), "--epochs", "1",
                   "--max-steps", "1", "--quiet"])
    return rc, out, stdout.getvalue(), stderr.getvalue()


def test_train_smoke(cli_run, sample_dir, capsys):
    rc, out, stdout, stderr = cli_run
    assert rc == 0, stderr
    assert (out / "model.safetensors").is_file()
    assert str(out) in stdout and "ROC-AUC" in stdout
    bundle = load_bundle(out / "model.safetensors")
    assert bundle.arch == "cxr_cnn"
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1
    assert load_recipe(out).epochs == 1  # the override is what config.yaml records
    # the fresh run is usable by name of its directory
    rc, pout, err = call(["predict", sample_images("test", "PNEUMONIA")[0], "--model", out, "--json"], capsys)
    assert rc == 0, err
    assert json.loads(pout)[0]["label"] in CLASSES


def test_train_refuses_non_empty_run_dir(cli_run, sample_dir, capsys):
    _, out, _, _ = cli_run
    before = (out / "model.safetensors").read_bytes()
    rc, stdout, err = call(["train", "--recipe", "cxr_cnn", "--data", sample_dir, "--out", out, "--epochs", "1",
                            "--max-steps", "1", "--quiet"], capsys)
    assert_user_error(rc, stdout, err)
    assert "--resume" in err
    assert (out / "model.safetensors").read_bytes() == before


# ------------------------------------------------------------------ user errors, as real processes


def _error_cases(sample_dir: Path, tmp: Path) -> dict[str, list]:
    (tmp / "empty").mkdir()
    (tmp / "fake.jpeg").write_text("hello, I am text\n")
    (tmp / "occupied").mkdir()
    (tmp / "occupied" / "notes.txt").write_text("someone else's files")
    return {
        "predict_missing_path": ["predict", tmp / "does_not_exist.jpeg"],
        "evaluate_empty_folder": ["evaluate", "--data", tmp / "empty"],
        "predict_text_as_jpeg": ["predict", tmp / "fake.jpeg"],
        "unknown_model": ["predict", sample_dir / "test", "--model", "resnet9000"],
        "unknown_recipe": ["train", "--recipe", "no_such_recipe", "--data", sample_dir, "--out", tmp / "r1"],
        "non_empty_out": ["train", "--recipe", "cxr_cnn", "--data", sample_dir, "--out", tmp / "occupied"],
        "resume_nothing": ["train", "--recipe", "cxr_cnn", "--data", sample_dir, "--out", tmp / "r2", "--resume"],
        "no_recipe": ["train", "--data", sample_dir, "--out", tmp / "r1"],
    }


@pytest.mark.parametrize("case", ["predict_missing_path", "evaluate_empty_folder", "predict_text_as_jpeg",
                                  "unknown_model", "unknown_recipe", "non_empty_out", "resume_nothing", "no_recipe"])
def test_user_errors_are_one_line(case, sample_dir, tmp_path):
    argv = _error_cases(sample_dir, tmp_path)[case]
    proc = run_cli(*argv, cwd=tmp_path)
    assert_user_error(proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    msg = proc.stderr
    expect = {"predict_missing_path": "does_not_exist.jpeg", "evaluate_empty_folder": "empty",
              "predict_text_as_jpeg": "fake.jpeg", "unknown_model": "resnet9000",
              "unknown_recipe": "no_such_recipe", "non_empty_out": "occupied", "resume_nothing": "resume",
              "no_recipe": "--recipe is needed"}[case]
    assert expect in msg, msg
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists(), "a failed start must not leave a run"
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "someone else's files"


@pytest.mark.parametrize("argv, flag", [
    (["train", "--recipe", "cxr_cnn", "--data", "D", "--out", "O", "--batch-size", "0"], "--batch-size"),
    (["train", "--recipe", "cxr_cnn", "--data", "D", "--out", "O", "--max-steps", "-1"], "--max-steps"),
    (["train", "--recipe", "cxr_cnn", "--data", "D", "--out", "O", "--epochs", "two"], "--epochs"),
    (["evaluate", "--bootstrap", "-5"], "--bootstrap"),
    (["view", "D", "--max-images", "0"], "--max-images"),
    (["bench", "--runs", "0"], "--runs"),
    (["tune", "--recipe", "cxr_cnn", "--data", "D", "--out", "O", "--trials", "-1"], "--trials"),
    (["serve", "--port", "99999"], "--port"),
])
def test_counts_out_of_range_are_usage_errors(argv, flag, capsys):
    """A count of 0 or a port past 65535 is argparse's usage error (exit 2) naming the flag, before any work."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: must be a whole number" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, reason", [
    (["export", "--format", "onnx", "--out", "{tmp}"], "is a folder; give a file path"),
    (["calibrate", "--data", "D", "--out", "{tmp}/c.onnx"], "must end in .safetensors"),
    (["ensemble", "--models", "cxr_cnn", "--data", "D", "--out", "/proc/x.safetensors"], "cannot write in /proc"),
    (["train", "--recipe", "cxr_cnn", "--data", "D", "--out", "{tmp}/file.txt"], "exists and is a file"),
    (["evaluate", "--out", "{tmp}/file.txt/sub"], "is a file, not a folder"),
    (["view", "D", "--out", "{tmp}"], "is a folder"),
    (["tune", "--recipe", "cxr_cnn", "--data", "D", "--out", "O", "--timeout", "-5"], "positive number of seconds"),
    (["tune", "--recipe", "cxr_cnn", "--data", "D", "--out", "O", "--timeout", "nan"], "positive number of seconds"),
])
def test_an_unusable_out_is_refused_before_any_work(argv, reason, tmp_path, capsys):
    """Checked when the command line is read: before, these failed with a traceback or after minutes of work."""
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and reason in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv, reason", [
    (["export", "--model", "cxr_bnn", "--format", "bnn-packed", "--out", "x.onnx"], "must end in .npz"),
    (["bench", "--formats", "float32", "--threads", "0"], "1 or more"),
    (["bench", "--formats", "float32,int8"], "int8 needs calibration images"),
])
def test_wrong_format_names_and_bench_settings_are_one_line(argv, reason, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = call(argv, capsys)
    assert_user_error(rc, stdout, err)
    assert reason in err and not any(tmp_path.iterdir()), err  # refused before anything was written


def test_a_start_that_never_finished_an_epoch_can_be_started_again(sample_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("left by an interrupted start\n")
    (out / "run.json").write_text("{}")
    rc, stdout, err = call(["train", "--recipe", "cxr_cnn", "--data", sample_dir, "--out", out, "--resume"], capsys)
    assert_user_error(rc, stdout, err)
    assert "without --resume" in err
    rc, _, err = call(["train", "--recipe", "seed001", "--data", sample_dir, "--out", out, "--epochs", "1",
                       "--max-steps", "1", "--quiet"], capsys)
    assert rc == 0, err
    assert (out / "model.safetensors").is_file() and load_recipe(out).name == "seed001"


def test_compare_refuses_a_folder_without_a_test_split(sample_dir, tmp_path, capsys):
    flat = tmp_path / "flat"
    shutil.copytree(Path(sample_dir) / "train", flat)  # class folders only: "test" figures would be training films
    rc, stdout, err = call(["compare", "--recipes", "seed001", "--data", flat, "--out", tmp_path / "cmp"], capsys)
    assert_user_error(rc, stdout, err)
    assert "needs train/ and test/ splits" in err and not (tmp_path / "cmp" / "runs").exists()


def test_train_checks_what_the_recipe_names_before_making_a_run(sample_dir, tmp_path, capsys):
    rc, out, err = call(["train", "--recipe", "cxr_cnn", "--data", sample_dir, "--out", tmp_path / "r0",
                         "--epochs", "0"], capsys)
    assert_user_error(rc, out, err)
    assert "trains nothing" in err
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("name: mine\nmodel: cxr_cnnn\nlr: 1e-3\n")  # a typo in the model, PyYAML's string 1e-3
    rc, out, err = call(["train", "--recipe", recipe, "--data", sample_dir, "--out", tmp_path / "r1"], capsys)
    assert_user_error(rc, out, err)
    assert "unknown model 'cxr_cnnn'" in err
    bad = tmp_path / "weights.pt"
    bad.write_text("hello\n")
    for argv, words in ((["--recipe", "cxr_mobilenetv2", "--weights", bad], "not a weights file: neither safetensors"),
                        (["--recipe", "cxr_cnn", "--weights", "package"], "not a transfer backbone"),
                        (["--recipe", "cxr_bnn_2stage", "--init-from", tmp_path / "no_run"], "no_run"),
                        (["--recipe", "cxr_cnn_wide160_clahe_taught"], "pass --teacher"),
                        (["--recipe", "cxr_cnn", "--teacher", "cxr_cnn"], "distill_weight 0"),
                        (["--recipe", "cxr_cnn_wide160_clahe_taught", "--teacher", tmp_path / "no_teacher"],
                         "no_teacher"),
                        (["--recipe", recipe], "unknown model 'cxr_cnnn'")):
        rc, out, err = call(["train", *argv, "--data", sample_dir, "--out", tmp_path / "r2"], capsys)
        assert_user_error(rc, out, err)
        assert words in err, err
    assert not any((tmp_path / r).exists() for r in ("r0", "r1", "r2")), "a refused start must not leave a run"


def test_serve_refuses_a_port_in_use_in_one_line(capsys):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        rc, out, err = call(["serve", "--port", held.getsockname()[1]], capsys)
    assert_user_error(rc, out, err)
    assert "cannot listen on 127.0.0.1" in err


@pytest.mark.parametrize("name", ["cxr_cnn", "kermany3"])
def test_bf16_inference_is_opt_in_and_close_to_fp32(name, sample_dir, capsys):
    """`--precision bf16` runs a frozen bfloat16 copy: probabilities near fp32's, same decisions on the sample."""
    files = [str(p) for p in sample_images("test", "NORMAL") + sample_images("test", "PNEUMONIA")]
    rc32, out32, _ = call(["predict", *files, "--model", name, "--json", "--quiet"], capsys)
    rc16, out16, err16 = call(["predict", *files, "--model", name, "--json", "--quiet", "--precision", "bf16"], capsys)
    assert rc32 == rc16 == 0
    from cxrkit.training.trainer import resolve_precision
    assert ("no native bfloat16" in err16) == (resolve_precision("auto") != "bf16")  # emulated bf16 is slow: said
    fp32, bf16 = json.loads(out32), json.loads(out16)
    gaps = [abs(a["probabilities"][c] - b["probabilities"][c]) for a, b in zip(fp32, bf16) for c in a["probabilities"]]
    assert max(gaps) < 0.05 and max(gaps) > 0  # near, and really computed in another precision
    assert sum(a["label"] != b["label"] for a, b in zip(fp32, bf16)) <= 1


def test_bf16_refuses_exported_files_and_unknown_precisions(tmp_path, capsys):
    from cxrkit.inference.predictor import use_precision

    onnx = Path(__file__).resolve().parents[1] / "src" / "cxrkit" / "weights" / "cxr_cnn.int8.onnx"
    rc, _, err = call(["predict", str(sample_images("test", "NORMAL")[0]), "--model", str(onnx), "--precision", "bf16"],
                      capsys)
    assert rc == 2 and "is for PyTorch models" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="choose fp32 or bf16"):
        use_precision(resolve_model("cxr_cnn"), "fp16")
    rc, _, err = call(["predict", str(sample_images("test", "NORMAL")[0]), "--model", "cxr_bnn", "--precision", "bf16"],
                      capsys)
    assert rc == 2 and "packed engine" in err and err.count("\n") == 1


def test_engine_torchscript_reproduces_the_onnxruntime_default(capsys):
    """`--engine torchscript` (figures recorded before ONNX Runtime ran the default) gives the same decisions and
    probabilities within 1e-5 of the default engine; an unknown engine is argparse's usage error (exit 2)."""
    files = [str(p) for p in sample_images("test", "NORMAL") + sample_images("test", "PNEUMONIA")]
    rc_a, out_a, _ = call(["predict", *files, "--model", "cxr_cnn", "--json", "--quiet"], capsys)
    rc_t, out_t, _ = call(["predict", *files, "--model", "cxr_cnn", "--json", "--quiet", "--engine", "torchscript"],
                          capsys)
    assert rc_a == rc_t == 0
    auto, script = json.loads(out_a), json.loads(out_t)
    assert [a["label"] for a in auto] == [t["label"] for t in script]
    assert max(abs(a["probabilities"][c] - t["probabilities"][c]) for a, t in zip(auto, script)
               for c in a["probabilities"]) < 1e-5
    with pytest.raises(SystemExit) as exit_:
        call(["predict", files[0], "--engine", "tensorrt"], capsys)
    assert exit_.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_predict_without_pydicom_refuses_dicom_in_one_line(sample_dir, tmp_path, monkeypatch, capsys):
    """The install lacks a decoder: not one file's fault, so the run stops in one line instead of listing every
    DICOM as unreadable."""
    import numpy as np

    from cxrkit.data.io import read_image
    from serve_support import dicom_bytes

    jpeg = sample_images("test", "NORMAL")[0]
    dcm = tmp_path / "film.dcm"
    dcm.write_bytes(dicom_bytes(read_image(jpeg).astype(np.uint16)))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    rc, out, err = call(["predict", jpeg, dcm, "--model", "cxr_bnn.bnn.npz", "--quiet"], capsys)
    assert_user_error(rc, out, err)
    assert "reading DICOM needs pydicom" in err and out == ""
