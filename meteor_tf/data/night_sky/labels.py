"""Labels, kinds of capture and image sizes of the `night_sky` dataset: what the renderer is asked to produce.

- the classes (`CLASS_NAMES`) and their sub-labels (`METEOR_SUB_LABELS`, `NON_METEOR_SUB_LABELS`,
  `SUB_LABELS`), with each sub-label's share of its class (`SUB_LABEL_PROPORTIONS`);
- the kinds of capture (`KINDS`) and how scenes yield them (`SCENE_LAYOUTS`);
- the image sizes (`SizeProfile`, `SIZES`, `size_profile`) and the default JPEG quality (`JPEG_QUALITY`).

Plain constants, no numpy: every other night_sky module imports from here, this module imports from none of them.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from meteor_tf import CLASS_NAMES  # noqa: F401  (the package's one class order, re-exported for the renderer)

METEOR_SUB_LABELS = (
    "meteor",  # ordinary meteor: straight streak with a light curve
    "meteor_faint",  # near the noise floor
    "meteor_short",  # short streak (near the radiant / far away / short-lived)
    "meteor_bright_flare",  # fireball: saturated, flares, sometimes fragments
    "meteor_train",  # bright meteor that leaves a persistent train
    "meteor_dashed",  # stacked video: a fast meteor as a row of dashes
)
NON_METEOR_SUB_LABELS = (
    "airplane",  # blinking strobes (dotted) and steady nav lights (often two parallel lines)
    "satellite",  # faint uniform straight line, typically long: the hardest negative
    "bird_bat_insect",  # blurred blobs on curved / zig-zag tracks, defocused when near the lens
    "lightning_storm",  # flashes lighting clouds, branched bolts, distant storm glow
    "cloud_lit",  # moving clouds lit by the moon or the city
    "rain_dew",  # drops / dew / rain streaks on or in front of the lens
    "firework",  # curved falling arcs from bursts near the horizon
    "empty_sky",  # false trigger: only the sky and noise
)
SUB_LABELS = METEOR_SUB_LABELS + NON_METEOR_SUB_LABELS

# Share of each sub-label within its class (each class sums to 1). Meteor mix: what a station's detection archive
# holds: mostly ordinary streaks the detector triggered on, a tenth faint (near its threshold), fireballs, short
# and dashed (stacked-video) ones. Non-meteor mix: the paper says most of the UNIVAP non-meteors were planes, with
# some storms; the rest are the usual CCTV false triggers (animals, satellites, weather, fireworks).
SUB_LABEL_PROPORTIONS: Dict[str, float] = {
    "meteor": 0.50,
    "meteor_faint": 0.10,
    "meteor_short": 0.09,
    "meteor_bright_flare": 0.13,
    "meteor_train": 0.06,
    "meteor_dashed": 0.12,
    "airplane": 0.30,
    "satellite": 0.14,
    "bird_bat_insect": 0.15,
    "lightning_storm": 0.10,
    "cloud_lit": 0.08,
    "rain_dew": 0.07,
    "firework": 0.06,
    "empty_sky": 0.10,
}

KINDS = ("frame", "gmn_crop", "allsky_cutout", "dslr_crop")

# How scenes yield captures (same for both classes, so the kind of capture says nothing about the class). Detection
# crops are the majority, as GMN and EXOSS archives keep them; whole frames are ~25% of the captures.
SCENE_LAYOUTS = (
    (("frame",), 0.09),
    (("gmn_crop",), 0.37),
    (("allsky_cutout",), 0.21),
    (("dslr_crop",), 0.15),
    (("frame", "gmn_crop"), 0.09),
    (("frame", "allsky_cutout"), 0.09),
)


@dataclasses.dataclass(frozen=True)
class SizeProfile:
    """Image sizes of one profile: CCTV (NTSC-like and PAL), all-sky and DSLR frames (width, height) and the side
    ranges of square crops, cut-outs and DSLR crops."""

    cctv: Tuple[int, int]
    allsky: Tuple[int, int]
    crop_min: int
    crop_max: int
    cutout_max: int
    pal: Tuple[int, int]
    dslr: Tuple[int, int]
    dslr_crop_min: int
    dslr_crop_max: int

    @property
    def frame_sizes(self) -> Tuple[Tuple[int, int], ...]:
        """Every whole-frame size (width, height) a `frame` capture can have."""
        return (self.cctv, self.pal, self.allsky)


SIZES = {
    # CCTV 640x480 and PAL 720x576 frames (UFOCapture's, the UK Meteor Network's usual size), 1280x960 all-sky
    # frames, square crops / cut-outs 128..640 px; DSLR 3:2 frames (1536x1024) give square crops of 192..640 px
    # (the star-trail crops of gkyle/startrails are 512x512).
    "full": SizeProfile(cctv=(640, 480), allsky=(1280, 960), crop_min=128, crop_max=640, cutout_max=384,
                        pal=(720, 576), dslr=(1536, 1024), dslr_crop_min=192, dslr_crop_max=640),
    # For tests: everything 4x smaller.
    "small": SizeProfile(cctv=(160, 120), allsky=(320, 240), crop_min=32, crop_max=160, cutout_max=96,
                         pal=(180, 144), dslr=(384, 256), dslr_crop_min=48, dslr_crop_max=160),
}

JPEG_QUALITY = 85


def size_profile(small: bool) -> SizeProfile:
    return SIZES["small" if small else "full"]
