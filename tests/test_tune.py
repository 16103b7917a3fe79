"""``cxrkit tune``: search spaces as data, Optuna trials as training runs, resume after a kill."""
from __future__ import annotations

import csv
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml

from cxrkit.cli.main import main
from cxrkit.models import create_model
from cxrkit.recipes import Recipe, RecipeError, load_recipe
from cxrkit.recipes.spaces import REFERENCE_AUGMENT, SEARCH_SPACES, apply_params, validate_space
from cxrkit.training import train

SMALL_SPACE = {"lr": {"float": [1e-3, 1e-2], "log": True}, "model_kwargs.dropout": {"float": [0.0, 0.5]},
               "augment_strength": {"float": [0.0, 1.0]}}


@pytest.fixture
def tiny_files(tmp_path, fast_recipe) -> tuple[Path, Path]:
    """A seconds-per-trial recipe file and the small search space, as a user would pass them."""
    recipe = tmp_path / "tiny.yaml"
    fast_recipe.replace(schedule="constant").save(recipe)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SMALL_SPACE))
    return recipe, space


def _tune_args(recipe, space, data, out, trials):
    return ["tune", "--recipe", str(recipe), "--space", str(space), "--data", str(data), "--trials", str(trials),
            "--out", str(out), "--epochs", "2", "--max-steps", "2", "--seed", "0", "--quiet"]


@pytest.mark.parametrize("name", sorted(SEARCH_SPACES))
def test_builtin_spaces_are_valid_and_build_their_models(name):
    space = validate_space(SEARCH_SPACES[name])
    base = load_recipe(name)
    lows = {p: (s.get("float") or s.get("int") or s["choice"])[0] for p, s in space.items()}
    highs = {p: (s.get("float") or s.get("int") or s["choice"])[-1] for p, s in space.items()}
    for params in (lows, highs):
        tuned = apply_params(base, params)
        assert Recipe.from_dict(tuned.to_dict()) == tuned  # still a plain, round-tripping recipe
        create_model(tuned.model, **tuned.model_kwargs)


def test_seed004_space_is_the_papers():
    space = SEARCH_SPACES["seed004_tune"]
    assert space["model_kwargs.hidden"] == {"int": [32, 512], "step": 32}
    assert space["model_kwargs.dropout"] == {"float": [0.0, 0.5]}
    assert space["head_lr"] == {"float": [1e-4, 1e-2], "log": True}
    assert load_recipe("seed004_tune").model == "resnet50"


def test_apply_params_writes_each_kind_of_path():
    base = load_recipe("seed001")
    tuned = apply_params(base, {"lr": 0.002, "model_kwargs.dropout": 0.3, "augment_strength": 0.5,
                                "augment.hflip": True})
    assert tuned.lr == 0.002 and tuned.model_kwargs == {"dropout": 0.3} and tuned.augment.hflip
    assert tuned.augment.rotation == pytest.approx(0.5 * REFERENCE_AUGMENT.rotation)
    assert base.augment.rotation == 0 and base.model_kwargs == {}  # built-ins untouched


@pytest.mark.parametrize("bad", [{}, {"lrr": {"float": [0, 1]}}, {"lr": {"float": [0.1]}},
                                 {"lr": {"float": [0, 1], "int": [0, 1]}}, {"augment.tilt": {"float": [0, 1]}}])
def test_validate_space_rejects_bad_spaces(bad):
    with pytest.raises(RecipeError):
        validate_space(bad)


def test_on_epoch_callback_can_stop_training(tmp_path, sample_dir, fast_recipe):
    seen = []

    def stop_after_first(epoch, record):
        seen.append((epoch, sorted(record)))
        raise optuna.TrialPruned("enough")

    with pytest.raises(optuna.TrialPruned):
        train(fast_recipe.replace(epochs=3), sample_dir, tmp_path / "run", progress=False, verbose=False,
              max_steps=1, on_epoch=stop_after_first)
    assert [e for e, _ in seen] == [1] and "val_auc" in seen[0][1]
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # the epoch was saved before the callback ran


def test_tune_runs_trials_and_writes_a_trainable_best_recipe(tmp_path, tiny_files, sample_dir, capsys):
    recipe, space = tiny_files
    out = tmp_path / "study"
    assert main(_tune_args(recipe, space, sample_dir, out, 3)) == 0
    stdout = capsys.readouterr().out
    assert "3 finished by this run" in stdout and "next: cxrkit train --recipe" in stdout
    best = load_recipe(out / "best_recipe.yaml")
    assert best.name == "cxr_cnn_tuned" and best.image_size == 64
    assert 1e-3 <= best.lr <= 1e-2 and 0 <= best.model_kwargs["dropout"] <= 0.5
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    for r in rows:
        assert (Path(r["run_dir"]) / "config.yaml").is_file()
    assert (out / "study.db").is_file() and (out / "optimization_history.png").stat().st_size > 1000
    assert "| trial | state | value |" in (out / "trials.md").read_text()


KILLER = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads(1)
    import cxrkit.tune.study as study
    from cxrkit.cli.main import main

    real_train, calls = study.train, []

    def train_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second trial dies hard after its first epoch, mid-trial
            report = kwargs["on_epoch"]

            def die(epoch, record):
                report(epoch, record)
                os._exit(17)

            kwargs["on_epoch"] = die
        return real_train(*args, **kwargs)

    study.train = train_then_die
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_study_resumes_keeping_completed_trials(tmp_path, tiny_files, sample_dir, monkeypatch):
    import cxrkit.tune.study as study_module

    recipe, space = tiny_files
    out = tmp_path / "study"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(script), *_tune_args(recipe, space, sample_dir, out, 3)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 17, proc.stderr[-2000:]
    storage = f"sqlite:///{out / 'study.db'}"
    before = optuna.load_study(study_name="cxr_cnn", storage=storage).trials
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    assert len(before[1].intermediate_values) == 1  # it was killed mid-trial

    # the dead trial's heartbeat goes stale after GRACE_S (60 s); shortened here so the rerun sees it stale
    monkeypatch.setattr(study_module, "HEARTBEAT_S", 1)
    monkeypatch.setattr(study_module, "GRACE_S", 1)
    time.sleep(3.0)  # well past the grace period: once in a fresh CI venv 1.5 s let a new trial start before the retry
    assert main(_tune_args(recipe, space, sample_dir, out, 3)) == 0  # the same command again
    after = optuna.load_study(study_name="cxr_cnn", storage=storage).trials
    assert after[0].state.name == "COMPLETE"
    assert (after[0].params, after[0].value) == (before[0].params, before[0].value)
    assert after[1].state.name == "FAIL"  # the killed trial, marked failed by the rerun ...
    assert after[2].params == before[1].params  # ... and its point retried once
    assert [t.state.name in ("COMPLETE", "PRUNED") for t in after] == [True, False, True, True]


def test_tune_refuses_another_recipe_in_the_same_study(tmp_path, tiny_files, sample_dir, capsys):
    recipe, space = tiny_files
    out = tmp_path / "study"
    assert main(_tune_args(recipe, space, sample_dir, out, 1)) == 0
    other = tmp_path / "other.yaml"
    load_recipe(recipe).replace(name="other").save(other)
    capsys.readouterr()
    rc = main(_tune_args(other, space, sample_dir, out, 2) + ["--study", "cxr_cnn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "was run with recipe 'cxr_cnn'" in err[0]


def test_a_range_the_recipe_refuses_is_one_error_line_before_any_trial(tmp_path, sample_dir, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {float: [0.0, 0.01]}\n")  # lr 0 is no learning rate
    rc = main(["tune", "--recipe", "seed001", "--space", str(space), "--data", str(sample_dir), "--trials", "1",
               "--out", str(tmp_path / "study")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "lr = 0.0 does not fit recipe seed001" in err[0], err
    assert not (tmp_path / "study").exists(), "no study is opened for a space that cannot run"


def test_tune_without_a_space_is_one_error_line(tmp_path, sample_dir, capsys):
    rc = main(["tune", "--recipe", "seed000", "--data", str(sample_dir), "--trials", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("cxrkit: error: no search space for recipe 'seed000'")


def _pg_tool(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"PostgreSQL's {name} not found: install Debian's postgresql package (.ci/run does)"
    return found[-1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server in a temp folder on a free local port (run as 'postgres' when we are root:
    the server refuses to run as root)."""
    root = Path(tempfile.mkdtemp(prefix="cxrkit-pg-"))
    as_pg = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_pg, _pg_tool("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_pg, _pg_tool("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w",
                    "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, _pg_tool("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(tmp_path, tiny_files, sample_dir, postgres_url):
    """Two `cxrkit tune` processes on one study: every trial is counted once, both workers contribute.

    Both are pinned to one CPU: the point is concurrency on the database, not speed.
    """
    recipe, space = tiny_files
    cpu = min(os.sched_getaffinity(0))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    workers = [subprocess.Popen([sys.executable, "-m", "cxrkit", "tune", "--recipe", str(recipe), "--space", str(space),
                                 "--data", str(sample_dir), "--trials", "6", "--out", str(tmp_path / f"w{i}"),
                                 "--storage", postgres_url, "--study", "duo", "--epochs", "2", "--max-steps", "2",
                                 "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
               for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    trials = optuna.load_study(study_name="duo", storage=postgres_url).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 6 <= len(finished) <= 7  # a worker may be one trial into its run when the sixth one lands
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in finished}) == 2


def test_seed004_tune_searches_its_frozen_resnet50_head(sample_dir, tmp_path, capsys):
    """Seed 004's own recipe and space: ResNet50 features once per trial, the head tuned, trials reported per epoch."""
    recipe = load_recipe("seed004_tune").replace(image_size=96, head_epochs=3, calibrate=False)
    recipe.save(tmp_path / "seed004.yaml")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SEARCH_SPACES["seed004_tune"]))
    assert main(["tune", "--recipe", str(tmp_path / "seed004.yaml"), "--space", str(space), "--data", str(sample_dir),
                 "--trials", "2", "--out", str(tmp_path / "study"), "--quiet"]) == 0
    study = optuna.load_study(study_name="seed004_tune", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and all(len(t.intermediate_values) == 3 for t in done)
    assert {"model_kwargs.hidden", "model_kwargs.dropout", "head_lr"} <= set(done[0].params)
    best = yaml.safe_load((tmp_path / "study" / "best_recipe.yaml").read_text())
    assert best["model"] == "resnet50" and best["model_kwargs"]["hidden"] % 32 == 0
