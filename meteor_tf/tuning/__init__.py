"""Hyperparameter searches with Keras Tuner over the paper's choices (`python -m meteor_tf.tune`).

- `hypermodel`: `MeteorHyperModel`, the search space ↔ `ExperimentConfig`, `search_space()` (restricting it).
- `tuners`: random search / Hyperband / Bayesian tuners whose trials run `experiment.fold.run_folds` on a
  tuning split that never holds the user's held-out test data (`TuningData`, `TrialRunner`, `make_tuner`).
- `search`: a search before its first trial: distributed role, the `search.json` settings a rerun must match, the
  tuner-directory and data checks.
- `report`: results table (markdown + CSV), objective plot, `best.cfg` flagfile for `python -m meteor_tf.main`.

See docs/TUNING.md.
"""
