"""The main command and the paper's flagfiles: every flagfile parses, ImageNet columns fail fast offline with the
flag to use, and run end to end with weights the test writes (the quick twins' wiring test)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from safetensors.numpy import save_file

from meteor_tf import flags as mflags
from meteor_tf.experiment import runner as cv
from tests.conftest import write_capture_folder
from tests.models.resnet_reference import random_state_dict

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"table2_augmentation": ("augment", {"none", "on_side", "complete"}),
          "fig3_depth": ("depth", {18, 34, 50, 101}),
          "table3_pretraining": ("pretrain", {"imagenet", "fashion_mnist", "none"}),
          "table4_fine_tuning": ("depth", {18, 34, 50})}


def configs_of(flagfile):
    mflags.define_flags()
    mflags.define_column_flag()
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["prog", f"--flagfile={flagfile}"])
        return mflags.configs_from_flags()
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_each_paper_flagfile_and_its_quick_twin_hold_the_table_columns(name):
    field, values = TABLES[name]
    full, quick = configs_of(ROOT / "flags" / f"{name}.cfg"), configs_of(ROOT / "flags" / f"{name}_quick.cfg")
    assert {getattr(c, field) for c in full} == values and {getattr(c, field) for c in quick} == values
    assert all(c.image_size == 224 and c.folds == 10 and c.data == "embedded" for c in full)
    assert all(c.image_size < 224 and c.folds < 10 for c in quick)
    # the twin changes sizes only, never what a column compares
    strip = dict(image_size=224, folds=10, head_epochs=7, fine_tune_epochs=7, fmnist_image_size=32,
                 fmnist_epochs=2, fmnist_examples=0, batch_size=32)
    assert [c.replace(**strip) for c in quick] == [c.replace(**strip) for c in full]


def test_quickstart_is_the_papers_best_recipe_at_a_cpu_size():
    (config,) = configs_of(ROOT / "flags" / "quickstart.cfg")
    assert (config.data, config.depth, config.pretrain, config.fine_tune) == ("embedded", 18, "fashion_mnist", True)


def _env(tmp_path):
    empty = tmp_path / "empty_home"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT), HOME=str(empty),
               XDG_CACHE_HOME=str(empty / ".cache"), KERAS_HOME=str(empty / ".keras"))
    for var in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE"):
        env.pop(var, None)
    return env


def test_imagenet_without_weights_offline_stops_at_once_naming_the_flag(tmp_path):
    data = write_capture_folder(tmp_path / "captures", meteors=6, non_meteors=6)
    cmd = [sys.executable, "-m", "meteor_tf.main", f"--data={data}", "--pretrain=imagenet", "--depth=18",
           f"--output_dir={tmp_path / 'runs'}", "--run_id=offline"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "No ImageNet weights for ResNet-18" in done.stderr and "--weights=PATH" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "runs" / "offline").glob("fold_*"))  # nothing trained, no random init


def test_imagenet_quick_twin_column_runs_with_weights_the_test_writes(tmp_path):
    imagenet = [c for c in configs_of(ROOT / "flags" / "table2_augmentation_quick.cfg") if c.pretrain == "imagenet"]
    config = imagenet[0]
    weights = tmp_path / f"resnet{config.depth}.safetensors"
    save_file(random_state_dict(config.depth, seed=1), str(weights))
    data = write_capture_folder(tmp_path / "captures", meteors=12, non_meteors=9)
    config = config.replace(data=str(data), weights=str(weights), image_size=32, folds=2, head_epochs=1,
                            val_fraction=0.25,
                            fine_tune_epochs=1, batch_size=8, head_units=(16,), head_dropout=(0.1,),
                            output_dir=str(tmp_path / "runs"), retrain_final=False)
    result = cv.run_experiment(config)
    assert set(result["stats"]) == {"head", "fine_tune"}
    run_dir = tmp_path / "runs" / config.derived_run_id()
    assert (run_dir / "initial_backbone.weights.h5").exists() and (run_dir / "summary.md").exists()
    assert config.normalization == "torch"  # torchvision ImageNet weights expect torchvision's mean/std


@pytest.mark.parametrize("module, own_flag", [("meteor_tf.main", "--depth"), ("meteor_tf.export", "--run"),
                                              ("meteor_tf.tune", "--tuner"), ("meteor_tf.data.cli", "--meteors"),
                                              ("meteor_tf.pretrain", "--epochs"), ("meteor_tf.evaluate", "--data"),
                                              ("meteor_tf.predict", "--input")])
def test_help_exits_0_and_lists_the_commands_own_flags_with_defaults(tmp_path, module, own_flag):
    for arg in ("--help", "--helpfull"):
        done = subprocess.run([sys.executable, "-m", module, arg], capture_output=True, text=True, cwd=ROOT,
                              env=_env(tmp_path), timeout=120)
        assert done.returncode == 0, done.stderr[-1000:]
        assert own_flag.lstrip("-") + ":" in done.stdout and "(default:" in done.stdout


def test_an_unknown_flag_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "meteor_tf.main", "--batch_siz=3"], capture_output=True, text=True,
                          cwd=ROOT, env=_env(tmp_path), timeout=120)
    assert done.returncode == 2 and "batch_size" in done.stderr and "Traceback" not in done.stderr
