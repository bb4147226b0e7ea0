"""The search space without training: restriction by flags and --search_space, conditional hyperparameters,
hyperparameters → ExperimentConfig, Hyperband epochs, the flagfile writer, the objective, and flag errors."""

import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import pytest
from absl import flags

from meteor_tf import flags as mflags
from meteor_tf.config import ExperimentConfig
from meteor_tf.tuning import hypermodel as hm
from meteor_tf.tuning import report

ROOT = Path(__file__).resolve().parents[2]
FLAGS = flags.FLAGS


def declared(model):
    hp = kt.HyperParameters()
    model.declare_hyperparameters(hp)
    return hp


def test_given_flags_fix_their_hyperparameters_and_search_space_narrows_the_rest():
    base = ExperimentConfig(depth=18, image_size=32, head_units=(16,), head_dropout=(0.1,))
    space = hm.search_space(base, ["lr_head=0.01:0.05", "augment=none,on_side", "sgdr_t_mul=2"],
                            given_flags=["depth", "image_size", "head_units", "head_dropout"])
    model = hm.MeteorHyperModel(base, space)
    hp = declared(model)
    tuned = model.tuned_names(hp)
    assert "depth" not in tuned and "image_size" not in tuned and "head_units_0" not in tuned
    assert "sgdr_t_mul" not in tuned  # one value = fixed
    assert {"pretrain", "lr_head", "lr_fine_tune", "frozen_convs", "augment"} <= set(tuned)
    assert hp.get("depth") == 18 and hp.get("image_size") == 32 and hp.get("head_units_0") == 16
    lr = [p for p in hp.space if p.name == "lr_head"][0]
    assert (lr.min_value, lr.max_value, lr.sampling) == (0.01, 0.05, "log")
    assert [p for p in hp.space if p.name == "augment"][0].values == ["none", "on_side"]


def test_hyperparameters_that_cannot_matter_are_conditional():
    base = ExperimentConfig()
    model = hm.MeteorHyperModel(base, hm.search_space(base, ["head_layers=1,2"]))
    hp = declared(model)
    hp.values["pretrain"] = "none"
    assert not hp.is_active("lr_head") and not hp.is_active("frozen_convs") and hp.is_active("lr_fine_tune")
    hp.values["pretrain"] = "fashion_mnist"
    assert hp.is_active("lr_head") and hp.is_active("frozen_convs")
    hp.values["head_layers"] = 1
    assert hp.is_active("head_units_0") and not hp.is_active("head_units_1")
    # a fixed from-scratch search does not even declare the head LR
    fixed = hm.MeteorHyperModel(base, hm.search_space(base, ["pretrain=none"]))
    assert "lr_head" not in fixed.tuned_names() and "frozen_convs" not in fixed.tuned_names()


def test_config_for_maps_values_to_the_experiment_config():
    base = ExperimentConfig(head_epochs=7, fine_tune_epochs=3)
    model = hm.MeteorHyperModel(base, hm.search_space(base))
    values = {"depth": 34, "pretrain": "imagenet", "image_size": 128, "augment": "complete", "head_layers": 2,
              "head_units_0": 256, "head_dropout_0": 0.3, "head_units_1": 128, "head_dropout_1": 0.05,
              "lr_head": 0.02, "lr_fine_tune": 0.0003, "frozen_convs": 9, "sgdr_t_mul": 1.0}
    c = model.config_for(values)
    assert (c.depth, c.pretrain, c.image_size, c.augment, c.frozen_convs) == (34, "imagenet", 128, "complete", 9)
    assert c.head_units == (256, 128) and c.head_dropout == (0.3, 0.05)
    assert (c.lr_head, c.lr_fine_tune, c.sgdr_t_mul) == (0.02, 0.0003, 1.0)
    assert (c.head_epochs, c.fine_tune_epochs) == (7, 3)
    # Hyperband: the budget scales both phases; the top budget is the flags' epochs; full_budget ignores it
    assert model.max_epochs == 7
    low = model.config_for({**values, "tuner/epochs": 1})
    mid = model.config_for({**values, "tuner/epochs": 3})
    top = model.config_for({**values, "tuner/epochs": 7})
    assert (low.head_epochs, low.fine_tune_epochs) == (1, 1)
    assert (mid.head_epochs, mid.fine_tune_epochs) == (3, 2)
    assert (top.head_epochs, top.fine_tune_epochs) == (7, 3)
    assert model.config_for({**values, "tuner/epochs": 1}, full_budget=True).head_epochs == 7


def test_build_returns_the_trials_classifier():
    base = ExperimentConfig(pretrain="none", image_size=32)
    model = hm.MeteorHyperModel(base, hm.search_space(base, ["depth=18", "head_layers=1", "head_units=8",
                                                              "image_size=32"], given_flags=["pretrain"]))
    net = model.build(kt.HyperParameters())
    assert net.input_shape == (None, 32, 32, 1)
    # Dense 512→8 and 8→2, and the head's BatchNorms on the 512 features and the 8 units (4 values per channel)
    assert net.get_layer("head").count_params() == 512 * 8 + 8 + 8 * 2 + 2 + 4 * (512 + 8)


@pytest.mark.parametrize("spec, message", [
    ("colour=blue", "unknown hyperparameter 'colour'"),
    ("depth=19", "depth=19 is not one of"),
    ("depth=18:50", "comma-separated list"),
    ("lr_head=0.1:0.01", "LOW < HIGH"),
    ("image_size=16", "image_size=16 is out of range"),
    ("depth", "expected NAME=VALUES"),
])
def test_bad_search_space_specs_name_the_flag(spec, message):
    with pytest.raises(ValueError, match="--search_space") as e:
        hm.search_space(ExperimentConfig(), [spec])
    assert message in str(e.value)


def test_conflicts_and_impossible_spaces_are_refused():
    with pytest.raises(ValueError, match="already fixed by --depth"):
        hm.search_space(ExperimentConfig(), ["depth=18,34"], given_flags=["depth"])
    base = ExperimentConfig(weights="/x/backbone.weights.h5")
    with pytest.raises(ValueError, match="--weights.*fix --depth"):
        hm.check_space(base, hm.search_space(base))
    base = ExperimentConfig(layout="keras", depth=50)
    with pytest.raises(ValueError, match="--layout=keras"):
        hm.check_space(base, hm.search_space(base))
    hm.check_space(base, hm.search_space(base, ["depth=50,101"]))  # fine


def test_lr_find_leaves_the_learning_rates_to_the_range_test():
    base = ExperimentConfig(lr_find=True)
    names = hm.MeteorHyperModel(base, hm.search_space(base)).tuned_names()
    assert "lr_head" not in names and "lr_fine_tune" not in names
    names = hm.MeteorHyperModel(base, hm.search_space(base, ["lr_head=0.01:0.1"])).tuned_names()
    assert "lr_head" in names


def test_flag_lines_parse_back_into_the_same_config(tmp_path):
    config = ExperimentConfig(depth=34, pretrain="none", head_units=(256, 64), head_dropout=(0.35, 0.05),
                              lr_head=0.012345678901234, lr_fine_tune=3.3e-05, fine_tune=False, cache_features=False,
                              augment="on_side", image_size=96, sgdr_t_mul=3.0, class_dirs=("yes", "no"),
                              data=str(tmp_path / "my captures"), weights=str(tmp_path / "w.weights.h5"))
    path = tmp_path / "best.cfg"
    report.write_flagfile(path, config, ["a comment"])
    mflags.define_flags()
    mflags.define_column_flag()
    FLAGS.unparse_flags()
    try:
        FLAGS(["main", f"--flagfile={path}"])
        assert mflags.configs_from_flags() == [config]
    finally:
        FLAGS.unparse_flags()


def _tune_in_process(*argv):
    from meteor_tf.cli import tune

    FLAGS.unparse_flags()
    FLAGS(["tune", *argv])
    try:
        return tune.main(["tune"])
    finally:
        FLAGS.unparse_flags()


@pytest.mark.parametrize("argv, message", [
    (["--search_space=colour=blue"], "--search_space"),
    (["--depth=18", "--search_space=depth=18,34"], "already fixed by --depth"),
    (["--tune_folds=0"], "--tune_folds"),
    (["--max_trials=0"], "--max_trials"),
    (["--weights=/nowhere.weights.h5"], "--weights"),
])
def test_tune_cli_reports_bad_flags_by_name(tmp_path, capsys, argv, message):
    rc = _tune_in_process(f"--tuner_dir={tmp_path / 't'}", "--data=embedded", *argv)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_tune_cli_refuses_a_half_set_distributed_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    monkeypatch.delenv("KERASTUNER_TUNER_ID", raising=False)
    assert _tune_in_process(f"--tuner_dir={tmp_path / 't'}") == 2
    err = capsys.readouterr().err
    assert "KERASTUNER_ORACLE_PORT" in err and "KERASTUNER_TUNER_ID" in err


def test_overwrite_refuses_a_directory_that_is_not_a_search(tmp_path, capsys):
    precious = tmp_path / "runs"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    assert _tune_in_process(f"--tuner_dir={precious}", "--overwrite") == 2
    assert "holds no search" in capsys.readouterr().err
    assert (precious / "keep.txt").exists()


def test_tune_help_lists_its_own_and_the_experiment_flags():
    done = subprocess.run([sys.executable, "-m", "meteor_tf.tune", "--helpfull"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout + done.stderr
    for flag in ("--tuner", "--max_trials", "--objective", "--tune_folds", "--tuner_dir", "--overwrite",
                 "--search_space", "--depth", "--head_units", "--folds"):
        assert flag in out, flag
    assert "--column" not in out  # main's own flag is not a tuning flag


def test_missing_imagenet_weights_stop_the_search_before_its_first_trial(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for var in ("XDG_CACHE_HOME", "TORCH_HOME", "KERAS_HOME"):
        monkeypatch.setenv(var, str(empty))
    for var in ("HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    tuner_dir = tmp_path / "t"
    assert _tune_in_process(f"--tuner_dir={tuner_dir}", "--data=embedded", "--search_space=depth=18") == 2
    err = capsys.readouterr().err
    assert "No ImageNet weights for ResNet-18" in err and "--search_space=pretrain=fashion_mnist,none" in err
    assert not list(tuner_dir.glob("trial_*"))


@pytest.mark.parametrize("direction", ["max", "min"])
def test_equal_scores_rank_the_earlier_trial_first_whatever_the_oracles_order(direction):
    # a reloaded search may hold oracle.trials in another order: Keras Tuner's get_best_trials then names another
    # best trial among equal scores (seen: a resumed search's best.json changed from trial 0 to trial 1)
    from types import SimpleNamespace

    from meteor_tf.tuning.report import best_trial, ranked_trials

    better = 0.9 if direction == "max" else 0.1
    trials = [SimpleNamespace(trial_id=i, status=s, score=v) for i, s, v in
              (("10", "COMPLETED", 0.5), ("2", "COMPLETED", 0.5), ("1", "RUNNING", None), ("3", "COMPLETED", better),
               ("0", "COMPLETED", 0.5))]
    for order in (trials, trials[::-1]):
        oracle = SimpleNamespace(trials={t.trial_id: t for t in order}, objective=SimpleNamespace(direction=direction))
        assert [t.trial_id for t in ranked_trials(oracle)] == ["3", "0", "2", "10", "1"]
        assert best_trial(oracle).trial_id == "3"
