import logging
import os

import numpy as np
import pytest
from PIL import Image

from meteor_tf.data import dataset, folder


def test_scan_finds_classes_recursively_with_ids_and_scenes(class_folder):
    scan = folder.scan_folder(class_folder)
    assert scan.ids == sorted(scan.ids)
    assert "meteor/night2/m3.jpg" in scan.ids and "non_meteor/sub/n3.png" in scan.ids
    labels = dict(zip(scan.ids, scan.labels))
    assert labels["meteor/camA_0001__m1.jpg"] == 0 and labels["non_meteor/n2.png"] == 1
    scenes = dict(zip(scan.ids, scan.scenes))
    # One scene across files and classes; a file without "__" is its own group.
    assert scenes["meteor/camA_0001__m1.jpg"] == scenes["meteor/camA_0001__m2.jpg"] == \
        scenes["non_meteor/camA_0001__n1.png"]
    assert scenes["meteor/night2/m3.jpg"] != scenes["non_meteor/n2.png"]
    assert scan.skipped == []


def test_every_format_depth_and_channel_layout_loads(tmp_path, img):
    root = tmp_path / "DATA"
    gray, rgb = img.sky(), np.stack([img.sky()] * 3, axis=-1)
    files = {
        "meteor/a.jpg": (gray, {}), "meteor/b.png": (rgb, {}), "meteor/c.bmp": (rgb, {}),
        "meteor/d.gif": (gray, {}), "meteor/e.tif": (gray, {}), "meteor/f.tiff": (rgb, {}),
        "non_meteor/g16.png": (gray.astype(np.uint16) * 256, {}),
        "non_meteor/h16.tif": (gray.astype(np.uint16) * 256, {}),
        "non_meteor/i.png": (np.dstack([rgb, np.full(gray.shape, 255, np.uint8)]), {}),  # RGBA
        "non_meteor/j.JPEG": (np.zeros((600, 10), np.uint8), {}),  # very tall, upper-case extension
    }
    for name, (array, kwargs) in files.items():
        img.save(root / name, array, **kwargs)
    examples = dataset.load_folder(root, 32)
    assert examples.skipped == []
    assert sorted(examples.ids) == sorted(files)
    by_id = dict(zip(examples.ids, examples.images))
    # Lossless formats of the same picture give the same model input, whichever decoder (TF or Pillow) ran.
    for other in ("meteor/b.png", "meteor/c.bmp", "meteor/e.tif", "meteor/f.tiff", "non_meteor/g16.png",
                  "non_meteor/h16.tif", "non_meteor/i.png"):
        np.testing.assert_allclose(by_id[other], by_id["meteor/d.gif"], atol=0.51, err_msg=other)


def test_bad_files_are_skipped_with_one_warning_each(class_folder, img, monkeypatch, caplog):
    bad = class_folder / "non_meteor" / "bad"
    png_header_only = img.png_header_only
    png_header_only(bad / "huge.png", 30_000, 30_000)  # 900 MP: Pillow's own bomb limit
    png_header_only(bad / "big.png", 10_000, 6_000)  # 60 MP: above our 50 MP limit
    img.save(bad / "tiny.png", np.zeros((1, 1), np.uint8))
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not a picture\n")
    jpeg = img.save(bad / "ok.jpg", img.sky(64, 64), quality=90)
    data = open(jpeg, "rb").read()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    png = img.save(bad / "ok.png", img.sky(64, 64))
    data = open(png, "rb").read()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    img.save(bad / "locked.png", img.sky())
    os.remove(jpeg), os.remove(png)

    real_open = Image.open

    def open_or_refuse(fp, *args, **kwargs):  # CI runs as root, so chmod cannot make a file unreadable
        if str(fp).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(folder.Image, "open", open_or_refuse)
    with caplog.at_level(logging.WARNING):
        examples = dataset.load_folder(class_folder, 32)

    reasons = dict(examples.skipped)
    prefix = "non_meteor/bad/"
    assert set(reasons) == {prefix + n for n in ("huge.png", "big.png", "tiny.png", "empty.jpg", "text.jpg",
                                                  "truncated.jpg", "truncated.png", "locked.png")}
    assert "too large" in reasons[prefix + "huge.png"]
    assert "too large: 10000x6000 = 60.0 megapixels" in reasons[prefix + "big.png"]
    assert "too small" in reasons[prefix + "tiny.png"]
    assert "empty" in reasons[prefix + "empty.jpg"]
    assert "not an image" in reasons[prefix + "text.jpg"]
    assert "truncated" in reasons[prefix + "truncated.jpg"].lower()
    assert "truncated" in reasons[prefix + "truncated.png"].lower()
    assert "Permission denied" in reasons[prefix + "locked.png"]
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "Skipping" in r.getMessage()]
    for path in reasons:
        assert sum(path in w for w in warnings) == 1, path
    assert len(examples) == 6  # the good ones still load


def test_pixel_limit_is_an_argument(class_folder, img):
    img.save(class_folder / "meteor" / "big.png", img.sky(48, 64))  # 3072 pixels; the others have 768
    scan = folder.scan_folder(class_folder, max_pixels=1000)
    assert [(p, "too large" in r) for p, r in scan.skipped] == [("meteor/big.png", True)]
    assert len(scan.ids) == 6


def test_missing_folder_explains_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"DATA/meteor/\*\.jpg[\s\S]*--class_dirs"):
        folder.scan_folder(tmp_path / "nowhere")


def test_one_class_only_explains_the_layout(tmp_path, img):
    img.save(tmp_path / "meteor" / "a.png", img.sky())
    with pytest.raises(FileNotFoundError, match=r"no class folder 'non_meteor'[\s\S]*DATA/non_meteor"):
        folder.scan_folder(tmp_path)


def test_empty_class_folder_explains_the_layout(tmp_path, img):
    img.save(tmp_path / "meteor" / "a.png", img.sky())
    (tmp_path / "non_meteor").mkdir()
    (tmp_path / "non_meteor" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"No usable image[\s\S]*--class_dirs"):
        folder.scan_folder(tmp_path)


def test_other_class_folder_names(tmp_path, img):
    img.save(tmp_path / "yes" / "a.png", img.sky())
    img.save(tmp_path / "no" / "b.png", img.sky(streak=False))
    scan = folder.scan_folder(tmp_path, class_dirs=("yes", "no"))
    assert scan.ids == ["no/b.png", "yes/a.png"] and scan.labels == [1, 0]


def test_a_file_name_that_is_not_utf8_trains(tmp_path):
    """A Latin-1 name (surrogate-escaped by Python) used to be a traceback while decoding the folder."""
    for cls in ("meteor", "non_meteor"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("L", (32, 32), 20 + i).save(tmp_path / cls / f"{cls}_{i}.png")
    latin1 = os.fsdecode(b"m\xe9t\xe9ore.png")
    Image.new("L", (32, 32), 200).save(tmp_path / "meteor" / latin1)
    scan = folder.scan_folder(tmp_path)
    assert f"meteor/{latin1}" in scan.ids
    images, kept, skipped = folder.load_images(scan, 32, progress=False)
    assert len(kept) == 5 and not skipped
    assert images[list(scan.ids).index(f"meteor/{latin1}")].mean() > 150  # its own pixels, not a neighbour's


def test_a_header_beyond_pillows_own_limit_gets_our_megapixel_message(tmp_path):
    """A 20000x10000 PNG header (200 MP, over Pillow's 179 MP hard limit) used to get Pillow's "decompression bomb"."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 10000, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    fmt, reason = folder.check_image_file(str(path))
    assert fmt is None and reason == "too large: 200.0 megapixels, above the limit of 50 megapixels (max_pixels)"
