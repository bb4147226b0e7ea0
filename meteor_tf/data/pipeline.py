"""In-memory arrays → tf.data input pipeline for training and evaluation."""

from __future__ import annotations

import tensorflow as tf

from meteor_tf.data.augment import build_augmentation


def make_dataset(images, labels, batch_size: int, training: bool, augment: str = "none", seed: int = 0,
                 cache: bool = True, first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of (images (B, S, S, 1) float32, labels (B,) int32).

    Training: full shuffle (seeded, a new order each epoch) and, with `augment`, the augmentation layers per
    batch. Evaluation: the arrays' order, no augmentation. The same seed gives the same batches run after run
    (`options.deterministic`, seeded shuffle, seeded layers). `first_epoch=k` (a phase resumed after k finished
    epochs): the next pass gets the order epoch k had in an uninterrupted run, not epoch 0's.
    """
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        # tf.data cannot start its reshuffling at epoch k: each pass draws the next order from the shuffle's seed
        # generator, so make the k passes the killed process made (labels only, one batch each, no model).
        for _ in range(first_epoch):
            for _ in ds.map(lambda x, y: y).batch(max(len(labels), 1)):
                pass
    ds = ds.batch(batch_size)
    layers = build_augmentation(augment, seed=seed) if training else None
    if layers is not None:
        if first_epoch:  # the augmentation draws of the k epochs done, as for the shuffle order above
            _advance_augmentation(layers, images, first_epoch * -(-len(labels) // batch_size))
        # Sequential map: the layers draw from a stateful seed generator, so parallel calls would race for it.
        ds = ds.map(lambda x, y: (layers(x, training=True), y))
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _advance_augmentation(layers, images, calls: int) -> None:
    """Move the seed generators of the augmentation `layers` on by `calls` batches' worth of draws.

    Keras's SeedGenerator draws in order (state += [0, 1] per draw), so one call on a tiny batch measures how far
    a batch moves each generator, and the state is set to where `calls` batches would leave it. This builds the
    layers eagerly too (the tf.data map then finds their variables made)."""
    import numpy as np

    states = [v for v in layers.variables if v.path.endswith("seed_generator_state")]
    before = [np.asarray(v.numpy()) for v in states]
    layers(tf.zeros((1, 4, 4) + tuple(np.shape(images)[3:]), tf.float32), training=True)
    for state, start in zip(states, before):
        state.assign(start + (np.asarray(state.numpy()) - start) * calls)
