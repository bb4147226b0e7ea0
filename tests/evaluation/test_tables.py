"""The paper-table report (`python -m meteor_tf.tables`): finished runs grouped by the settings that make them
comparable, each row beside the paper's figure."""

import json

from meteor_tf.evaluation.tables import paper_tables


def _finished_run(root, name, accuracy, **config):
    run = root / name
    run.mkdir()
    base = {"image_size": 64, "folds": 3, "head_epochs": 3, "fine_tune_epochs": 7, "batch_size": 32,
            "data": "embedded", "layout": "torchvision", "pretrain": "fashion_mnist", "depth": 18, "augment": "none"}
    stats = {"head": {"accuracy": {"mean": accuracy - 0.1, "std": 0.01}},
             "fine_tune": {"accuracy": {"mean": accuracy, "std": 0.02}, "f1": {"mean": 0.7, "std": 0.01}}}
    (run / "metrics.json").write_text(json.dumps({"stats": stats, "config": {**base, **config}}))


def test_runs_are_grouped_by_input_rule_and_older_runs_count_as_resize(tmp_path):
    _finished_run(tmp_path, "detect_run", 0.70, input_rule="detect")
    _finished_run(tmp_path, "resize_run", 0.66, input_rule="resize")
    _finished_run(tmp_path, "old_run", 0.64)  # written before input rules existed
    text = paper_tables(str(tmp_path))
    groups = [block for block in text.split("### Runs with ")[1:]]
    assert len(groups) == 2
    detect = next(g for g in groups if "input_rule=detect" in g)
    resize = next(g for g in groups if "input_rule=resize" in g)
    assert "`detect_run`" in detect and "`resize_run`" not in detect and "`old_run`" not in detect
    assert "`resize_run`" in resize and "`old_run`" in resize
    row = next(line for line in detect.splitlines() if "`detect_run`" in line)
    assert row.startswith("| 3 | Fashion-MNIST-18 | 94±1% | 60±1% | 96±1% | 70±2% | 0.70±0.01 |")


def test_no_runs_says_so(tmp_path):
    assert "No finished runs under" in paper_tables(str(tmp_path))
