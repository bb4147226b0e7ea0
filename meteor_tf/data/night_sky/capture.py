"""Camera output of the `night_sky` renderer: from a scene with its event to captures and the dataset's examples.

- `_finish` (vignetting, noise, stacked-video noise, banding, hot pixels, all-sky mask) and `_caption` (a
  CCTV-style timestamp / station caption, station names from `STATIONS`) make the whole frame;
- `_gmn_crop` (a Global Meteor Network style crop of the max-minus-average image) and `_cutout` (a square window of
  the frame: all-sky cut-outs and DSLR crops), sized without looking at the event (`_window_side`);
- `render_scene` (one scene: camera and sky from `sky`, the event from `events`, then one image per kind),
  `render_example`, and the dataset: `generate_examples` over `planning.plan_dataset`, JPEG encoding
  (`encode_jpeg`, `jpeg_quality`) and ids (`example_id`).
"""

from __future__ import annotations

import datetime
import io
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from meteor_tf.data.night_sky.events import EVENT_RENDERERS
from meteor_tf.data.night_sky.labels import JPEG_QUALITY, KINDS, SUB_LABELS, SizeProfile, size_profile
from meteor_tf.data.night_sky.planning import plan_dataset, scene_rng
from meteor_tf.data.night_sky.sky import Scene, _make_scene


_FONTS: Dict[int, ImageFont.ImageFont] = {}


def _font(size: int):
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType: the fixed bitmap font
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


STATIONS = ("EXOSS", "BRAMON", "UNIVAP", "SJC01", "CAM", "OBS", "MET")  # station names of the captions


def _caption(rng, img: np.ndarray, allsky: bool) -> None:
    """Burn a CCTV-style timestamp / station caption into the uint8 frame, in place."""
    h, w = img.shape
    style = rng.choice(["band_bottom", "text_top", "text_bottom", "none"], p=[0.35, 0.25, 0.25, 0.15])
    if style == "none":
        return
    size = max(6, int(h * (rng.uniform(0.012, 0.02) if allsky else rng.uniform(0.025, 0.04))))
    t = datetime.datetime(2016, 1, 1) + datetime.timedelta(seconds=int(rng.integers(0, 3 * 365 * 86400)))
    t = t.replace(hour=int(rng.choice([21, 22, 23, 0, 1, 2, 3, 4])))
    station = f"{rng.choice(STATIONS)}-{rng.choice(['SJC', 'SP', 'RJ', 'MG', 'PR', 'BA'])}{rng.integers(1, 60):02d}"
    text = rng.choice([
        f"{t:%Y/%m/%d %H:%M:%S}.{rng.integers(0, 1000):03d} UT  {station}",
        f"{t:%d/%m/%Y  %H:%M:%S}  CAM{rng.integers(1, 5)}",
        f"{station}  {t:%Y%m%d_%H%M%S}",
        f"{t:%Y-%m-%d %H:%M:%S} {station} Watec 902H2",
        # UFOCapture's PAL caption: date, time (UTC), frame counter, trigger code, site and camera
        f"{t:%Y/%m/%d %H:%M:%S}.{rng.integers(0, 10)} (UTC)  {rng.integers(0, 10000):04d}  "
        f"K{rng.integers(0, 100000):05d}+{rng.integers(0, 1000):03d}  {station}  UFOCapV2",
    ])
    bh = int(size * 1.6)
    y0 = h - bh if style in ("band_bottom", "text_bottom") else 0
    band = Image.fromarray(img[y0:y0 + bh])
    draw = ImageDraw.Draw(band)
    if style == "band_bottom":
        draw.rectangle([0, 0, w, bh], fill=int(rng.integers(0, 12)))
    draw.text((int(rng.uniform(0.01, 0.05) * w), int(size * 0.25)), text, fill=int(rng.integers(190, 256)),
              font=_font(size))
    img[y0:y0 + bh] = np.asarray(band)


def _finish(scene: Scene, signal: np.ndarray, with_caption: bool) -> np.ndarray:
    rng, s = scene.rng, scene
    h, w = s.h, s.w
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None] ** 2
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :] ** 2
    v = np.float32(rng.uniform(0, 0.45) * 0.5)
    img = signal.astype(np.float32) * ((1 - v * yy) - v * xx)  # vignetting
    sig = np.sqrt(np.float32(s.noise ** 2) + np.float32(rng.uniform(0.02, 0.12)) * np.maximum(img, 0))
    n = rng.standard_normal((h, w), dtype=np.float32)
    if s.stacked:  # max-pixel stack: raised, narrower, skewed noise
        n = np.abs(n) * 0.6 + 1.2
    img = img + sig * n
    if rng.uniform() < 0.3:  # analog row banding
        img += rng.normal(0, 0.3 * s.noise, (h, 1)).astype(np.float32)
    nh = rng.poisson(rng.uniform(0, 30) * h * w / 307200)
    hx, hy = rng.integers(0, w, nh), rng.integers(0, h, nh)
    img[hy, hx] += rng.uniform(20, 200, nh)
    if s.allsky:
        img = img * s.sky_mask + (1 - s.sky_mask) * np.abs(n) * 0.8
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if with_caption:
        _caption(rng, out, s.allsky)
    return out


def _event_box(layer: np.ndarray, rel=0.15, abs_min=1.0) -> Optional[Tuple[int, int, int, int]]:
    mx = float(layer.max()) if layer.size else 0.0
    if mx < abs_min:
        return None
    ys, xs = np.nonzero(layer > max(abs_min, rel * mx))
    if ys.size == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _to_square(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape
    side = max(h, w)
    sq = np.zeros((side, side), np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    sq[y0:y0 + h, x0:x0 + w] = img
    if side != size:
        sq = np.asarray(Image.fromarray(sq).resize((size, size), Image.LANCZOS))
    return sq


def _window_side(rng, lo: int, hi: int) -> int:
    """A crop's side in scene pixels, log-uniform in [lo, hi]: drawn without looking at the event, so a crop's size
    says nothing about its label (3.0.0; sized to the event, crops let image size alone reach AUC 0.80)."""
    hi = max(lo, hi)
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def _window(scene: Scene, box, side: int) -> Tuple[int, int]:
    """Top-left corner of a side×side window around the event's box (jittered), or anywhere in the sky without one."""
    rng, s = scene.rng, scene
    if box is None:
        cx, cy = s.random_point_in_sky()
    else:
        cy = (box[0] + box[1]) / 2 + rng.uniform(-0.2, 0.2) * side
        cx = (box[2] + box[3]) / 2 + rng.uniform(-0.2, 0.2) * side
    y0 = int(np.clip(cy - side / 2, 0, s.h - side))
    x0 = int(np.clip(cx - side / 2, 0, s.w - side))
    return y0, x0


def _gmn_crop(scene: Scene, moving: np.ndarray, sizes: SizeProfile) -> np.ndarray:
    rng, s = scene.rng, scene
    box = _event_box(moving, rel=0.12, abs_min=0.8 * s.noise)
    side = _window_side(rng, sizes.crop_min, min(s.h, s.w, sizes.crop_max))
    y0, x0 = _window(s, box, side)
    y1, x1 = y0 + side, x0 + side
    sub = moving[y0:y1, x0:x1]
    # max-minus-average of noise: a positive pedestal with reduced noise; stars leave a scintillation residue
    ped = s.noise * rng.uniform(1.5, 3.0)
    res = sub + ped + 0.45 * s.noise * rng.standard_normal(sub.shape) + s.stars[y0:y1, x0:x1] * rng.uniform(0.02, 0.1)
    res *= s.sky_mask[y0:y1, x0:x1]
    hi = float(np.percentile(res, 99.9))
    gain = float(np.clip(rng.uniform(150, 255) / max(hi, 1.0), 0.8, 4.0))
    crop = np.clip(np.round(res * gain), 0, 255).astype(np.uint8)
    size = int(np.clip(side * rng.uniform(0.8, 1.25), sizes.crop_min, sizes.crop_max))
    return _to_square(crop, size)


def _cutout(scene: Scene, frame: np.ndarray, visible: np.ndarray, sizes: SizeProfile,
            sides: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A square window of the finished frame around the event; `sides`: its side range (default: cut-outs')."""
    box = _event_box(visible, rel=0.15, abs_min=0.5 * scene.noise)
    lo, hi = sides or (sizes.crop_min, sizes.cutout_max)
    side = _window_side(scene.rng, lo, min(scene.h, scene.w, hi))
    y0, x0 = _window(scene, box, side)
    return np.ascontiguousarray(frame[y0:y0 + side, x0:x0 + side])


def render_scene(sub_label: str, kinds: Sequence[str], rng: np.random.Generator,
                 sizes: SizeProfile) -> List[np.ndarray]:
    """Render one scene with a `sub_label` event and return one uint8 H×W image per entry of `kinds`."""
    if sub_label not in EVENT_RENDERERS:
        raise ValueError(f"unknown sub_label {sub_label!r}; expected one of {SUB_LABELS}")
    kinds = tuple(kinds)
    dslr = "dslr_crop" in kinds
    if dslr and len(kinds) > 1:
        raise ValueError(f"a dslr_crop comes from its own DSLR scene, not with {kinds}")
    if dslr:
        allsky = False
    elif "allsky_cutout" in kinds:
        allsky = rng.uniform() < 0.6
    elif "frame" in kinds:
        allsky = rng.uniform() < 0.12
    else:
        allsky = rng.uniform() < 0.25
    scene = _make_scene(rng, allsky, sizes, force_stacked=(sub_label == "meteor_dashed"), dslr=dslr)
    EVENT_RENDERERS[sub_label](scene)
    visible = scene.event if scene.foreground else scene.event * (1 - scene.ground)
    visible = visible * scene.sky_mask if not scene.foreground else visible
    out = []
    frame = None
    for kind in kinds:
        if kind in ("frame", "allsky_cutout", "dslr_crop") and frame is None:
            frame = _finish(scene, scene.static + visible, with_caption=not dslr)
        if kind == "frame":
            out.append(frame)
        elif kind == "allsky_cutout":
            vis = visible if scene.moving is None else np.maximum(visible, scene.moving)
            out.append(_cutout(scene, frame, vis, sizes))
        elif kind == "dslr_crop":
            out.append(_cutout(scene, frame, visible, sizes, (sizes.dslr_crop_min, sizes.dslr_crop_max)))
        elif kind == "gmn_crop":
            out.append(_gmn_crop(scene, visible if scene.moving is None else scene.moving + visible, sizes))
        else:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return out


def render_example(sub_label: str, kind: str = "frame", seed: int = 0, small: bool = False) -> np.ndarray:
    """One capture of `sub_label` as a uint8 H×W image (handy for tests and notebooks)."""
    return render_scene(sub_label, (kind,), np.random.default_rng(seed), size_profile(small))[0]


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Grayscale JPEG at `quality` (deterministic bytes)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8), mode=None).save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


JPEG_QUALITIES = (70, 95)  # inclusive range of the qualities drawn per capture (see jpeg_quality)


def jpeg_quality(seed: int, index: int) -> int:
    """The JPEG quality of capture `index`: drawn from its own stream, never from the scene's, so it is independent
    of the label (3.0.0; 2.0.0 wrote every capture at 85)."""
    lo, hi = JPEG_QUALITIES
    return int(np.random.default_rng([int(seed), int(index), 0x4A504547]).integers(lo, hi + 1))


def example_id(index: int) -> str:
    return f"ns-{index:06d}"


def generate_examples(meteors: int = 1000, non_meteors: int = 660, seed: int = 0,
                      small: bool = False) -> Iterator[Tuple[str, dict]]:
    """Yield (key, example) for every capture: image (JPEG bytes), label, sub_label, scene_id, kind, example_id."""
    sizes = size_profile(small)
    for plan in plan_dataset(meteors, non_meteors, seed):
        images = render_scene(plan.sub_label, plan.kinds, scene_rng(seed, plan.scene_id), sizes)
        for idx, kind, img in zip(plan.example_indices, plan.kinds, images):
            eid = example_id(idx)
            yield eid, {
                "image": encode_jpeg(img, jpeg_quality(seed, idx)),
                "label": plan.label,
                "sub_label": plan.sub_label,
                "scene_id": plan.scene_id,
                "kind": kind,
                "example_id": eid,
            }
