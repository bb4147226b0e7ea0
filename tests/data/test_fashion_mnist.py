import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from meteor_tf.data import fashion_mnist

needs_debian = pytest.mark.skipif(
    not fashion_mnist.debian_files_present(),
    reason=f"Debian's dataset-fashion-mnist files are not in {fashion_mnist.DEBIAN_DIR}")


def test_original_header_layout():
    header = fashion_mnist.original_gzip_header("t10k-labels-idx1-ubyte.gz")
    assert header[:4] == b"\x1f\x8b\x08\x08"  # gzip, deflate, FNAME
    assert header[4:8] == (0x59A7E9F3).to_bytes(4, "little") and header[8:10] == b"\x00\x03"
    assert header[10:] == b"t10k-labels-idx1-ubyte\x00"


def test_restore_refuses_a_non_gzip_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in fashion_mnist.ORIGINAL_MTIME:
        (src / name).write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a gzip file"):
        fashion_mnist.restore_debian_fashion_mnist(tmp_path / "dst", src_dir=str(src), verify=False)


@needs_debian
def test_restored_files_match_tfds_checksums(tmp_path):
    out = fashion_mnist.restore_debian_fashion_mnist(tmp_path)
    expected = fashion_mnist.tfds_checksums()
    assert set(expected) == set(fashion_mnist.ORIGINAL_MTIME)
    for name, sha in expected.items():
        assert fashion_mnist.sha256_of(os.path.join(out, name)) == sha
    with gzip.open(os.path.join(out, "t10k-labels-idx1-ubyte.gz")) as f:
        assert f.read(8)[:4] == b"\x00\x00\x08\x01"  # IDX magic of a uint8 vector
    # A second call keeps the verified files.
    mtime = os.path.getmtime(os.path.join(out, "t10k-labels-idx1-ubyte.gz"))
    fashion_mnist.restore_debian_fashion_mnist(tmp_path)
    assert os.path.getmtime(os.path.join(out, "t10k-labels-idx1-ubyte.gz")) == mtime


def test_load_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=3):
        ds = fashion_mnist.load_fashion_mnist("train", data_dir=str(tmp_path), manual_dir=str(tmp_path))
        examples = list(ds.as_numpy_iterator())
    assert len(examples) == 3
    assert examples[0]["image"].shape == (28, 28, 1) and examples[0]["image"].dtype == np.uint8
    assert 0 <= examples[0]["label"] < 10


@pytest.mark.slow  # ~8 s on an idle machine, ~50 s on a shared 2-core one
@needs_debian
def test_prepares_the_real_data_offline_from_debian_files(tmp_path):
    train = fashion_mnist.load_fashion_mnist("train", data_dir=str(tmp_path))
    test = fashion_mnist.load_fashion_mnist("test", data_dir=str(tmp_path), as_supervised=True)
    assert train.cardinality().numpy() == 60_000 and test.cardinality().numpy() == 10_000
    first = next(iter(train))
    assert first["image"].shape == (28, 28, 1)
    image, label = next(iter(test))
    assert image.shape == (28, 28, 1) and 0 <= int(label) < 10
