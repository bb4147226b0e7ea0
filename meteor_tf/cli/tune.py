"""python -m meteor_tf.tune — search hyperparameters with Keras Tuner for your own station's captures.

    python -m meteor_tf.tune --data=/captures --tuner=bayesian --max_trials=20
    python -m meteor_tf.tune --flagfile=flags/quickstart.cfg --search_space=depth=18,34 --tuner=hyperband
    python -m meteor_tf.main --flagfile=runs/tuning/best.cfg          # evaluate / train the best configuration

Every experiment flag of `python -m meteor_tf.main` works here too (they are defined once, in meteor_tf.flags): they
set what is not searched, and an experiment flag given explicitly fixes its hyperparameter (``--depth=18``: depth is
not searched). ``--search_space=NAME=SPEC`` narrows or widens one hyperparameter (meteor_tf.tuning.hypermodel lists
them and their default ranges). Own flags: ``--tuner``, ``--max_trials``, ``--objective``
(+ ``--objective_precision``), ``--tune_folds``, ``--tuner_dir``, ``--overwrite``, ``--search_space``,
``--hyperband_*``, ``--bayesian_initial_points``, ``--keep_trial_weights``.

Held-out data: the test part of the split `main` makes from the same flags (``--folds=1``: the hold-out part;
``--folds=K``: fold 0's test part) is dropped before any trial; trials are scored on a split of the rest
(``--tune_folds``). See meteor_tf.tuning.tuners.

Resume: the search lives in ``--tuner_dir`` (Keras Tuner's project directory). Rerunning the same command continues
it: finished trials are kept, a trial that was running is rerun with the same hyperparameters and resumes from its
finished phases, and a larger ``--max_trials`` extends the search. ``--overwrite`` starts over (deletes the directory).
A rerun with other settings is refused (search.json records them).

Outputs in ``--tuner_dir``: results.md and results.csv (all trials, best first), objective.png (objective per trial),
best.cfg (the best trial as flags for ``python -m meteor_tf.main --flagfile=``), best.json, tuning_split.json, and
Keras Tuner's own oracle.json / trial_*/trial.json; each trial's training run is in trial_<id>/run.

Distributed tuning (Keras Tuner's own mode): one chief process runs the oracle (it trains nothing) and every worker
asks it for trials over gRPC. Run the same command (same flags, same ``--tuner_dir``, ideally on a shared file system)
with these environment variables:

    KERASTUNER_TUNER_ID=chief  KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m meteor_tf.tune ...
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m meteor_tf.tune ...
    KERASTUNER_TUNER_ID=tuner1 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m meteor_tf.tune ...

KERASTUNER_ORACLE_IP/PORT is the address the chief listens on and the workers connect to (127.0.0.1 on one machine);
each worker needs its own KERASTUNER_TUNER_ID. The chief writes the reports when the last worker is done; each worker
prints the best trial it can read from the tuner directory. ``--overwrite`` is honoured by the chief only. A worker
that dies leaves its trial running in the chief's oracle: stop the chief and rerun everything to resume (the trial is
retried). The chief waits for its workers for as long as they take (Keras Tuner's client timeout is one hour per
request).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from absl import flags

from meteor_tf import flags as mflags
from meteor_tf.cli import _common

mflags.define_flags()
FLAGS = flags.FLAGS

flags.DEFINE_enum("tuner", "random", ["random", "hyperband", "bayesian"],
                  "Keras Tuner search: random search, Hyperband (successive halving over epoch budgets) or Bayesian "
                  "optimisation (Gaussian process).")
flags.DEFINE_integer("max_trials", 10, "Trials to run (all kinds; with --tuner=hyperband a cap on its brackets, "
                     "0 = no cap). Rerun with a larger value to extend a finished search.", lower_bound=0)
flags.DEFINE_enum("objective", "f1", ["f1", "accuracy", "auc", "recall_at_precision"],
                  "What a trial maximises on the tuning split (meteor class, threshold 0.5): F1, accuracy, AUC, or "
                  "the meteor recall reachable at --objective_precision.")
flags.DEFINE_float("objective_precision", 0.95, "Meteor precision the recall_at_precision objective must keep.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("tune_folds", 1, "1: score a trial on one grouped, stratified --val_fraction split of the "
                     "training data; k > 1: by the mean over k folds of it (k times the training).")
flags.DEFINE_string("tuner_dir", os.path.join("runs", "tuning"), "Directory of the search (Keras Tuner project, "
                    "trials, reports). Rerunning with the same directory resumes.")
flags.DEFINE_boolean("overwrite", False, "Delete --tuner_dir's search and start over (default: resume it).")
flags.DEFINE_multi_string("search_space", [],
                          "NAME=SPEC, repeatable: the choices of one hyperparameter (depth=18,34), a float range "
                          "(lr_head=0.001:0.1, log scale for learning rates; LOW:HIGH:STEP), or one value to fix "
                          "it. Names: depth, pretrain, head_layers, head_units, head_dropout, lr_head, lr_fine_tune, "
                          "frozen_convs, augment, image_size, sgdr_t_mul.")
flags.DEFINE_integer("hyperband_max_epochs", 0, "Hyperband's largest epoch budget (0: the larger of --head_epochs "
                     "and --fine_tune_epochs). A budget E trains each phase ceil(E / max × its epochs flag) epochs.",
                     lower_bound=0)
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor (>= 2).", lower_bound=2)
flags.DEFINE_integer("hyperband_iterations", 1, "Hyperband iterations (full sweeps over its brackets).",
                     lower_bound=1)
flags.DEFINE_integer("bayesian_initial_points", 0, "Random trials before the Gaussian process takes over (0: Keras "
                     "Tuner's default, 3 per searched hyperparameter).", lower_bound=0)
flags.DEFINE_boolean("keep_trial_weights", False, "Keep each scored trial's weight files (default: deleted once the "
                     "trial is scored; the best configuration is retrained by meteor_tf.main).")

log = logging.getLogger("meteor_tf")


def _check_flags() -> None:
    """The ranges absl cannot declare for this command's own flags, each named."""
    if FLAGS.tune_folds < 1:
        raise ValueError(f"--tune_folds must be >= 1, got {FLAGS.tune_folds}")
    if FLAGS.hyperband_max_epochs < 0:
        raise ValueError(f"--hyperband_max_epochs must be >= 0, got {FLAGS.hyperband_max_epochs}")
    if FLAGS.bayesian_initial_points < 0:
        raise ValueError(f"--bayesian_initial_points must be >= 0, got {FLAGS.bayesian_initial_points}")


def main(argv) -> int:
    _common.no_positional_args(argv)
    _common.setup_logging()
    from meteor_tf.data import DataError
    from meteor_tf.models.weights import WeightsNotFoundError
    from meteor_tf.tuning import hypermodel as hm
    from meteor_tf.tuning import report, search, tuners

    try:
        role = search.distributed_role()
        base = mflags.config_from_flags()
        given = [name for name in hm.FLAG_FIXES if FLAGS[name].present]
        space = hm.search_space(base, FLAGS.search_space, given)
        hm.check_space(base, space)
        _check_flags()
        tuners.check_tuner_args(FLAGS.tuner, FLAGS.max_trials, FLAGS.hyperband_factor, FLAGS.hyperband_iterations)
        if not 0 < FLAGS.objective_precision <= 1:
            raise ValueError(f"--objective_precision must be in (0, 1], got {FLAGS.objective_precision}")
        hypermodel = hm.MeteorHyperModel(base, space, max_epochs=FLAGS.hyperband_max_epochs or None)
        tuner_dir = Path(FLAGS.tuner_dir).resolve()
        settings = search.search_settings(
            base, space, tuner=FLAGS.tuner, objective=FLAGS.objective, tune_folds=FLAGS.tune_folds,
            objective_precision=FLAGS.objective_precision, hyperband_max_epochs=FLAGS.hyperband_max_epochs,
            hyperband_factor=FLAGS.hyperband_factor, hyperband_iterations=FLAGS.hyperband_iterations,
            bayesian_initial_points=FLAGS.bayesian_initial_points)
        overwrite = FLAGS.overwrite and role != "worker"
        if FLAGS.overwrite and role == "worker":
            log.warning("--overwrite is the chief's to apply; this worker ignores it")
        if role != "worker":
            search.check_tuner_dir(tuner_dir, settings, overwrite)
        elif search.has_search_record(tuner_dir):
            search.check_tuner_dir(tuner_dir, settings, False)  # a worker with other flags than its chief
        if role != "chief":
            search.check_data(base)
            tuners.check_imagenet_weights(hypermodel)
        data = tuners.TuningData(base, tuner_dir, FLAGS.tune_folds)
        runner = tuners.TrialRunner(hypermodel, data, FLAGS.objective, FLAGS.objective_precision,
                                    FLAGS.keep_trial_weights)
        tuner = tuners.make_tuner(FLAGS.tuner, runner, tuner_dir, max_trials=FLAGS.max_trials, overwrite=overwrite,
                                  hyperband_factor=FLAGS.hyperband_factor,
                                  hyperband_iterations=FLAGS.hyperband_iterations,
                                  bayesian_initial_points=FLAGS.bayesian_initial_points)
    except (ValueError, DataError, WeightsNotFoundError) as e:
        return _common.bad_input(e)
    if role != "worker":
        search.write_search_record(tuner_dir, settings)
    objective = tuners.objective_name(FLAGS.objective)
    log.info("%s search (%s) in %s, objective %s, up to %s trial(s); search space:", FLAGS.tuner, role, tuner_dir,
             objective, FLAGS.max_trials or "Hyperband's")
    for name, desc in hypermodel.describe_space().items():
        log.info("  %-13s %s", name, desc)
    stopped = None
    try:
        tuner.search(verbose=1)
    except tuners.SearchInputError as e:
        return _common.bad_input(e)
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command to resume the search in {tuner_dir}", file=sys.stderr)
        return 130
    except RuntimeError as e:  # Keras Tuner stops after too many failed trials in a row
        stopped = e

    if role == "worker":
        best = report.best_trial(report.load_oracle(tuner_dir, objective))
        if best is None:
            print(f"worker {os.environ['KERASTUNER_TUNER_ID']} done; the chief writes the results "
                  f"(no finished trial readable in {tuner_dir})")
        else:
            print(f"best trial: {best.trial_id} {objective}={best.score:.4f}")
        if stopped is not None:
            print(f"error: the search stopped: {stopped}", file=sys.stderr)
            return 1
        return 0
    paths = report.write_results(tuner_dir, tuner.oracle, objective, hypermodel, settings)
    tuner.results_summary(num_trials=3)
    best = report.best_trial(tuner.oracle)
    if stopped is not None:
        print(f"error: the search stopped: {stopped}\n(results so far: {paths['markdown']})", file=sys.stderr)
        return 1
    if best is None:
        print(f"error: no trial finished; see {paths['markdown']}", file=sys.stderr)
        return 1
    print(f"best trial: {best.trial_id} {objective}={best.score:.4f}")
    print(f"results: {paths['markdown']} ({paths['csv'].name}, {paths['plot'].name})")
    print(f"best flags: {paths['flagfile']}  ->  python -m meteor_tf.main --flagfile={paths['flagfile']}")
    return 0


# the console script `meteor-tune`; --help lists the experiment flags and this command's own
run = _common.global_entry_point(main, __doc__, ["meteor_tf.flags", __name__])


if __name__ == "__main__":
    run()
