import numpy as np

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
