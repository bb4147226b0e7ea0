"""meteor-evaluate: every figure agrees with the per-file probabilities it reports, through meteor-predict's path."""

import csv

import numpy as np
import pytest
from PIL import Image

from meteor_tf.evaluation import real_captures as rc
from meteor_tf.serving import client
from tests.serving.conftest import run_cli


def _labelled_folder(root, rng):
    """Meteors 96x64 frames, non-meteors 48x48 crops: size alone separates them, as in a biased real folder."""
    rows = []
    for cls, n, shape in (("meteor", 7, (64, 96)), ("non_meteor", 6, (48, 48))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            name = f"{cls}/{'camA' if i % 2 else 'camB'}_{i}.png"
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / name)
            rows.append({"file": name, "label": cls, "label_strength": "strong", "source": "camA" if i % 2 else "camB"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "label_strength", "source"])
        w.writeheader()
        w.writerows(rows)
    (root / "meteor" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_figures_follow_from_the_per_file_probabilities(tmp_path, exported_run):
    data = _labelled_folder(tmp_path / "labelled", np.random.default_rng(0))
    with client.open_backend(model=str(exported_run["version_dir"])) as backend:
        result = rc.evaluate_folder(backend, data, progress=False)
        threshold = backend.threshold
    files = [f for f in result["files"] if f["meteor_probability"] is not None]
    assert result["images"] == 14 and result["scored"] == 13 and len(result["errors"]) == 1
    y = np.array([f["label"] == "meteor" for f in files])
    p = np.array([f["meteor_probability"] for f in files])
    at = result["whole"]["at_threshold"]
    assert at["threshold"] == threshold
    assert at["meteors_found"] == int(((p >= threshold) & y).sum())
    assert at["false_alarms"] == int(((p >= threshold) & ~y).sum())
    assert result["whole"]["at_0.5"]["meteors_found"] == int(((p >= 0.5) & y).sum())
    from sklearn.metrics import roc_auc_score
    assert result["whole"]["auc"] == pytest.approx(roc_auc_score(y, p))
    # per source, the counts add up to the whole
    sources = result["per_source"]["sources"]
    assert set(sources) == {"camA", "camB"}
    assert sum(s["meteors_found"] for s in sources.values()) == at["meteors_found"]
    assert sum(s["false_alarms"] for s in sources.values()) == at["false_alarms"]
    # the size-only rule sees the bias of this folder
    assert result["size_rule_auc"] > 0.95
    crops = [f["centre_crop_probability"] for f in files]
    assert all(c is not None for c in crops)
    assert result["centre_crops"]["at_0.5"]["meteors"] == 7  # the unreadable one is not cropped
    report = rc.markdown(result)
    assert "Size/aspect-only rule" in report and "camA" in report


def test_cli_writes_the_report_and_the_misses_sheet(tmp_path, exported_run):
    data = _labelled_folder(tmp_path / "labelled", np.random.default_rng(1))
    out = tmp_path / "report"
    done = run_cli(["-m", "meteor_tf.evaluate", f"--data={data}", f"--model={exported_run['version_dir']}", f"--out={out}", "--nocrops"],
                   tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "report.md").exists() and (out / "report.json").exists() and (out / "misses.png").exists()
    assert "meteors found" in done.stdout


def test_cli_errors_are_one_line(tmp_path):
    done = run_cli(["-m", "meteor_tf.evaluate", "--model=nowhere"], tmp_path)
    assert done.returncode == 2 and "--data" in done.stderr
    done = run_cli(["-m", "meteor_tf.evaluate", f"--data={tmp_path}", "--model=nowhere"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
