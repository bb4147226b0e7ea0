"""python -m meteor_tf.main — the experiment runner: cross-validate the paper's recipe, report, retrain the final model.

    python -m meteor_tf.main --depth=50 --pretrain=imagenet
    python -m meteor_tf.main --flagfile=flags/quickstart.cfg
    python -m meteor_tf.main --flagfile=flags/table3_pretraining_quick.cfg    # several --column runs

Rerunning the same command continues an interrupted run (see meteor_tf.experiment.runner).
"""

from __future__ import annotations

import logging

from absl import flags

from meteor_tf import flags as mflags
from meteor_tf.cli import _common

mflags.define_flags()
mflags.define_column_flag()
mflags.define_export_flags()
FLAGS = flags.FLAGS


def main(argv) -> int:
    _common.no_positional_args(argv)
    _common.setup_logging()
    from meteor_tf.experiment.runner import run_experiment
    from meteor_tf.run_dir import ConfigMismatchError
    from meteor_tf.data import DataError
    from meteor_tf.models.weights import WeightsNotFoundError

    try:
        configs = mflags.configs_from_flags()
    except ValueError as e:
        return _common.bad_input(e)
    if FLAGS.export and not all(c.retrain_final for c in configs):
        return _common.bad_input("--export exports the final model: it needs --retrain_final")
    log = logging.getLogger("meteor_tf")
    failed = []
    for i, config in enumerate(configs):
        if len(configs) > 1:
            log.info("column %d/%d: %s", i + 1, len(configs), FLAGS.column[i])
        try:
            result = run_experiment(config, progress=log.info)
        except (WeightsNotFoundError, ConfigMismatchError, DataError) as e:
            # bad input: say what and how to fix it, without a traceback; other columns still run
            _common.bad_input(e)
            failed.append(FLAGS.column[i] if FLAGS.column else "run")
            continue
        _print_result(result)
        if FLAGS.export:
            from meteor_tf.serving.export import ExportError

            try:
                export_final(result, FLAGS.export_dir)
            except ExportError as e:
                _common.bad_input(e)
                failed.append(f"export of {FLAGS.column[i] if FLAGS.column else 'run'}")
    if failed:
        return _common.bad_input(f"{len(failed)} of {len(configs)} run(s) could not run: {'; '.join(failed)}")
    return 0


def export_final(result: dict, export_dir: str):
    """Exports the run's final model (`serving.export.export_final`) and says how to serve it; None when absent."""
    from meteor_tf.serving import export

    version_dir = export.export_final(result, export_dir)
    if version_dir is not None:
        print(f"exported: {version_dir} (serve it: tensorflow_model_server --rest_api_port=8501 --model_name=meteor "
              f"--model_base_path={version_dir.parent.resolve()})")
    return version_dir


def _print_result(result: dict) -> None:
    from meteor_tf.evaluation import metrics as m
    from meteor_tf.evaluation.report import ROWS

    for phase, label in ROWS:
        if phase in result["stats"]:
            s = result["stats"][phase]
            print(f"{label:>17}: accuracy {m.format_mean_std(s['accuracy'])}, precision "
                  f"{m.format_mean_std(s['precision'])}, recall {m.format_mean_std(s['recall'])}, "
                  f"F1 {m.format_mean_std(s['f1'], percent=False)}")
    t = result["threshold"]
    print(f"recall-first threshold {t['value']:.4f}: recall {m.format_mean_std(t['at_threshold']['recall'])}, "
          f"precision {m.format_mean_std(t['at_threshold']['precision'])} "
          f"(at 0.5: {m.format_mean_std(t['at_0.5']['precision'])})")


run = _common.global_entry_point(main, __doc__, ["meteor_tf.flags"])  # the console script `meteor-train`


if __name__ == "__main__":
    run()
