"""Tiny searches end to end through `python -m meteor_tf.tune`'s main (in process): each tuner, the outputs, the
held-out data never reaching a trial, resume after an interruption, and best.cfg read back by main's flags."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags

from meteor_tf import flags as mflags
from meteor_tf.experiment import fold as cv
from tests.conftest import write_capture_folder

ROOT = Path(__file__).resolve().parents[2]
FLAGS = flags.FLAGS


def tune(*argv):
    from meteor_tf.cli import tune as tune_cli

    FLAGS.unparse_flags()
    FLAGS(["tune", *argv])
    try:
        return tune_cli.main(["tune"])
    finally:
        FLAGS.unparse_flags()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    data = write_capture_folder(root / "captures", meteors=12, non_meteors=12, size=40)
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.weights import save_backbone

    net = build_classifier(18, "torchvision", 32, normalization="unit", head_units=(), head_dropout=(), num_classes=10)
    weights = root / "fmnist_backbone.weights.h5"
    save_backbone(net.get_layer("backbone"), str(weights))
    return root, data, weights


def tiny_flags(root, data, *extra):
    return [f"--data={data}", "--depth=18", "--image_size=32", "--head_epochs=1", "--fine_tune_epochs=1",
            "--batch_size=8", "--head_units=16", "--head_dropout=0.1", "--folds=1", "--val_fraction=0.25",
            "--seed=3", f"--output_dir={root / 'runs'}", *extra]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def score(tuner_dir, trial_id):
    return json.loads((tuner_dir / f"trial_{trial_id}" / "score.json").read_text())


@pytest.fixture(scope="module")
def resumed_search(workspace):
    """A random search of two pretrained ResNet-18 trials over the fine-tuning recipe, stopped in trial 0's second
    phase (max_trials=1), rerun with max_trials=2, then rerun once more. Records the phases each run trained and
    the examples every train_fold call was given."""
    root, data, weights = workspace
    tuner_dir = root / "resume"
    args = tiny_flags(root, data, "--pretrain=fashion_mnist", f"--weights={weights}", "--tuner=random",
                      f"--tuner_dir={tuner_dir}", "--search_space=augment=none")
    real_run_phase, real_train = cv.run_phase, cv.train_fold
    out = {"dir": tuner_dir, "args": args, "phases": [], "seen": [], "interrupt": True}

    def run_phase(config, phase, *a, **k):
        if out["interrupt"] and phase == "fine_tune":
            raise KeyboardInterrupt  # Ctrl-C in trial 0's second phase
        out["phases"][-1].append(phase)
        return real_run_phase(config, phase, *a, **k)

    def train_fold(context, fold, *a, **k):
        examples = context.examples
        out["seen"].append({"ids": set(examples.ids.tolist()), "fold": fold, "ids_array": examples.ids})
        return real_train(context, fold, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(cv, "run_phase", run_phase)
    mp.setattr(cv, "train_fold", train_fold)
    try:
        out["phases"].append([])
        out["rc"] = [tune(*args, "--max_trials=1")]
        out["trial0_interrupted"] = json.loads((tuner_dir / "trial_0" / "trial.json").read_text())
        out["interrupt"] = False
        out["phases"].append([])
        out["rc"].append(tune(*args, "--max_trials=2"))
        out["best_after_resume"] = json.loads((tuner_dir / "best.json").read_text())
        out["phases"].append([])
        out["rc"].append(tune(*args, "--max_trials=2"))
    finally:
        mp.undo()
    out["flags"] = tiny_flags(root, data, "--pretrain=fashion_mnist", f"--weights={weights}")
    return out


def test_an_interrupted_search_resumes_without_redoing_finished_work(resumed_search):
    r, d = resumed_search, resumed_search["dir"]
    assert r["rc"] == [130, 0, 0]
    assert r["trial0_interrupted"]["status"] == "RUNNING"
    # run 1 trained trial 0's head; run 2 resumed trial 0 at its fine-tune phase with the same hyperparameters and
    # ran trial 1 whole; run 3 found the search finished and trained nothing
    assert r["phases"] == [["head"], ["fine_tune", "head", "fine_tune"], []]
    trial0 = json.loads((d / "trial_0" / "trial.json").read_text())
    assert trial0["status"] == "COMPLETED"
    assert trial0["hyperparameters"]["values"] == r["trial0_interrupted"]["hyperparameters"]["values"]
    assert sorted(row["trial"] for row in read_csv(d / "results.csv")) == ["0", "1"]
    assert json.loads((d / "best.json").read_text()) == r["best_after_resume"]


def test_a_rerun_with_other_settings_is_refused_naming_them(resumed_search, capsys):
    args = [a for a in resumed_search["args"] if not a.startswith("--seed")]
    assert tune(*args, "--seed=4", "--max_trials=2") == 2
    assert "seed" in capsys.readouterr().err


def test_the_search_writes_its_reports(resumed_search):
    d = resumed_search["dir"]
    for name in ("results.md", "results.csv", "objective.png", "best.cfg", "best.json", "search.json",
                 "tuning_split.json", "oracle.json"):
        assert (d / name).exists(), name
    rows = read_csv(d / "results.csv")
    assert len(rows) == 2 and all(row["status"] == "COMPLETED" for row in rows)
    assert float(rows[0]["val_f1"]) >= float(rows[1]["val_f1"])  # best first
    assert {"lr_head", "lr_fine_tune", "frozen_convs", "sgdr_t_mul"} <= set(rows[0])
    assert "depth" not in rows[0] and "augment" not in rows[0]  # fixed: not columns
    best = json.loads((d / "best.json").read_text())
    assert best["trial_id"] == rows[0]["trial"]
    assert best["score"] == pytest.approx(score(d, best["trial_id"])["metrics"]["val_f1"])
    for row in rows:  # both phases trained in every trial; weights removed once scored
        assert score(d, row["trial"])["per_fold"][0]["epochs"] == {"head": 1, "fine_tune": 1}
        assert not list((d / f"trial_{row['trial']}").rglob("*.weights.h5"))
    assert "| rank | trial | status | val_f1 |" in (d / "results.md").read_text()


def test_no_trial_sees_the_held_out_test_part(resumed_search):
    from meteor_tf.data.dataset import load_examples

    assert len(resumed_search["seen"]) == 3  # trial 0 twice (interrupted, resumed), trial 1 once
    mflags.define_flags()
    FLAGS.unparse_flags()
    try:
        FLAGS(["main", *resumed_search["flags"]])
        config = mflags.config_from_flags()
    finally:
        FLAGS.unparse_flags()
    examples = load_examples(config)
    main_test = set(examples.ids[cv.make_folds(config, examples)[0].test_idx].tolist())  # what main tests on
    split = json.loads((resumed_search["dir"] / "tuning_split.json").read_text())
    assert set(split["held_out"]) == main_test and main_test
    for seen in resumed_search["seen"]:
        assert not seen["ids"] & main_test
        assert seen["ids"] | main_test == set(examples.ids.tolist())
        fold = seen["fold"]  # scored on a part of its own data it neither fit on nor picked checkpoints with
        assert not set(fold.test_idx) & set(fold.fit_idx) and not set(fold.test_idx) & set(fold.val_idx)
        assert sorted(seen["ids_array"][fold.test_idx].tolist()) == split["tuning_folds"][0]["score"]


def test_best_cfg_round_trips_through_mains_flags(resumed_search):
    d = resumed_search["dir"]
    best = json.loads((d / "best.json").read_text())
    mflags.define_flags()
    mflags.define_column_flag()
    FLAGS.unparse_flags()
    try:
        FLAGS(["main", f"--flagfile={d / 'best.cfg'}"])
        (config,) = mflags.configs_from_flags()
    finally:
        FLAGS.unparse_flags()
    hp = best["hyperparameters"]
    assert config.lr_head == hp["lr_head"] and config.lr_fine_tune == hp["lr_fine_tune"]
    assert (config.frozen_convs, config.sgdr_t_mul) == (hp["frozen_convs"], hp["sgdr_t_mul"])
    assert (config.depth, config.image_size, config.head_units, config.pretrain) == (18, 32, (16,), "fashion_mnist")
    assert config == type(config).from_dict(best["config"])  # every setting, not just the tuned ones
    # and main's own parser accepts the file as it is (unknown flags or bad values would exit 1)
    done = subprocess.run([sys.executable, "-m", "meteor_tf.main", f"--flagfile={d / 'best.cfg'}",
                           "--only_check_args"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def fake_training(monkeypatch):
    """Stands in for experiment.fold.train_fold (seconds instead of minutes) where a test is about the
    oracles: writes the predictions file the scorer reads, with a quality that grows with lr_fine_tune; records the
    configs trained. The same tests also run with real training ("real" in TRAINING)."""
    from meteor_tf.evaluation.metrics import classification_metrics

    calls = []

    def train_fold(context, fold, name, seed, need_model=True):
        config, examples, run_dir = context.config, context.examples, context.run.path
        y = examples.labels[fold.test_idx]
        skill = (np.log10(config.lr_fine_tune) + 5) / 3  # 0 at 1e-5 … 1 at 1e-2
        jitter = (np.arange(len(y)) % 5 - 2) * 0.15
        prob = np.clip(0.5 + np.where(y == 0, 1.0, -1.0) * (skill - 0.5) * 0.6 + jitter, 0, 1)
        (run_dir / name).mkdir(parents=True, exist_ok=True)
        np.savez(run_dir / name / "predictions_fine_tune.npz", val_idx=fold.val_idx,
                 val_prob=np.full(len(fold.val_idx), 0.5), test_idx=fold.test_idx, test_prob=prob)
        calls.append(config)
        return {"fine_tune": {"test": classification_metrics(y, prob), "epochs": config.fine_tune_epochs,
                              "lr": config.lr_fine_tune, "history": {}}}, None

    monkeypatch.setattr(cv, "train_fold", train_fold)
    return calls


# "real": the smallest real training (pretrain=none, 24 captures at 32 px, 1-2 epochs) that can fail: about 40-60 s
# each on 2 idle cores, so each tuner's search runs its real trials in CI too (issue: tests that can fail)
TRAINING = ["fake", "real"]


@pytest.mark.parametrize("training", TRAINING)
def test_hyperband_promotes_the_best_trial_to_more_epochs(workspace, monkeypatch, training):
    root, data, _ = workspace
    tuner_dir = root / f"hyperband_{training}"
    calls = fake_training(monkeypatch) if training == "fake" else None
    rc = tune(*tiny_flags(root, data, "--pretrain=none", "--tuner=hyperband", "--hyperband_max_epochs=2",
                          "--hyperband_factor=2", "--max_trials=3", "--fine_tune_epochs=2",
                          f"--tuner_dir={tuner_dir}", "--search_space=augment=none"))
    assert rc == 0
    trials = {t: json.loads((tuner_dir / f"trial_{t}" / "trial.json").read_text()) for t in ("0", "1", "2")}
    values = {t: tr["hyperparameters"]["values"] for t, tr in trials.items()}
    assert [values[t]["tuner/epochs"] for t in ("0", "1", "2")] == [1, 1, 2]
    promoted = values["2"]["tuner/trial_id"]
    assert promoted in ("0", "1")
    assert trials[promoted]["score"] == max(trials["0"]["score"], trials["1"]["score"])
    strip = {"tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id"}
    assert {k: v for k, v in values["2"].items() if k not in strip} == \
        {k: v for k, v in values[promoted].items() if k not in strip}
    # a budget of 1 of 2 epochs trains one epoch, the full budget the flags' two (from scratch: one phase)
    assert score(tuner_dir, "0")["per_fold"][0]["epochs"] == {"fine_tune": 1}
    assert score(tuner_dir, "2")["per_fold"][0]["epochs"] == {"fine_tune": 2}
    if calls is not None:
        assert [c.fine_tune_epochs for c in calls] == [1, 1, 2]
    assert "epochs" in read_csv(tuner_dir / "results.csv")[0]
    assert "--fine_tune_epochs=2" in (tuner_dir / "best.cfg").read_text()  # best.cfg: the full budget


@pytest.mark.parametrize("training", TRAINING)
def test_bayesian_search_scored_by_k_fold_recall_at_precision(workspace, monkeypatch, training):
    root, data, _ = workspace
    tuner_dir = root / f"bayesian_{training}"
    calls = fake_training(monkeypatch) if training == "fake" else None
    trials = 3 if training == "fake" else 2
    rc = tune(*tiny_flags(root, data, "--pretrain=none", "--tuner=bayesian", f"--max_trials={trials}",
                          "--bayesian_initial_points=1", "--tune_folds=2", "--objective=recall_at_precision",
                          "--objective_precision=0.5", f"--tuner_dir={tuner_dir}", "--search_space=augment=none"))
    assert rc == 0
    rows = read_csv(tuner_dir / "results.csv")
    assert len(rows) == trials and list(rows[0])[3] == "val_recall_at_min_precision"
    for r in rows:
        s = score(tuner_dir, r["trial"])
        assert len(s["per_fold"]) == 2
        assert s["metrics"]["val_recall_at_min_precision"] == pytest.approx(
            np.mean([f["recall_at_precision"] for f in s["per_fold"]]))
        assert float(r["val_recall_at_min_precision"]) == pytest.approx(s["metrics"]["val_recall_at_min_precision"])
    if calls is not None:
        assert len(calls) == 2 * trials  # every trial trained once per tuning fold
        assert len({c.lr_fine_tune for c in calls}) == trials  # the Gaussian process proposed new values
    split = json.loads((tuner_dir / "tuning_split.json").read_text())
    scored = [set(f["score"]) for f in split["tuning_folds"]]
    assert len(scored) == 2 and not scored[0] & scored[1] and not (scored[0] | scored[1]) & set(split["held_out"])


def test_overwrite_starts_over_where_other_settings_are_refused(workspace, monkeypatch, capsys):
    root, data, _ = workspace
    tuner_dir = root / "overwrite"
    calls = fake_training(monkeypatch)
    args = tiny_flags(root, data, "--pretrain=none", "--tuner=random", f"--tuner_dir={tuner_dir}",
                      "--search_space=augment=none")
    assert tune(*args, "--max_trials=2") == 0
    assert len(calls) == 2
    assert tune(*args, "--max_trials=2", "--seed=9") == 2
    assert "seed" in capsys.readouterr().err and len(calls) == 2
    assert tune(*args, "--max_trials=1", "--seed=9", "--overwrite") == 0
    assert len(calls) == 3 and calls[-1].seed == 9
    assert [r["trial"] for r in read_csv(tuner_dir / "results.csv")] == ["0"]
    assert json.loads((tuner_dir / "search.json").read_text())["base_config"]["seed"] == 9


def test_failing_trials_are_reported_and_stop_the_search(workspace, monkeypatch, capsys):
    root, data, _ = workspace
    tuner_dir = root / "failing"

    def broken(*a, **k):
        raise FloatingPointError("loss is NaN")

    monkeypatch.setattr(cv, "train_fold", broken)
    rc = tune(*tiny_flags(root, data, "--pretrain=none", "--tuner=random", "--max_trials=5",
                          f"--tuner_dir={tuner_dir}", "--search_space=augment=none"))
    assert rc == 1
    assert "search stopped" in capsys.readouterr().err
    rows = read_csv(tuner_dir / "results.csv")
    assert [r["status"] for r in rows] == ["FAILED"] * 3  # Keras Tuner stops after 3 failures in a row
    assert not (tuner_dir / "best.cfg").exists()


def test_image_size_is_searched_on_the_same_examples_and_split(workspace, monkeypatch):
    root, data, _ = workspace
    tuner_dir = root / "sizes"
    calls = fake_training(monkeypatch)
    seen = []
    fake = cv.train_fold

    def sizes(context, fold, *a, **k):
        examples = context.examples
        seen.append((context.config.image_size, examples.images.shape[1:], tuple(examples.ids), tuple(fold.test_idx)))
        return fake(context, fold, *a, **k)

    monkeypatch.setattr(cv, "train_fold", sizes)
    args = [a for a in tiny_flags(root, data, "--pretrain=none") if not a.startswith("--image_size")]
    assert tune(*args, "--tuner=random", "--max_trials=4", f"--tuner_dir={tuner_dir}",
                "--search_space=augment=none", "--search_space=image_size=32,48") == 0
    assert len(calls) == 4 and {s for s, *_ in seen} == {32, 48}
    assert all(shape == (s, s, 1) for s, shape, *_ in seen)
    assert len({(ids, test) for *_, ids, test in seen}) == 1  # one pool, one split, whatever the size
    assert "image_size" in read_csv(tuner_dir / "results.csv")[0]
