"""Export time and size per depth: the SavedModel (TF Serving layout) and its TFLite conversions; and the exported
SavedModel's throughput on encoded JPEGs against the in-memory Keras model.

    python benchmarks/export_sizes.py [--depths 18 34 50 101] [--size 224] [--tflite float dynamic int8]
                                      [--out benchmarks/results/export_sizes.json]
    python benchmarks/export_sizes.py --throughput --depths 18 50 [--batch 32] [--steps 5]

Per depth (each in a child process of its own, random weights: time and size do not depend on their values):
  - parameters; `export_savedmodel` wall time and the version directory's size (variables/ and saved_model.pb apart),
    with the default signatures (serving_default on bytes, predict_images, explain_images = Grad-CAM) and without
    the Grad-CAM signature;
  - per TFLite quantisation: `tflite.convert` wall time and the .tflite size (int8 calibrates on 8 random images).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package: scripts run as files)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def child(spec: dict) -> dict:
    import keras
    import numpy as np

    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.serving import export, tflite

    keras.utils.set_random_seed(0)
    size = spec["size"]
    model = build_classifier(spec["depth"], image_size=size)
    out = {"depth": spec["depth"], "size": size, "params": model.count_params()}
    with tempfile.TemporaryDirectory(prefix="meteor_export_sizes_") as tmp:
        for explain in (True, False):
            started = time.perf_counter()
            version_dir = export.export_savedmodel(model, tmp, f"explain_{explain}", threshold=0.5, explain=explain)
            key = "savedmodel" if explain else "savedmodel_no_gradcam"
            out[key] = {"export_s": round(time.perf_counter() - started, 1), "bytes": dir_size(version_dir),
                        "variables_bytes": dir_size(version_dir / "variables"),
                        "saved_model_pb_bytes": (version_dir / "saved_model.pb").stat().st_size}
        calibration = np.random.default_rng(0).uniform(0, 255, (8, size, size, 1)).astype(np.float32)
        for quantize in spec["tflite"]:
            started = time.perf_counter()
            path = tflite.convert(version_dir, Path(tmp) / f"{quantize}.tflite", quantize,
                                  representative_images=calibration)
            out[f"tflite_{quantize}"] = {"convert_s": round(time.perf_counter() - started, 1),
                                         "bytes": path.stat().st_size}
    out["peak_rss_mb"] = common.peak_rss_mb()
    return out


def throughput_child(spec: dict) -> dict:
    """img/s at batch `batch`: the SavedModel's serving_default on 640x480 JPEG bytes (decode + preprocess + model in
    the graph), its predict_images on decoded float inputs, and the Keras model's predict_on_batch on those inputs."""
    import keras
    import numpy as np

    from meteor_tf.data.preprocess import preprocess_bytes_batch
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.serving import export

    keras.utils.set_random_seed(0)
    size, batch = spec["size"], spec["batch"]
    jpegs = common.night_sky_jpegs(16)
    frames = [jpegs[i % len(jpegs)] for i in range(batch)]
    images = preprocess_bytes_batch(np.array(frames, dtype=object), size).numpy()
    model = build_classifier(spec["depth"], image_size=size)
    out = {"depth": spec["depth"], "size": size, "batch": batch,
           "jpeg_bytes_mean": int(np.mean([len(f) for f in frames]))}
    with tempfile.TemporaryDirectory(prefix="meteor_throughput_") as tmp:
        exported = export.ExportedModel(export.export_savedmodel(model, tmp, threshold=0.5, explain=False))
        steps = {"savedmodel_bytes": lambda: exported.predict_bytes(frames, batch_size=batch),
                 "savedmodel_images": lambda: exported.predict_images(images, batch_size=batch),
                 "keras_in_memory": lambda: model.predict_on_batch(images)}
        for name, step in steps.items():
            timing = common.time_steps(step, spec["warmup"], spec["steps"])
            out[name] = {**timing, "img_s": batch / timing["median_s"]}
    return out


def throughput(args) -> None:
    rows, results = [], []
    for depth in args.depths:
        r = common.run_child(Path(__file__), {"mode": "throughput", "depth": depth, "size": args.size,
                                              "batch": args.batch, "warmup": 1, "steps": args.steps},
                             timeout=args.timeout)
        results.append(r)
        if "error" in r:
            rows.append([f"ResNet-{depth}", r["error"], None, None, None])
            continue
        b, i, k = (r[key]["img_s"] for key in ("savedmodel_bytes", "savedmodel_images", "keras_in_memory"))
        rows.append([f"ResNet-{depth}", b, i, k, b / k])
    print(f"{args.size} px, batch {args.batch}, 640x480 JPEGs, {common.device_record().get('device')}, "
          f"load average {common.loadavg()}")
    print(common.markdown_table(["model", "SavedModel on JPEG bytes img/s", "SavedModel on floats img/s",
                                 "Keras in memory img/s", "bytes / Keras"], rows))
    if args.out:
        common.write_json(args.out, {"device": common.device_record(), "results": results})


def main(argv=None) -> None:
    if common.child_main(sys.argv, lambda spec: throughput_child(spec) if spec.get("mode") == "throughput"
                         else child(spec)):
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[18, 34, 50, 101], choices=[18, 34, 50, 101])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--tflite", nargs="*", default=["float", "dynamic", "int8"], choices=["float", "dynamic", "int8"])
    p.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    p.add_argument("--throughput", action="store_true", help="measure throughput instead of export time and size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed batches per throughput figure (median reported)")
    p.add_argument("--out", default=None, help="JSON path (default: print only)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    common.refuse_overwrite(args.out, args.overwrite)
    common.configure_threads()
    if args.throughput:
        return throughput(args)
    rows, results = [], []
    for depth in args.depths:
        r = common.run_child(Path(__file__), {"depth": depth, "size": args.size, "tflite": args.tflite},
                             timeout=args.timeout)
        results.append(r)
        if "error" in r:
            rows.append([f"ResNet-{depth}", r["error"]] + [None] * (4 + 2 * len(args.tflite)))
            continue
        mb = 2 ** 20
        row = [f"ResNet-{depth}", r["params"] / 1e6, r["savedmodel"]["export_s"], r["savedmodel"]["bytes"] / mb,
               r["savedmodel"]["saved_model_pb_bytes"] / mb, r["savedmodel_no_gradcam"]["export_s"],
               r["savedmodel_no_gradcam"]["bytes"] / mb]
        for q in args.tflite:
            row += [r[f"tflite_{q}"]["convert_s"], r[f"tflite_{q}"]["bytes"] / mb]
        rows.append(row)
        print(f"ResNet-{depth} done", file=sys.stderr)
    headers = ["model", "params (M)", "export s", "SavedModel MB", "saved_model.pb MB", "export s (no Grad-CAM)",
               "MB (no Grad-CAM)"]
    for q in args.tflite:
        headers += [f"TFLite {q} s", f"TFLite {q} MB"]
    print(f"{args.size} px, {common.device_record().get('cpu', '')}, load average {common.loadavg()}")
    print(common.markdown_table(headers, rows))
    if args.out:
        common.write_json(args.out, {"size": args.size, "device": common.device_record(), "results": results})


if __name__ == "__main__":
    main()
