"""Run-time augmentation (paper section 5.1): none, "on side" (small angles, horizontal flip), "complete".

Keras preprocessing layers, so they run in a tf.data map (and on any backend). They are active only when
called with `training=True`; at inference they pass images through unchanged. Areas rotated or zoomed in from
outside the frame are filled black: the night sky around a frame is black, so no bright border is invented.
"""

from __future__ import annotations

from typing import Optional

import keras

ON_SIDE_MAX_DEGREES = 10.0
COMPLETE_ZOOM = 0.1  # ± fraction: the paper's "slightly zoomed"
_FILL = dict(fill_mode="constant", fill_value=0.0)


def build_augmentation(mode: str, seed: Optional[int] = None) -> Optional[keras.Sequential]:
    """Augmentation layers for `mode` ("none" → None), seeded so a run repeats.

    - "on_side": rotation within ±10° and horizontal flips: a streak keeps roughly its angle, the sky stays
      up.
    - "complete": any rotation, horizontal and vertical flips, zoom within ±10%.
    """
    if mode == "none":
        return None
    seeds = [None] * 3 if seed is None else [seed, seed + 1, seed + 2]  # each layer its own stream
    if mode == "on_side":
        layers = [keras.layers.RandomRotation(ON_SIDE_MAX_DEGREES / 360.0, seed=seeds[0], **_FILL),
                  keras.layers.RandomFlip("horizontal", seed=seeds[1])]
    elif mode == "complete":
        layers = [keras.layers.RandomRotation(0.5, seed=seeds[0], **_FILL),  # factor 0.5 = ±180°
                  keras.layers.RandomFlip("horizontal_and_vertical", seed=seeds[1]),
                  keras.layers.RandomZoom(COMPLETE_ZOOM, seed=seeds[2], **_FILL)]
    else:
        raise ValueError(f"augment={mode!r} is not one of none, on_side, complete")
    return keras.Sequential(layers, name=f"augment_{mode}")
