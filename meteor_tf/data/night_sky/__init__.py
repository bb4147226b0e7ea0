"""Embedded procedural dataset `night_sky` (tfds): meteors and everything else a night-sky camera catches.

    from meteor_tf.data.night_sky import load_night_sky
    ds = load_night_sky(data_dir="/tmp/tfds")  # 1,000 meteor + 660 non-meteor captures, seed 0

Each example: `image` (uint8 H×W×1, decoded from JPEG), `label` (0 meteor, 1 non_meteor), `sub_label`
(see `SUB_LABELS`), `scene_id` (captures of one scene share it), `kind` ("frame", "gmn_crop", "allsky_cutout",
"dslr_crop"), `example_id` ("ns-000123").
"""

from meteor_tf.data.night_sky.builder import (
    DEFAULT_METEORS,
    DEFAULT_NON_METEORS,
    DEFAULT_SEED,
    NightSky,
    NightSkyConfig,
    load_night_sky,
    night_sky_builder,
    prepare,
)
from meteor_tf.data.night_sky.render import (
    KINDS,
    METEOR_SUB_LABELS,
    NON_METEOR_SUB_LABELS,
    SUB_LABEL_PROPORTIONS,
    SUB_LABELS,
    generate_examples,
    plan_dataset,
    render_example,
)

__all__ = [
    "DEFAULT_METEORS", "DEFAULT_NON_METEORS", "DEFAULT_SEED", "KINDS", "METEOR_SUB_LABELS", "NON_METEOR_SUB_LABELS",
    "NightSky", "NightSkyConfig", "SUB_LABELS", "SUB_LABEL_PROPORTIONS", "generate_examples", "load_night_sky",
    "night_sky_builder", "plan_dataset", "prepare", "render_example",
]
