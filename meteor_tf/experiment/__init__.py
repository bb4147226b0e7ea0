"""The experiment: the paper's two-phase recipe trained and tested fold by fold, resumable, with its reports.

- `runner`: `run_experiment` (cross-validation, summary, the final model) — what `python -m meteor_tf.main` runs.
- `fold`: one fold (`train_fold`) and the fold loop (`run_folds`), shared by the runner and the tuner's trials;
  the folds themselves (`make_folds`) and the split check.
- `phase`: one phase of a fold, resumable (epoch logs, checkpoints, per-epoch backup, the phase's LR).
- `features`: the frozen backbone's features computed once, and the head trained on them (`CachedHead`).
- `model_setup`: the pretrained backbone file every fold starts from, and the fold's model.
- `runtime`: the tf.distribute strategy, precision policy and global batch of a run.

The run directory's files are known to `meteor_tf.run_dir` alone.
"""
