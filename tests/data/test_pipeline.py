import numpy as np
import pytest

from meteor_tf.data.pipeline import make_dataset


def data(n=10, size=8):
    images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, size, size, 1), np.float32)
    return images, np.arange(n, dtype=np.int32) % 2


def epoch(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def order(ds):
    return np.concatenate([x[:, 0, 0, 0] for x, _ in epoch(ds)]).astype(int).tolist()


def test_evaluation_keeps_order_and_pixels():
    images, labels = data()
    ds = make_dataset(images, labels, batch_size=4, training=False, augment="complete")
    batches = epoch(ds)
    assert [x.shape for x, _ in batches] == [(4, 8, 8, 1), (4, 8, 8, 1), (2, 8, 8, 1)]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)  # no augmentation
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)


def test_training_shuffles_deterministically_and_reshuffles_each_epoch():
    images, labels = data()
    ds = make_dataset(images, labels, batch_size=4, training=True, seed=1)
    first, second = order(ds), order(ds)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert second != first
    again = make_dataset(images, labels, batch_size=4, training=True, seed=1)
    assert order(again) == first and order(again) == second
    assert order(make_dataset(images, labels, batch_size=4, training=True, seed=2)) != first


def test_training_augmentation_is_seeded_and_keeps_labels_paired():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 16, 16, 1)).astype(np.float32)
    labels = np.arange(6, dtype=np.int32)
    a = epoch(make_dataset(images, labels, batch_size=3, training=True, augment="on_side", seed=3))
    b = epoch(make_dataset(images, labels, batch_size=3, training=True, augment="on_side", seed=3))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    xs, ys = np.concatenate([x for x, _ in a]), np.concatenate([y for _, y in a])
    assert not np.allclose(xs, images[ys])  # changed by the augmentation
    assert sorted(ys) == list(range(6))


def test_a_dataset_started_at_epoch_k_gives_epoch_ks_order():
    # a phase resumed after k finished epochs used to see epoch 0's order again, so its results differed from an
    # uninterrupted run's
    images = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
    labels = np.arange(20, dtype=np.int32)

    def passes(ds, n):
        return [np.concatenate([y.numpy() for _, y in ds]) for _ in range(n)]

    uninterrupted = passes(make_dataset(images, labels, 8, training=True, seed=5), 4)
    resumed = passes(make_dataset(images, labels, 8, training=True, seed=5, first_epoch=2), 2)
    assert not np.array_equal(uninterrupted[0], uninterrupted[2])
    np.testing.assert_array_equal(resumed[0], uninterrupted[2])
    np.testing.assert_array_equal(resumed[1], uninterrupted[3])


@pytest.mark.parametrize("augment", ["on_side", "complete"])
def test_an_augmented_dataset_started_at_epoch_k_gives_epoch_ks_images(augment):
    # the augmentation layers' seed generators restarted at their seed on resume, so a phase resumed after k
    # epochs saw epoch 0's rotations and flips again
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (12, 16, 16, 1)).astype(np.float32)
    labels = np.arange(12, dtype=np.int32)

    def passes(ds, n):
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(n)]

    uninterrupted = passes(make_dataset(images, labels, 5, training=True, augment=augment, seed=3), 3)
    resumed = passes(make_dataset(images, labels, 5, training=True, augment=augment, seed=3, first_epoch=2), 1)
    np.testing.assert_array_equal(resumed[0], uninterrupted[2])
    assert not np.allclose(uninterrupted[1], uninterrupted[2])


def test_backed_up_epochs_reads_what_backup_and_restore_resumes_from(tmp_path):
    from meteor_tf.training.callbacks import backed_up_epochs

    assert backed_up_epochs(tmp_path / "none") == 0
    (tmp_path / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    assert backed_up_epochs(tmp_path) == 0  # no weights: Keras starts over
    (tmp_path / "latest.weights.h5").write_bytes(b"")
    assert backed_up_epochs(tmp_path) == 3
