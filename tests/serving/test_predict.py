"""The folder classifier: a station's night of captures (nested folders, every format, bad files) → CSV, review
folders that never overwrite, TFLite and Grad-CAM, and the CLI's one-line errors.
(The same folder through a running server: tests/serving/test_server.py.)"""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meteor_tf.serving import client
from meteor_tf.serving import predict as fp
from tests.serving.serving_helpers import (BAD_FILES, GOOD_FILES, free_port, served,  # noqa: F401 — fixture
                                           write_station_folder)


@pytest.fixture()
def station(tmp_path):
    return write_station_folder(tmp_path / "captures")


@pytest.fixture(scope="module")
def backend(served):
    return client.LocalBackend(served["model_dir"])


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_capture_gets_a_row_with_the_exports_probability_and_bad_files_their_reason(station, backend,
                                                                                         tmp_path):
    output = tmp_path / "results.csv"
    summary = fp.classify_folder(backend, station, output=output, batch_size=4, progress=False)
    rows = {r["path"]: r for r in fp.read_csv(output)}
    assert list(rows) == sorted(GOOD_FILES + tuple(BAD_FILES))  # recursive, path order; .txt and hidden left out
    assert set(next(iter(rows.values()))) == {"path", "meteor_probability", "label", "error"}
    for name, reason in BAD_FILES.items():
        assert reason in rows[name]["error"] and rows[name]["label"] == "" and rows[name]["meteor_probability"] == ""
    for name in GOOD_FILES:  # the export's own answer on the same bytes (TIFF: the pixels training reads)
        data = client.prepare_image_bytes((station / name).read_bytes())
        want = backend.model.predict_bytes([data])["meteor_probability"][0]
        p = float(rows[name]["meteor_probability"])
        assert p == pytest.approx(float(want), abs=2e-6) and rows[name]["error"] == ""
        assert rows[name]["label"] == ("meteor" if p >= backend.threshold else "non_meteor")
    assert summary.counts["meteor"] + summary.counts["non_meteor"] == len(GOOD_FILES)
    assert {r.path for r in summary.errors} == set(BAD_FILES)
    text = summary.format()
    assert f"{len(GOOD_FILES) + len(BAD_FILES)} files" in text and "bad/truncated.png: cannot decode" in text
    assert f"threshold {backend.threshold:.4f} (the model's recall-first threshold)" in text


def test_threshold_relabels_from_the_probabilities(station, backend):
    everything = fp.classify_folder(backend, station, threshold=0.0, progress=False)
    assert everything.counts == {"meteor": len(GOOD_FILES), "non_meteor": 0}
    probabilities = sorted(float(r.meteor_probability) for r in everything.results if not r.error)
    gap = int(np.argmax(np.diff(probabilities)))  # a threshold in the widest gap: both labels, no ties
    cut = (probabilities[gap] + probabilities[gap + 1]) / 2
    some = fp.classify_folder(backend, station, threshold=cut, progress=False)
    assert some.counts == {"meteor": len(GOOD_FILES) - gap - 1, "non_meteor": gap + 1}
    assert "(--threshold)" in some.format()


def test_review_folders_get_copies_named_by_score_and_nothing_is_ever_overwritten(station, backend, tmp_path):
    review = tmp_path / "review"
    before = {p: digest(p) for p in station.rglob("*") if p.is_file()}
    first = fp.classify_folder(backend, station, sort_dir=review, progress=False)
    assert {p: digest(p) for p in station.rglob("*") if p.is_file()} == before  # originals untouched
    for r in first.results:
        if r.error:
            assert r.sorted_to is None
            continue
        target = review / r.label / fp.review_name(r.path, r.meteor_probability)
        assert r.sorted_to == str(target) and digest(target) == before[station / r.path]
        assert target.name.endswith(f"_p-{r.meteor_probability:.3f}{target.suffix}")
    second = fp.classify_folder(backend, station, sort_dir=review, progress=False)  # same names again: _1
    copies = sorted(p.name for p in review.rglob("*") if p.is_file())
    assert len(copies) == 2 * len(GOOD_FILES)
    for r in second.results:
        if not r.error:
            placed = Path(r.sorted_to)
            assert placed.stem.endswith("_1") and digest(placed) == digest(station / r.path)


def test_move_takes_the_captures_into_the_review_folders_and_loses_none(station, backend, tmp_path):
    review = station / "review"  # inside the input: its files must not be classified again
    summary = fp.classify_folder(backend, station, sort_dir=review, move=True, progress=False)
    moved = sorted(p for p in review.rglob("*") if p.is_file())
    assert len(moved) == len(GOOD_FILES) and not any((station / name).exists() for name in GOOD_FILES)
    assert all((station / name).exists() for name in BAD_FILES)  # never deleted, never moved
    again = fp.classify_folder(backend, station, sort_dir=review, progress=False)
    assert {r.path for r in again.results} == set(BAD_FILES)  # the review folder inside the input is left out
    assert summary.moved and "moved" in summary.format()


def test_existing_output_is_refused_unless_overwrite(station, backend, tmp_path):
    output = tmp_path / "results.csv"
    output.write_text("earlier results\n")
    with pytest.raises(FileExistsError, match="--overwrite"):
        fp.classify_folder(backend, station, output=output, progress=False)
    assert output.read_text() == "earlier results\n"
    fp.classify_folder(backend, station, output=output, overwrite=True, progress=False)
    assert len(fp.read_csv(output)) == len(GOOD_FILES) + len(BAD_FILES)


def test_an_output_folder_is_refused_before_any_work_even_with_overwrite(station, backend, tmp_path):
    # it used to classify everything, then fail renaming partial.DIR onto the folder without saying so
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder.*predictions.csv"):
        fp.classify_folder(backend, station, output=folder, overwrite=True, progress=False)
    assert not any(folder.iterdir()) and not (tmp_path / "partial.results").exists()


def test_a_failed_final_rename_names_the_file_holding_the_rows(tmp_path):
    writer = fp._CsvWriter(tmp_path / "out.csv", with_sorted=False)
    writer.write([fp.FileResult(path="a.jpg", meteor_probability=0.5, label="meteor")])
    (tmp_path / "out.csv").mkdir()  # something took the name during the run
    with pytest.raises(OSError, match="every row is in .*partial.out.csv"):
        writer.finish()
    assert "a.jpg" in (tmp_path / "partial.out.csv").read_text()


def test_tflite_model_classifies_the_folder_like_the_savedmodel(station, backend, served):
    lite = fp.classify_folder(client.open_backend(model=served["tflite"]["float"]), station, progress=False)
    saved = fp.classify_folder(backend, station, progress=False)
    for a, b in zip(lite.results, saved.results):
        assert a.path == b.path and (a.error is None) == (b.error is None)
        if a.error is None:
            assert a.meteor_probability == pytest.approx(b.meteor_probability, abs=1e-4)
    assert "TFLite model" in lite.format()


@pytest.mark.parametrize("source", ["savedmodel", "run_dir"])
def test_grad_cam_overlays_one_png_per_classified_capture(station, served, tmp_path, source):
    backend = client.LocalBackend(served["model_dir"])
    keras_model = {"savedmodel": None, "run_dir": served["run_dir"]}[source]  # run_dir: its final/model.keras
    explainer = fp.GradCamExplainer.load(keras_model, backend)
    overlays = tmp_path / "gradcam"
    summary = fp.classify_folder(backend, station, explainer=explainer, explain_dir=overlays,
                                 sort_dir=tmp_path / "review", move=True, progress=False)  # explained before moved
    written = sorted(p.relative_to(overlays).as_posix() for p in overlays.rglob("*.png"))
    assert written == sorted(name.rsplit(".", 1)[0] + "_gradcam.png" for name in GOOD_FILES)
    with Image.open(overlays / written[0]) as png:
        assert png.format == "PNG" and png.mode == "RGB" and min(png.size) >= 256
    assert all(r.explanation for r in summary.results if not r.error)


def test_explain_without_a_model_to_differentiate_says_what_to_pass(served, tmp_path):
    class Remote(client.Backend):
        def predict_bytes(self, images):
            raise AssertionError

        def status(self):
            raise AssertionError

        def describe(self):
            return "remote"

    with pytest.raises(fp.ExplainNeedsKerasModel, match="--keras_model=RUN_DIR/final/model.keras"):
        fp.GradCamExplainer.load(None, Remote())
    with pytest.raises(fp.ExplainNeedsKerasModel, match="a .tflite model or a server cannot"):
        fp.GradCamExplainer.load(None, client.open_backend(model=served["tflite"]["float"]))
    with pytest.raises(fp.ExplainNeedsKerasModel, match="neither a .keras file"):
        fp.GradCamExplainer.load(tmp_path)


def test_sort_never_overwrites_even_a_file_it_did_not_write(tmp_path):
    capture = tmp_path / "FF_0001.jpg"
    capture.write_bytes(b"capture")
    (tmp_path / "review" / "meteor").mkdir(parents=True)
    someone_elses = tmp_path / "review" / "meteor" / "FF_0001_p-0.973.jpg"
    someone_elses.write_bytes(b"a person's file")
    placed = fp.sort_capture(capture, tmp_path / "review", "meteor", 0.97312)
    assert placed.name == "FF_0001_p-0.973_1.jpg" and placed.read_bytes() == b"capture"
    assert someone_elses.read_bytes() == b"a person's file" and capture.exists()


# ---------------------------------------------------------------------------------------------- the CLI


def run_predict_cli(*args):
    from meteor_tf.cli import predict

    predict.FLAGS.unparse_flags()
    try:
        predict.FLAGS(["meteor-predict", "--noprogress", *args])
        return predict.main(["meteor-predict"])
    finally:
        predict.FLAGS.unparse_flags()


def test_cli_writes_the_csv_and_prints_the_summary(station, served, tmp_path, capsys):
    output = tmp_path / "out" / "results.csv"
    assert run_predict_cli(f"--model={served['model_dir']}", f"--input={station}", f"--output={output}",
                           f"--sort={tmp_path / 'review'}", f"--explain={tmp_path / 'cam'}", "--batch_size=3") == 0
    printed = capsys.readouterr().out
    assert f"{len(BAD_FILES)} errors" in printed and str(output) in printed and "Grad-CAM overlays" in printed
    rows = fp.read_csv(output)
    assert len(rows) == len(GOOD_FILES) + len(BAD_FILES) and "sorted_to" in rows[0]
    assert len(list((tmp_path / "cam").rglob("*_gradcam.png"))) == len(GOOD_FILES)
    assert len(list((tmp_path / "review").rglob("*_p-*"))) == len(GOOD_FILES)


def test_cli_bad_input_is_one_line_and_exit_2(station, served, tmp_path, capsys):
    model = f"--model={served['model_dir']}"
    (tmp_path / "no_versions").mkdir()
    (tmp_path / "empty_input").mkdir()
    taken = tmp_path / "taken.csv"
    taken.write_text("x")
    keras_file = tmp_path / "runs" / "r1" / "final" / "model.keras"
    keras_file.parent.mkdir(parents=True)
    keras_file.write_bytes(b"PK")
    cases = [
        ([f"--model={keras_file}", f"--input={station}"], f"--run={tmp_path / 'runs' / 'r1'}`"),
        ([f"--model={tmp_path / 'nowhere'}", f"--input={station}"], "no such model directory"),
        ([f"--model={tmp_path / 'no_versions'}", f"--input={station}"], "no exported version"),
        ([model, f"--input={tmp_path / 'empty_input'}"], "no image files under"),
        ([model, f"--input={tmp_path / 'missing'}"], "does not exist"),
        ([f"--server=http://127.0.0.1:{free_port()}", f"--input={station}"], "cannot reach"),
        ([f"--server=grpc://127.0.0.1:{free_port()}", "--timeout=5", f"--input={station}"], "cannot reach"),
        ([model, f"--input={station}", f"--output={taken}"], "--overwrite"),
        ([model, "--server=http://127.0.0.1:8501", f"--input={station}"], "exactly one"),
        ([model, f"--input={station}", "--move"], "--move needs --sort"),
        ([model, f"--input={station}", "--threshold=1.5"], "between 0 and 1"),
        ([f"--server=http://127.0.0.1:{free_port()}", f"--input={station}", f"--explain={tmp_path / 'cam'}"],
         "--keras_model"),
    ]
    for args, message in cases:
        output = [] if any(a.startswith("--output") for a in args) else [f"--output={tmp_path / 'r.csv'}"]
        assert run_predict_cli(*args, *output) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, (args, err)
    assert taken.read_text() == "x"


def test_non_utf8_file_names_round_trip_through_the_csv_even_when_moved(tmp_path, backend):
    """Latin-1 names (old station PCs, Samba shares) used to abort the run with no CSV after --move had moved them."""
    station = tmp_path / "latin1"
    station.mkdir()
    names = [os.fsdecode(b"lat\xe9in.png"), 'comma, "quote".png', "new\nline.png", "plain.png"]
    for name in names:
        Image.new("L", (40, 40), 30).save(station / name, format="PNG")
    out = tmp_path / "results.csv"
    fp.classify_folder(backend, station, output=out, sort_dir=tmp_path / "review", move=True, progress=False,
                       batch_size=2)
    rows = fp.read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted(names)
    assert all(r["meteor_probability"] and r["sorted_to"] for r in rows)
    assert not any(station.iterdir())  # every file moved, and each one's original path is in the CSV
