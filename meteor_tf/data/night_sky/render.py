"""Procedural night-sky captures: the stable facade of the `night_sky` renderer.

Other code imports the renderer through this module (`from meteor_tf.data.night_sky import render`, then
`render.KINDS`, `render.render_scene(...)`, `render.generate_examples(...)`), which keeps working when code moves.
The code lives in these modules, each importing only modules listed before it (no cycles):

- `labels`: classes, sub-labels and their shares, kinds of capture and scene layouts, image sizes, JPEG quality
  (`CLASS_NAMES`, `SUB_LABELS`, `SUB_LABEL_PROPORTIONS`, `KINDS`, `SCENE_LAYOUTS`, `SizeProfile`, `SIZES`,
  `size_profile`, `JPEG_QUALITY`);
- `planning`: which scene yields which captures, exact counts per class and sub-label, per-scene generators
  (`ScenePlan`, `sub_label_quotas`, `plan_dataset`, `scene_rng`);
- `drawing`: low-level numpy drawing (`splat`, `line_points`, `draw_line`, `blurred_points`, fractal noise);
- `sky`: the camera, sky, site and stars of a scene before any event (`Scene`, `_make_scene` and its stages);
- `events`: what each sub-label draws into a scene (`render_meteor`, `render_airplane`, ..., `EVENT_RENDERERS`);
- `capture`: camera output and the dataset: frame noise and caption, GMN crops, cut-outs, `render_scene`,
  `render_example`, `encode_jpeg`, `jpeg_quality`, `example_id`, `generate_examples`.

Everything is plain numpy + Pillow (+ scipy.ndimage / scipy.signal for a few blurs), deterministic given a
`numpy.random.Generator`. A *scene* is one camera pointing at one piece of sky with one event in it; it can yield
one or two *captures* (a whole frame, a Global Meteor Network style crop of the max-minus-average image, or a small
square cut-out of the frame). Captures of one scene share a `scene_id`.

Units: pixel values are display values (0..255, what the camera's JPEG holds); brightnesses of objects are drawn in
multiples of the scene's noise sigma so that "faint" means faint relative to that camera's noise floor.

The sky, site, camera and noise model is drawn from the same distributions for every sub-label, so the two classes
overlap in global brightness statistics; only the event differs.
"""

from meteor_tf.data.night_sky.capture import (
    JPEG_QUALITIES,
    STATIONS,
    encode_jpeg,
    example_id,
    generate_examples,
    jpeg_quality,
    render_example,
    render_scene,
)
from meteor_tf.data.night_sky.drawing import blurred_points, draw_line, line_points, splat
from meteor_tf.data.night_sky.events import (
    EVENT_RENDERERS,
    render_airplane,
    render_bird_bat_insect,
    render_cloud_lit,
    render_empty,
    render_firework,
    render_lightning,
    render_meteor,
    render_rain_dew,
    render_satellite,
)
from meteor_tf.data.night_sky.labels import (
    CLASS_NAMES,
    JPEG_QUALITY,
    KINDS,
    METEOR_SUB_LABELS,
    NON_METEOR_SUB_LABELS,
    SCENE_LAYOUTS,
    SIZES,
    SUB_LABEL_PROPORTIONS,
    SUB_LABELS,
    SizeProfile,
    size_profile,
)
from meteor_tf.data.night_sky.planning import ScenePlan, plan_dataset, scene_rng, sub_label_quotas
from meteor_tf.data.night_sky.sky import Scene, _make_scene  # noqa: F401 (_make_scene: tests build bare scenes)

__all__ = [
    "CLASS_NAMES", "EVENT_RENDERERS", "JPEG_QUALITIES", "JPEG_QUALITY", "KINDS", "METEOR_SUB_LABELS",
    "NON_METEOR_SUB_LABELS", "SCENE_LAYOUTS", "SIZES", "STATIONS", "SUB_LABELS", "SUB_LABEL_PROPORTIONS", "Scene",
    "ScenePlan", "SizeProfile", "blurred_points", "draw_line", "encode_jpeg", "example_id", "generate_examples",
    "jpeg_quality", "line_points", "plan_dataset", "render_airplane", "render_bird_bat_insect", "render_cloud_lit",
    "render_empty", "render_example", "render_firework", "render_lightning", "render_meteor", "render_rain_dew",
    "render_satellite", "render_scene", "scene_rng", "size_profile", "splat", "sub_label_quotas",
]
