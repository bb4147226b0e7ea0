"""Procedural night-sky captures: numpy scene rendering for the embedded `night_sky` dataset.

Everything here is plain numpy + Pillow (+ scipy.ndimage for a few blurs), deterministic given a
`numpy.random.Generator`. A *scene* is one camera pointing at one piece of sky with one event in it; it can yield
one or two *captures* (a whole frame, a Global Meteor Network style crop of the max-minus-average image, or a small
square cut-out of the frame). Captures of one scene share a `scene_id`.

Units: pixel values are display values (0..255, what the camera's JPEG holds); brightnesses of objects are drawn in
multiples of the scene's noise sigma so that "faint" means faint relative to that camera's noise floor.

The sky, site, camera and noise model is drawn from the same distributions for every sub-label, so the two classes
overlap in global brightness statistics; only the event differs.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import math
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage, signal

# ---------------------------------------------------------------------------------------------------------------
# Labels, kinds, sizes
# ---------------------------------------------------------------------------------------------------------------

CLASS_NAMES = ("meteor", "non_meteor")

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


# ---------------------------------------------------------------------------------------------------------------
# Planning: which scene yields which captures, with exact counts per class and per sub-label
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScenePlan:
    scene_id: int
    label: int
    sub_label: str
    kinds: Tuple[str, ...]
    example_indices: Tuple[int, ...]


def sub_label_quotas(n: int, label: int) -> Dict[str, int]:
    """Exact number of captures per sub-label for `n` captures of class `label` (largest remainder; every
    sub-label gets at least one when `n` allows)."""
    names = METEOR_SUB_LABELS if label == 0 else NON_METEOR_SUB_LABELS
    shares = np.array([SUB_LABEL_PROPORTIONS[s] for s in names])
    shares = shares / shares.sum()
    if n >= len(names):
        base = np.ones(len(names), dtype=int)
        rest = n - len(names)
        raw = shares * n - 1
        raw = np.maximum(raw, 0)
        raw = raw / raw.sum() * rest if raw.sum() > 0 else shares * rest
    else:
        base = np.zeros(len(names), dtype=int)
        rest = n
        raw = shares * n
    q = base + np.floor(raw).astype(int)
    left = n - q.sum()
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    q[order[:left]] += 1
    return {s: int(c) for s, c in zip(names, q)}


def plan_dataset(meteors: int, non_meteors: int, seed: int) -> List[ScenePlan]:
    """The scene plan: exact `meteors` / `non_meteors` captures, grouped into scenes, in a seeded order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 987_654]))
    layouts = [k for k, _ in SCENE_LAYOUTS]
    probs = np.array([p for _, p in SCENE_LAYOUTS])
    probs = probs / probs.sum()
    single = [i for i, k in enumerate(layouts) if len(k) == 1]
    p_single = probs[single] / probs[single].sum()
    scenes: List[Tuple[int, str, Tuple[str, ...]]] = []
    for label, n in ((0, meteors), (1, non_meteors)):
        for sub, q in sub_label_quotas(n, label).items():
            while q > 0:
                i = rng.choice(len(layouts), p=probs)
                if len(layouts[i]) > q:
                    i = single[rng.choice(len(single), p=p_single)]
                scenes.append((label, sub, layouts[i]))
                q -= len(layouts[i])
    order = rng.permutation(len(scenes))
    plans = []
    idx = 0
    for scene_id, j in enumerate(order):
        label, sub, kinds = scenes[j]
        plans.append(ScenePlan(scene_id, label, sub, kinds, tuple(range(idx, idx + len(kinds)))))
        idx += len(kinds)
    return plans


def scene_rng(seed: int, scene_id: int) -> np.random.Generator:
    """Per-scene generator: captures depend on (seed, scene_id) only, not on generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, scene_id, 424_242]))


# ---------------------------------------------------------------------------------------------------------------
# Low-level drawing helpers
# ---------------------------------------------------------------------------------------------------------------


def _resize(a: np.ndarray, h: int, w: int, resample=Image.BICUBIC) -> np.ndarray:
    return np.array(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize((w, h), resample),
                      dtype=np.float32)


def _fractal(rng, h, w, base=3, octaves=5, persistence=0.55) -> np.ndarray:
    """Zero-mean unit-variance fractal noise (sum of upsampled random grids), computed at reduced resolution."""
    sh, sw = max(8, h // 4), max(8, w // 4)
    out = np.zeros((sh, sw), np.float32)
    amp = 1.0
    for o in range(octaves):
        gh = max(2, int(round(base * 2 ** o)))
        gw = max(2, int(round(gh * w / h)))
        if gh > sh:
            break
        out += amp * _resize(rng.standard_normal((gh, gw)).astype(np.float32), sh, sw)
        amp *= persistence
    out = _resize(ndimage.gaussian_filter(out, 1.0), h, w, Image.BILINEAR)
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def splat(img: np.ndarray, x, y, amp, sigma) -> None:
    """Add Gaussian spots of peak `amp` and width `sigma` (scalars or per-point arrays) at (x, y), in place."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    amp = np.broadcast_to(np.asarray(amp, np.float64), x.shape)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), x.shape)
    h, w = img.shape
    r = int(math.ceil(3 * float(sigma.max()))) if x.size else 0
    keep = (x > -r - 1) & (x < w + r) & (y > -r - 1) & (y < h + r) & (amp != 0)
    if not keep.any():
        return
    x, y, amp, sigma = x[keep], y[keep], amp[keep], sigma[keep]
    off = np.arange(-r, r + 1)
    xi = np.floor(x).astype(np.int64)
    yi = np.floor(y).astype(np.int64)
    gx = np.exp(-0.5 * ((off[None, :] + xi[:, None] + 0.5 - x[:, None]) / sigma[:, None]) ** 2)
    gy = np.exp(-0.5 * ((off[None, :] + yi[:, None] + 0.5 - y[:, None]) / sigma[:, None]) ** 2)
    wts = (amp[:, None, None] * gy[:, :, None] * gx[:, None, :]).ravel()
    X = np.broadcast_to((xi[:, None] + off[None, :])[:, None, :], (x.size, off.size, off.size)).ravel()
    Y = np.broadcast_to((yi[:, None] + off[None, :])[:, :, None], (x.size, off.size, off.size)).ravel()
    m = (X >= 0) & (X < w) & (Y >= 0) & (Y < h)
    if not m.any():
        return
    X, Y, wts = X[m], Y[m], wts[m]
    x0, x1, y0, y1 = int(X.min()), int(X.max()) + 1, int(Y.min()), int(Y.max()) + 1  # touched box only
    bw = x1 - x0
    img[y0:y1, x0:x1] += np.bincount((Y - y0) * bw + (X - x0), weights=wts,
                                     minlength=(y1 - y0) * bw).reshape(y1 - y0, bw).astype(img.dtype)


def line_points(x0, y0, x1, y1, curvature=0.0, spacing=0.5, wobble=0.0, rng=None):
    """Points along a (slightly curved) segment: returns x, y, t (0..1)."""
    L = math.hypot(x1 - x0, y1 - y0)
    n = max(2, int(L / spacing) + 1)
    t = np.linspace(0.0, 1.0, n)
    ux, uy = (x1 - x0) / max(L, 1e-6), (y1 - y0) / max(L, 1e-6)
    off = curvature * L * 4 * t * (1 - t)
    if wobble and rng is not None:
        k = rng.uniform(1, 4)
        off = off + wobble * np.sin(2 * np.pi * k * t + rng.uniform(0, 6.3))
    x = x0 + (x1 - x0) * t - uy * off
    y = y0 + (y1 - y0) * t + ux * off
    return x, y, t


def draw_line(img, x, y, peak, sigma, spacing=0.5):
    """Splat points sampled every `spacing` px so that the line's cross-section peaks at `peak`."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), x.shape)
    peak = np.broadcast_to(np.asarray(peak, np.float64), x.shape)
    step = max(1, int(float(sigma.min()) / (2 * spacing)))  # wide lines need fewer samples
    if step > 1:
        x, y, sigma, peak, spacing = x[::step], y[::step], sigma[::step], peak[::step], spacing * step
    splat(img, x, y, peak * spacing / (math.sqrt(2 * math.pi) * sigma), sigma)


def blurred_points(img, x, y, amp, sigma, ring=False):
    """Add points blurred by a Gaussian (or a defocus ring) of width `sigma`, computed in the points' bounding box."""
    h, w = img.shape
    pad = int(4 * sigma) + 2
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x0, x1 = max(0, int(x.min()) - pad), min(w, int(x.max()) + pad + 1)
    y0, y1 = max(0, int(y.min()) - pad), min(h, int(y.max()) + pad + 1)
    if x1 <= x0 or y1 <= y0:
        return
    sub = np.zeros((y1 - y0, x1 - x0), np.float32)
    xi = np.clip(np.round(x).astype(int) - x0, -1, x1 - x0)
    yi = np.clip(np.round(y).astype(int) - y0, -1, y1 - y0)
    m = (xi >= 0) & (xi < x1 - x0) & (yi >= 0) & (yi < y1 - y0)
    np.add.at(sub, (yi[m], xi[m]), np.broadcast_to(amp, x.shape)[m])
    if ring:  # defocused point: a disc with a brighter rim (bokeh), radius ~1.5 sigma
        rad = 1.5 * sigma
        k = int(math.ceil(rad)) + 1
        ky, kx = np.mgrid[-k:k + 1, -k:k + 1]
        rr = np.hypot(kx, ky) / rad
        ker = np.clip(rad - np.hypot(kx, ky) + 0.5, 0, 1) * (0.55 + 0.45 * np.clip(rr, 0, 1) ** 4)
        out = signal.fftconvolve(sub, ker.astype(np.float32), mode="same").astype(np.float32)
    else:
        out = ndimage.gaussian_filter(sub, sigma) * (2 * np.pi * sigma ** 2)
    img[y0:y1, x0:x1] += out


# ---------------------------------------------------------------------------------------------------------------
# Camera, sky and site
# ---------------------------------------------------------------------------------------------------------------

STATIONS = ("EXOSS", "BRAMON", "UNIVAP", "SJC01", "CAM", "OBS", "MET")


@dataclasses.dataclass
class Scene:
    rng: np.random.Generator
    w: int
    h: int
    allsky: bool
    stacked: bool
    camera: str  # "cctv", "allsky" or "dslr"
    noise: float  # read-noise sigma (DN)
    psf: float  # star PSF sigma (px)
    sky_level: float
    static: np.ndarray  # sky, stars, site (no noise)
    stars: np.ndarray  # star layer alone (for GMN residuals)
    ground: np.ndarray  # 1 where the site hides the sky
    lights: List[Tuple[float, float]]  # bright site lights (x, y)
    horizon_y: float  # mean horizon height (rows), h if none
    sky_mask: np.ndarray  # 1 inside the imaged sky (all-sky circle), else 0
    event: np.ndarray = None  # what the event adds to the frame
    moving: Optional[np.ndarray] = None  # what a max-minus-average image shows (None: the visible event)
    foreground: bool = False  # event in front of the site (near the lens)
    scale: float = 1.0  # linear size relative to a 640x480 frame
    track: Optional[Tuple[np.ndarray, np.ndarray]] = None  # (t 0..1, peak along a streak) as drawn: tests read it

    @property
    def diag(self):
        return math.hypot(self.w, self.h)

    def random_point_in_sky(self, margin=0.0, low_bias=0.0):
        rng = self.rng
        for _ in range(50):
            x = rng.uniform(margin * self.w, (1 - margin) * self.w)
            top = 0.0
            bottom = min(self.h, self.horizon_y) if self.horizon_y < self.h else self.h
            if low_bias:
                y = bottom - (bottom - top) * rng.uniform(0, 1) ** (1 + low_bias)
            else:
                y = rng.uniform(top + margin * self.h, bottom - margin * self.h * 0.5)
            xi, yi = int(min(max(x, 0), self.w - 1)), int(min(max(y, 0), self.h - 1))
            if self.sky_mask[yi, xi] > 0.5 and self.ground[yi, xi] < 0.5:
                return x, y
        return self.w / 2, self.h / 2


def _magnitudes(rng, n, m_lo, m_hi, slope=0.42):
    """Magnitudes with counts growing ~10^(slope m) (star counts), by inverse transform."""
    a, b = 10 ** (slope * m_lo), 10 ** (slope * m_hi)
    return np.log10(a + rng.uniform(0, 1, n) * (b - a)) / slope


def _make_scene(rng, allsky: bool, sizes: SizeProfile, force_stacked=False, dslr=False) -> Scene:
    """The static scene of one camera: an all-sky, a CCTV (640x480 or PAL 720x576) or a DSLR camera (`dslr`: a 3:2
    long exposure, low read noise, many stars, stars often trailed, no caption). The camera is drawn by the caller
    independently of the event."""
    camera = "allsky" if allsky else ("dslr" if dslr else "cctv")
    if camera == "allsky":
        w, h = sizes.allsky
        scale = h / 960 * 2
    elif camera == "dslr":
        w, h = sizes.dslr
        scale = h / 480
    else:
        w, h = sizes.pal if rng.uniform() < 0.45 else sizes.cctv
        scale = h / 480
    noise = float(rng.uniform(1.0, 3.0) if camera == "dslr" else rng.uniform(1.3, 5.0))
    psf = float(rng.uniform(0.8, 1.8) if camera == "dslr" else rng.uniform(0.7, 1.5))
    stacked = bool(force_stacked or rng.uniform() < 0.3)
    # Sky brightness: mostly dark, some grey (moonlit / urban / gain: UFOCapture frames are often mid-grey), drawn
    # independently of the event.
    sky_level = float(rng.choice([rng.uniform(4, 25), rng.uniform(20, 60), rng.uniform(50, 110)], p=[0.5, 0.3, 0.2]))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    # smooth light (sky glow, twilight, glare) is computed on a 4x coarser grid and upsampled once
    hl, wl = max(4, h // 4), max(4, w // 4)
    YY = ((np.arange(hl, dtype=np.float32) + 0.5) * h / hl)[:, None]
    XX = ((np.arange(wl, dtype=np.float32) + 0.5) * w / wl)[None, :]
    smooth = np.full((hl, wl), sky_level, np.float32)
    # sky-glow plane gradient
    g = rng.uniform(0, 0.5) * sky_level
    ang = rng.uniform(0, 2 * np.pi)
    smooth += g * ((XX / w - 0.5) * np.cos(ang) + (YY / h - 0.5) * np.sin(ang))
    sharp = np.zeros((h, w), np.float32)
    sky_mask = np.ones((h, w), np.float32)
    ground = np.zeros((h, w), np.float32)
    lights: List[Tuple[float, float]] = []
    horizon_y = float(h)

    if allsky:
        cx, cy = w / 2 + rng.uniform(-0.02, 0.02) * w, h / 2 + rng.uniform(-0.02, 0.02) * h
        R = h * rng.uniform(0.46, 0.5)
        r = np.hypot(xx - cx, yy - cy) / R
        phi = np.arctan2(yy - cy, xx - cx)
        sky_mask = (r < 1).astype(np.float32)
        # sky glow rises toward the horizon (airmass), more on the city side
        rl = np.hypot(XX - cx, YY - cy) / R
        phil = np.arctan2(YY - cy, XX - cx)
        city = rng.uniform(-np.pi, np.pi)
        smooth += sky_level * (rng.uniform(0.3, 1.2) * rl ** 3 + rng.uniform(0, 1.5) * rl ** 4 * np.clip(np.cos(phil - city), 0, 1) ** 2)
        # trees / buildings around the rim
        k = np.arange(1, 40)
        grid = np.linspace(-np.pi, np.pi, 4096, endpoint=False)
        coef = rng.standard_normal(k.size) / k ** 0.9
        phases = rng.uniform(0, 2 * np.pi, k.size)
        prof1 = (coef[:, None] * np.cos(k[:, None] * grid[None, :] + phases[:, None])).sum(0)
        prof1 += 0.15 * np.abs(ndimage.gaussian_filter1d(rng.standard_normal(grid.size), 2, mode="wrap"))
        prof = prof1[((phi + np.pi) / (2 * np.pi) * grid.size).astype(np.int64) % grid.size]
        depth = rng.uniform(0.03, 0.16) * (0.6 + 0.4 * np.tanh(prof))
        fine = _fractal(rng, h, w, base=6, octaves=3) * 0.02
        ground = ((r > 1 - depth + fine) & (r < 1)).astype(np.float32)
        horizon_y = float(h)
        n_lights = rng.poisson(2.5)
        for _ in range(n_lights):
            a = rng.uniform(-np.pi, np.pi)
            rr = rng.uniform(0.86, 0.97)
            lights.append((cx + rr * R * np.cos(a), cy + rr * R * np.sin(a)))
    else:
        cx, cy = w / 2, h / 2
        if rng.uniform() < 0.65:
            # horizon with buildings and trees along the bottom (sometimes a side) of the frame
            base = h * (1 - rng.uniform(0.04, 0.3))
            tilt = rng.uniform(-0.08, 0.08) * h
            x = np.arange(w, dtype=np.float32)
            prof = base + tilt * (x / w - 0.5)
            smooth_prof = prof.copy()
            # trees: smoothed random walk
            trees = ndimage.gaussian_filter1d(np.cumsum(rng.standard_normal(w)) * rng.uniform(0.5, 2.5), 3 * scale + 1)
            trees -= trees.min()
            trees = trees / (trees.max() + 1e-6) * rng.uniform(5, 60) * scale
            trees += np.abs(ndimage.gaussian_filter1d(rng.standard_normal(w), 1.0)) * 4 * scale
            prof = prof - trees * (rng.uniform() < 0.8)
            # buildings
            nb = rng.integers(0, 7)
            windows = []
            for _ in range(nb):
                bw = int(rng.uniform(25, 160) * scale) + 2
                bx = int(rng.uniform(-0.1, 1.0) * w)
                bh = rng.uniform(15, 130) * scale
                sl = slice(max(0, bx), min(w, bx + bw))
                if sl.start >= sl.stop:
                    continue
                top = base + tilt * (bx / w - 0.5) - bh
                prof[sl] = np.minimum(prof[sl], top)
                windows.append((sl.start, sl.stop, top))
            ground = (yy >= prof[None, :]).astype(np.float32)
            horizon_y = float(prof.mean())
            # twilight / city glow just above the horizon
            glow = rng.uniform(0, 1.6) * sky_level * rng.uniform(0, 1) ** 2
            sp = base + tilt * (XX / w - 0.5)
            smooth += glow * np.exp(-np.clip(sp - YY, 0, None) / (rng.uniform(0.1, 0.4) * h))
            # lit windows
            for x0, x1, top in windows:
                nwin = rng.poisson(max(1.0, (x1 - x0) / (30 * scale)) * rng.uniform(0, 2))
                for _ in range(nwin):
                    wx = int(rng.uniform(x0, x1))
                    wy = int(rng.uniform(top + 3, min(h - 1, top + 120 * scale)))
                    ww, wh = max(1, int(rng.uniform(2, 6) * scale)), max(1, int(rng.uniform(2, 6) * scale))
                    if 0 <= wy < h:
                        sharp[wy:wy + wh, wx:wx + ww] += rng.uniform(20, 160)
            for _ in range(rng.poisson(1.3)):
                lx = rng.uniform(0, w)
                ly = prof[int(min(w - 1, max(0, lx)))] + rng.uniform(-15, 25) * scale
                lights.append((lx, min(h - 2, ly)))
    gtex = _fractal(rng, hl, wl, base=8, octaves=3)
    glevel = sky_level * rng.uniform(0.15, 0.8) * (1 + 0.12 * gtex)

    # Moon or city glare from outside the frame; sometimes the moon in the frame
    mr = rng.uniform()
    if mr < 0.15:
        a = rng.uniform(0, 2 * np.pi)
        px, py = cx + np.cos(a) * 0.9 * w, cy + np.sin(a) * 0.9 * h
        d = np.hypot(XX - px, YY - py) / math.hypot(w, h)
        smooth += rng.uniform(15, 120) * np.exp(-d / rng.uniform(0.1, 0.35))
    elif mr < 0.21:
        mx, my = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.6) * h
        d = np.hypot(XX - mx, YY - my)
        rad = rng.uniform(5, 12) * scale + 1
        k = int(rad + 4)
        y0, x0 = max(0, int(my) - k), max(0, int(mx) - k)
        dd = np.hypot(xx[:, x0:int(mx) + k] - mx, yy[y0:int(my) + k] - my)
        sharp[y0:int(my) + k, x0:int(mx) + k] += 255 * _smoothstep((rad - dd) / 1.5 + 1)
        smooth += rng.uniform(40, 120) * np.exp(-d / (rng.uniform(15, 60) * scale + 1))
        smooth += rng.uniform(5, 30) * np.exp(-d / (rng.uniform(100, 300) * scale + 1))
        lights.append((mx, my))

    # Milky Way band on dark skies
    if sky_level < 30 and rng.uniform() < (0.35 if camera == "dslr" else 0.15):
        a = rng.uniform(0, np.pi)
        d = (XX - rng.uniform(0.2, 0.8) * w) * np.sin(a) - (YY - rng.uniform(0.2, 0.8) * h) * np.cos(a)
        band = np.exp(-0.5 * (d / (rng.uniform(0.06, 0.15) * math.hypot(w, h))) ** 2)
        smooth += band * rng.uniform(3, 12) * np.clip(1 + 0.6 * _fractal(rng, hl, wl, base=6, octaves=4), 0, None)
    # occasional clouds (both classes)
    if rng.uniform() < 0.25:
        cl = _smoothstep((_fractal(rng, hl, wl, base=2) - rng.uniform(-0.3, 1.2)) * rng.uniform(0.5, 1.5))
        smooth += cl * sky_level * rng.uniform(0.1, 1.0)
        cover = _resize(cl, h, w, Image.BILINEAR) * (1 - ground)
    else:
        cover = None
    static = _resize(smooth, h, w, Image.BILINEAR)
    static = static * (1 - ground) + ground * _resize(glevel, h, w, Image.BILINEAR) + sharp

    # Stars
    stars = np.zeros((h, w), np.float32)
    m_lim = rng.uniform(3.0, 6.0) - max(0, (sky_level - 30) / 40)
    fov = rng.uniform(0.5, 2.0) * {"cctv": 1, "allsky": 8, "dslr": 6}[camera]
    n = int(min(6000, 180 * fov * 10 ** (0.42 * (m_lim + 0.7 - 5))))
    mags = _magnitudes(rng, n, -1.5, m_lim + 0.7)
    sx, sy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    peak = noise * 2.2 * 10 ** (-0.4 * (mags - m_lim))
    if allsky:
        rr = np.hypot(sx - cx, sy - cy) / (h * 0.48)
        peak *= np.clip(1.2 - rr ** 4, 0, 1)
    peak = np.minimum(peak, 3000)
    # a stacked video drifts the stars a little; a DSLR exposure of tens of seconds trails them all alike
    trailed = camera == "dslr" and rng.uniform() < 0.5
    if stacked or trailed:
        tl = (rng.uniform(1.0, 4.0) if stacked else rng.uniform(1.5, 7.0)) * scale + 0.5
        ta = rng.uniform(0, 2 * np.pi)
        k = max(5, int(tl))
        f = np.linspace(0, 1, k)
        sx2 = (sx[:, None] + tl * np.cos(ta) * f[None, :]).ravel()
        sy2 = (sy[:, None] + tl * np.sin(ta) * f[None, :]).ravel()
        splat(stars, sx2, sy2, np.repeat(peak, k) * (2.25 / k), psf)  # the same light spread along the trail
    else:
        splat(stars, sx, sy, peak, psf)
    bright = peak > 40 * noise
    if bright.any():  # Moffat-like wings on bright stars
        splat(stars, sx[bright], sy[bright], np.minimum(peak[bright] * 0.03, 80), psf * 3.5)
    if cover is not None:
        stars *= 1 - 0.9 * cover
    static += stars * (1 - ground) * sky_mask

    scene = Scene(rng=rng, w=w, h=h, allsky=allsky, stacked=stacked, camera=camera, noise=noise, psf=psf, sky_level=sky_level,
                  static=static, stars=stars, ground=ground, lights=lights, horizon_y=horizon_y, sky_mask=sky_mask,
                  scale=scale)
    scene.event = np.zeros((h, w), np.float32)
    # street lights and lens flare ghosts
    for lx, ly in lights:
        a = rng.uniform(80, 255)
        splat(static, [lx], [ly], [a * 3], psf * 1.5)
        splat(static, [lx], [ly], [a * rng.uniform(0.05, 0.3)], rng.uniform(5, 25) * scale + 1)
        if rng.uniform() < 0.4:
            for f in rng.uniform(-1.4, -0.3, rng.integers(1, 4)):
                gx, gy = cx + f * (lx - cx), cy + f * (ly - cy)
                blurred_points(static, [gx], [gy], rng.uniform(2, 10), rng.uniform(4, 16) * scale + 1, ring=True)
    return scene


# ---------------------------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------------------------


def _segment_through(scene: Scene, length: float, cross_edge_p=0.15):
    rng = scene.rng
    cx, cy = scene.random_point_in_sky(margin=0.02)
    a = rng.uniform(0, 2 * np.pi)
    if rng.uniform() < cross_edge_p:  # push the centre out so that the streak leaves the frame
        cx += np.cos(a) * length * rng.uniform(0.3, 0.6)
        cy += np.sin(a) * length * rng.uniform(0.3, 0.6)
    dx, dy = np.cos(a) * length / 2, np.sin(a) * length / 2
    return cx - dx, cy - dy, cx + dx, cy + dy


def _light_curve(rng, t):
    a, b = rng.uniform(0.8, 3.0), rng.uniform(0.5, 2.5)
    tp = a / (a + b)
    lc = (np.clip(t, 1e-6, 1) / tp) ** a * (np.clip(1 - t, 1e-6, 1) / (1 - tp)) ** b
    lc = lc / lc.max()
    flick = 1 + rng.uniform(0, 0.2) * ndimage.gaussian_filter1d(rng.standard_normal(t.size), max(1, t.size / 60))
    return np.clip(lc * flick, 0, None)


def render_meteor(scene: Scene, variant: str) -> None:
    rng, s = scene.rng, scene
    d = s.diag
    length = {
        "meteor": lambda: d * math.exp(rng.uniform(math.log(0.08), math.log(0.55))),
        "meteor_faint": lambda: d * math.exp(rng.uniform(math.log(0.04), math.log(0.4))),
        "meteor_short": lambda: d * rng.uniform(0.02, 0.06),
        "meteor_bright_flare": lambda: d * rng.uniform(0.15, 0.75),
        "meteor_train": lambda: d * rng.uniform(0.15, 0.6),
        "meteor_dashed": lambda: d * rng.uniform(0.1, 0.55),
    }[variant]()
    if s.allsky:
        length *= 0.5
    x0, y0, x1, y1 = _segment_through(s, length)
    spacing = 0.5
    x, y, t = line_points(x0, y0, x1, y1, curvature=rng.uniform(-0.01, 0.01), spacing=spacing)
    lc = _light_curve(rng, t)
    # peak brightness in noise sigmas: a detection archive holds what the detector triggered on, so ordinary
    # meteors are clearly above the noise; "faint" ones sit just above the trigger threshold
    snr = {
        "meteor": lambda: math.exp(rng.uniform(math.log(8), math.log(80))),
        "meteor_faint": lambda: rng.uniform(2.5, 5.5),
        "meteor_short": lambda: math.exp(rng.uniform(math.log(6), math.log(50))),
        "meteor_bright_flare": lambda: rng.uniform(40, 150),
        "meteor_train": lambda: rng.uniform(30, 120),
        "meteor_dashed": lambda: math.exp(rng.uniform(math.log(6), math.log(60))),
    }[variant]()
    peak = snr * s.noise
    if variant == "meteor_bright_flare" or (variant == "meteor" and rng.uniform() < 0.15):
        for _ in range(rng.integers(1, 4)):
            tc, wd = rng.uniform(0.35, 0.95), rng.uniform(0.01, 0.05)
            lc = lc + rng.uniform(0.8, 3.0) * np.exp(-0.5 * ((t - tc) / wd) ** 2) * (t < 1)
    # the head blooms where it is bright: wider than a star (a satellite is not), and more so for fireballs
    widen = {"meteor_bright_flare": 1.2, "meteor_train": 0.8}.get(variant, 0.6)
    sigma = s.psf * (1 + widen * np.clip(lc, 0, 2) * min(1.0, snr / 20))
    amp = peak * lc
    if variant == "meteor_dashed":
        period = rng.uniform(6, 30) * max(s.scale, 0.5)
        duty = rng.uniform(0.55, 0.85)  # frame exposure longer than the read-out gap: dashes, not a plane's dots
        phase = (t * length / period + rng.uniform()) % 1
        amp = amp * (phase < duty)
    draw_line(s.event, x, y, amp, sigma, spacing)
    s.track = (t, amp)
    if snr > 25:  # glow around bright meteors
        draw_line(s.event, x, y, amp * rng.uniform(0.03, 0.12), sigma * 4, spacing)
    if variant == "meteor_bright_flare" and rng.uniform() < 0.45:  # fragmentation near the end
        tf = rng.uniform(0.55, 0.85)
        i0 = int(tf * (t.size - 1))
        a = math.atan2(y1 - y0, x1 - x0)
        rest = length * (1 - tf) * rng.uniform(0.8, 1.3)
        for _ in range(rng.integers(1, 4)):
            aa = a + rng.uniform(-0.06, 0.06)
            fx, fy, ft = line_points(x[i0], y[i0], x[i0] + rest * math.cos(aa), y[i0] + rest * math.sin(aa),
                                     spacing=spacing)
            famp = peak * rng.uniform(0.2, 0.7) * (1 - ft) ** rng.uniform(0.5, 2)
            draw_line(s.event, fx, fy, famp, s.psf * 1.3, spacing)
    if variant == "meteor_train":
        sel = lc > rng.uniform(0.2, 0.6)
        tx, ty, tt = x[sel], y[sel], t[sel]
        if tx.size > 4:
            nx, ny = -(y1 - y0) / length, (x1 - x0) / length
            wig = rng.uniform(1, 6) * s.scale * np.sin(2 * np.pi * rng.uniform(1, 3) * tt + rng.uniform(0, 6))
            tsig = rng.uniform(2.5, 7) * s.scale + 1.5
            blurred_points(s.event, tx + nx * wig, ty + ny * wig,
                           peak * rng.uniform(0.04, 0.2) * spacing / (math.sqrt(2 * math.pi) * tsig), tsig)


def render_airplane(scene: Scene) -> None:
    rng, s = scene.rng, scene
    d = s.diag
    crossing = rng.uniform() < 0.6
    length = d * (rng.uniform(0.8, 1.5) if crossing else rng.uniform(0.2, 0.8))
    if s.allsky:
        length *= 0.6
    x0, y0, x1, y1 = _segment_through(s, length, cross_edge_p=0.3)
    spacing = 0.5
    x, y, t = line_points(x0, y0, x1, y1, curvature=rng.uniform(-0.03, 0.03), spacing=spacing)
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length
    # every style keeps a plane's tells: blinking strobes (dotted), two parallel wing-tip lines, a blinking beacon
    # 4.0.0 adds "beads": a long exposure's overexposed strobe flashes, fat bright blobs in a row (DSLR trails)
    style = rng.choice(["lines_strobes", "dotted", "lines", "beads"], p=[0.4, 0.25, 0.15, 0.2])
    steady = s.noise * math.exp(rng.uniform(math.log(2.5), math.log(30)))
    if style in ("dotted", "beads") and rng.uniform() < 0.5:  # a dim steady nav light under the strobes
        draw_line(s.event, x, y, steady * rng.uniform(0.2, 0.5), s.psf, spacing)
    if style in ("lines_strobes", "lines"):
        n_lines = 2 if style == "lines" or rng.uniform() < 0.6 else 1
        sep = rng.uniform(2, 8) * max(s.scale, 0.5)
        for k in range(n_lines):
            off = (k - (n_lines - 1) / 2) * sep
            mod = 1 + rng.uniform(0, 0.15) * np.sin(2 * np.pi * t * rng.uniform(2, 8))
            if style == "lines":  # no strobes: the lights blink on and off along both wing-tip lines
                mod = mod * (0.2 + 0.8 * (np.sin(2 * np.pi * t * rng.uniform(5, 25)) > 0))
            draw_line(s.event, x + nx * off, y + ny * off, steady * rng.uniform(0.6, 1.0) * mod, s.psf, spacing)
    if style == "beads":
        period = rng.uniform(8, 40) * max(s.scale, 0.4)
        n = int(length / period) + 1
        tt = (np.arange(n) + rng.uniform()) * period / length
        tt = tt[tt <= 1]
        amp = s.noise * math.exp(rng.uniform(math.log(20), math.log(150))) * rng.uniform(0.7, 1.0, tt.size)
        sig = s.psf * rng.uniform(1.5, 3.0) * max(s.scale, 0.5) ** 0.5
        dl = rng.uniform(0.2, 0.6) * period
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        px, py = x0 + (x1 - x0) * tt, y0 + (y1 - y0) * tt
        for f in np.linspace(0, 1, 5):
            splat(s.event, px + ux * dl * f, py + uy * dl * f, amp / 3, sig)
    if style in ("lines_strobes", "dotted"):
        period = rng.uniform(12, 60) * max(s.scale, 0.4)
        n = int(length / period) + 1
        tt = (np.arange(n) + rng.uniform()) * period / length
        tt = tt[tt <= 1]
        if rng.uniform() < 0.4:  # double flash
            tt = np.concatenate([tt, tt + rng.uniform(3, 7) * max(s.scale, 0.5) / length])
        px = x0 + (x1 - x0) * tt
        py = y0 + (y1 - y0) * tt
        # white anti-collision strobes outshine the steady lights: the dots stay separate
        amp = max(s.noise * rng.uniform(10, 80), steady * rng.uniform(2, 4)) * rng.uniform(0.7, 1.0, tt.size)
        dl = rng.uniform(0.5, 3) * max(s.scale, 0.5)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        for f in np.linspace(0, 1, 3):
            splat(s.event, px + ux * dl * f, py + uy * dl * f, amp / 2, s.psf * rng.uniform(1.0, 1.6))


def render_satellite(scene: Scene) -> None:
    rng, s = scene.rng, scene
    # slow and steady: long (often leaving the frame), star-wide, the same brightness end to end (no light curve)
    length = s.diag * rng.uniform(0.4, 1.3) * (0.6 if s.allsky else 1)
    x0, y0, x1, y1 = _segment_through(s, length, cross_edge_p=0.5)
    x, y, t = line_points(x0, y0, x1, y1, curvature=rng.uniform(-0.003, 0.003), spacing=0.5)
    r0, r1 = rng.uniform(0.85, 1.15, 2)
    # 4.0.0: faint ones near a video camera's threshold, but also the bright, thin trails a DSLR or a sensitive
    # camera records (the straight trails of gkyle/startrails' crops are tens of noise sigmas), bright as a meteor
    # yet star-wide and uniform
    snr = rng.uniform(2.0, 8.0) if rng.uniform() < 0.45 else math.exp(rng.uniform(math.log(8), math.log(120)))
    amp = s.noise * snr * (r0 + (r1 - r0) * t) * (1 + 0.03 * rng.standard_normal(t.size))
    if s.stacked and rng.uniform() < 0.5:  # a max-pixel stack of frames with read-out gaps: a dashed trail
        period = rng.uniform(6, 30) * max(s.scale, 0.5)
        duty = rng.uniform(0.55, 0.9)
        amp = amp * (((t * length / period + rng.uniform()) % 1) < duty)
    draw_line(s.event, x, y, amp, s.psf, 0.5)
    s.track = (t, amp)


def render_bird_bat_insect(scene: Scene) -> None:
    rng, s = scene.rng, scene
    kind = rng.choice(["insect", "bat", "bird"], p=[0.5, 0.25, 0.25])
    n = int(rng.integers(12, 60))
    x, y = s.random_point_in_sky()
    head = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(4, 20) * s.scale + 1
    turn = {"insect": 0.6, "bat": 0.25, "bird": 0.06}[kind]
    drift = rng.uniform(-0.15, 0.15)
    xs, ys = [], []
    for i in range(n):
        xs.append(x)
        ys.append(y)
        head += drift + turn * rng.standard_normal()
        if kind == "insect" and rng.uniform() < 0.15:
            head += np.pi * rng.uniform(0.5, 1)
        x += speed * math.cos(head)
        y += speed * math.sin(head)
    xs, ys = np.array(xs), np.array(ys)
    cx, cy = s.random_point_in_sky()  # centre the track on a point of the frame
    xs, ys = xs - xs.mean() + cx, ys - ys.mean() + cy
    sig = {"insect": rng.uniform(2, 18), "bat": rng.uniform(1.5, 5), "bird": rng.uniform(2.5, 8)}[kind] * s.scale + 0.8
    amp = s.noise * math.exp(rng.uniform(math.log(2), math.log(25)))
    flap = 1 + 0.5 * np.sin(2 * np.pi * np.arange(n) / rng.uniform(2.5, 7)) if kind != "insect" else 1 + 0 * xs
    # several sub-positions per frame: a blurred track
    k = 2 if kind == "insect" else 1  # birds / bats: one blob per video frame; insects blur between frames
    f = np.linspace(0, 1, k, endpoint=False)
    xx = (xs[:-1, None] + (xs[1:, None] - xs[:-1, None]) * f).ravel()
    yy = (ys[:-1, None] + (ys[1:, None] - ys[:-1, None]) * f).ravel()
    aa = np.repeat(amp * flap[:-1], k) / k * rng.uniform(0.5, 1.0, xx.size)
    blurred_points(s.event, xx, yy, aa, sig, ring=(kind == "insect" and sig > 8 * s.scale))
    s.foreground = True


def _cloud_field(rng, s: Scene, coverage):
    f = _fractal(rng, s.h, s.w, base=rng.uniform(1.5, 4))
    return _smoothstep((f - (1 - 2 * coverage)) * rng.uniform(0.6, 1.5))


def render_lightning(scene: Scene) -> None:
    rng, s = scene.rng, scene
    yy, xx = np.ogrid[0:s.h, 0:s.w]
    cloud = _cloud_field(rng, s, rng.uniform(0.3, 0.9))
    style = rng.choice(["flash", "bolt", "distant"], p=[0.4, 0.35, 0.25])
    sx, sy = rng.uniform(0, s.w), min(s.horizon_y, s.h) * rng.uniform(0.5, 1.0)
    dist = np.hypot(xx - sx, yy - sy) / s.diag
    strength = s.noise * math.exp(rng.uniform(math.log(4), math.log(60)))
    if style == "distant":
        illum = strength * np.exp(-dist / rng.uniform(0.05, 0.2)) * (0.3 + cloud)
    else:
        illum = strength * np.exp(-dist / rng.uniform(0.2, 0.8)) * (0.25 + cloud)
    s.static *= 1 - 0.7 * cloud * (1 - s.ground)  # clouds hide stars
    s.event += illum * (1 - s.ground) * s.sky_mask
    s.event += s.ground * float(illum.mean()) * rng.uniform(0.05, 0.3)  # lit landscape
    if style == "bolt":
        def walk(x, y, ang, steps, step):
            pts = [(x, y)]
            for _ in range(steps):
                ang += rng.normal(0, 0.45)
                ang = float(np.clip(ang, 0.3, np.pi - 0.3))
                x += step * math.cos(ang)
                y += step * math.sin(ang)
                pts.append((x, y))
            return np.array(pts)

        top = rng.uniform(0, 0.3) * s.h
        bx = rng.uniform(0.1, 0.9) * s.w
        step = rng.uniform(4, 10) * s.scale + 1
        steps = int(max(5, (min(s.horizon_y, s.h) - top) / step))
        trunk = walk(bx, top, np.pi / 2, steps, step)
        branches = [trunk]
        for _ in range(rng.integers(1, 7)):
            i = rng.integers(1, len(trunk))
            branches.append(walk(trunk[i, 0], trunk[i, 1], np.pi / 2 + rng.choice([-1, 1]) * rng.uniform(0.3, 1.0),
                                 int(rng.integers(3, max(4, steps // 2))), step * 0.8))
        core = rng.uniform(120, 260)
        pts = [[], [], []]
        for bi, br in enumerate(branches):
            for (ax, ay), (bx_, by_) in zip(br[:-1], br[1:]):
                px, py, _ = line_points(ax, ay, bx_, by_, spacing=0.5)
                pts[0].append(px)
                pts[1].append(py)
                pts[2].append(np.full(px.shape, core * (1 if bi == 0 else 0.5)))
        px, py, pa = (np.concatenate(p) for p in pts)
        draw_line(s.event, px, py, pa, s.psf * 1.2, 0.5)
        draw_line(s.event, px, py, pa * 0.15, s.psf * 8 * max(s.scale, 0.4), 0.5)
        s.event *= 1 - s.ground


def render_cloud_lit(scene: Scene) -> None:
    rng, s = scene.rng, scene
    cov = rng.uniform(0.35, 0.95)
    f = _fractal(rng, s.h, s.w, base=rng.uniform(1.5, 4))
    sh = rng.uniform(0.1, 0.5)
    g = rng.uniform(0.35, 0.9)
    cloud = _smoothstep((f - (1 - 2 * cov)) * g) * np.clip(0.75 + 0.25 * _fractal(rng, s.h, s.w, base=6, octaves=3), 0, 1)
    cloud_prev = cloud * _smoothstep((f - (1 - 2 * cov) - sh) * g)  # the cloud edge that moved in during the clip
    yy, xx = np.ogrid[0:s.h, 0:s.w]
    a = rng.uniform(0, 2 * np.pi)
    grad = 0.6 + 0.4 * ((xx / s.w - 0.5) * math.cos(a) + (yy / s.h - 0.5) * math.sin(a)) * 2
    lit = s.noise * math.exp(rng.uniform(math.log(2), math.log(35))) * np.clip(grad, 0.1, None)
    sky = 1 - s.ground
    s.static = s.static - s.stars * 0.85 * cloud * sky * s.sky_mask + lit * cloud * sky * s.sky_mask
    s.moving = np.clip(cloud - cloud_prev, 0, None) * lit * sky * s.sky_mask * 1.5


def render_rain_dew(scene: Scene) -> None:
    rng, s = scene.rng, scene
    style = rng.choice(["drops", "streaks", "dew"], p=[0.45, 0.3, 0.25])
    if style == "dew" or rng.uniform() < 0.3:
        s.static = ndimage.gaussian_filter(s.static, rng.uniform(1.5, 5) * max(s.scale, 0.5))
        halo = ndimage.gaussian_filter(np.clip(s.static - 80, 0, None), 20 * s.scale + 2)
        s.static += halo * rng.uniform(1, 6)
        s.event += s.static * 0  # nothing moves but the dew glow
        glow_x, glow_y = s.random_point_in_sky()
        blurred_points(s.event, [glow_x], [glow_y], s.noise * rng.uniform(3, 20), rng.uniform(20, 60) * s.scale + 2)
    if style == "drops":
        n = int(rng.integers(4, 40))
        xs, ys = rng.uniform(0, s.w, n), rng.uniform(0, s.h, n)
        for x, y in zip(xs, ys):
            r = rng.uniform(5, 35) * s.scale + 1.5
            blurred_points(s.event, [x], [y], s.noise * rng.uniform(2, 15), r, ring=True)
    if style == "streaks":
        n = int(rng.integers(20, 150))
        a = np.pi / 2 + rng.uniform(-0.4, 0.4)
        for _ in range(n):
            x, y = rng.uniform(0, s.w), rng.uniform(0, s.h)
            L = rng.uniform(8, 50) * s.scale + 2
            aa = a + rng.normal(0, 0.05)
            px, py, _ = line_points(x, y, x + L * math.cos(aa), y + L * math.sin(aa), spacing=1.0)
            draw_line(s.event, px, py, s.noise * rng.uniform(1.5, 12), s.psf * rng.uniform(1, 3), 1.0)
    s.foreground = True


def render_firework(scene: Scene) -> None:
    rng, s = scene.rng, scene
    hy = min(s.horizon_y, s.h)
    for _ in range(rng.integers(1, 4)):
        cx = rng.uniform(0.1, 0.9) * s.w
        cy = hy - rng.uniform(0.05, 0.5) * hy
        if s.allsky:
            a = rng.uniform(0, 2 * np.pi)
            rr = rng.uniform(0.5, 0.85) * s.h / 2
            cx, cy = s.w / 2 + rr * math.cos(a), s.h / 2 + rr * math.sin(a)
        n = int(rng.integers(15, 70))
        v = rng.uniform(20, 70) * s.scale * rng.uniform(0.7, 1.0, n)
        ang = rng.uniform(0, 2 * np.pi, n)
        T = rng.uniform(1.0, 2.5)
        t = np.linspace(0, T, 60)
        g = rng.uniform(15, 45) * s.scale
        drag = rng.uniform(0.3, 1.2)
        disp = (1 - np.exp(-drag * t)) / drag
        px = cx + np.cos(ang)[:, None] * v[:, None] * disp[None, :]
        py = cy + np.sin(ang)[:, None] * v[:, None] * disp[None, :] + 0.5 * g * t[None, :] ** 2
        fade = np.exp(-t / rng.uniform(0.5, 1.5))[None, :] * (1 + 0.4 * rng.standard_normal(px.shape))
        amp = s.noise * rng.uniform(8, 60) * np.clip(fade, 0, None)
        splat(s.event, px.ravel(), py.ravel(), amp.ravel(), s.psf * 1.2)
        blurred_points(s.event, [cx], [cy], s.noise * rng.uniform(5, 30), rng.uniform(5, 20) * s.scale + 1)
        if rng.uniform() < 0.5:  # rising shell trail
            lx, ly, lt = line_points(cx + rng.uniform(-5, 5), hy, cx, cy, spacing=1.0)
            draw_line(s.event, lx, ly, s.noise * rng.uniform(2, 10) * (0.5 + 0.5 * np.sin(lt * 40) ** 2), s.psf, 1.0)
    s.event *= 1 - s.ground


def render_empty(scene: Scene) -> None:
    pass


EVENT_RENDERERS: Dict[str, Callable[[Scene], None]] = {
    **{m: (lambda sc, _m=m: render_meteor(sc, _m)) for m in METEOR_SUB_LABELS},
    "airplane": render_airplane,
    "satellite": render_satellite,
    "bird_bat_insect": render_bird_bat_insect,
    "lightning_storm": render_lightning,
    "cloud_lit": render_cloud_lit,
    "rain_dew": render_rain_dew,
    "firework": render_firework,
    "empty_sky": render_empty,
}


# ---------------------------------------------------------------------------------------------------------------
# Camera output: frame, caption, GMN crop, cut-out
# ---------------------------------------------------------------------------------------------------------------

_FONTS: Dict[int, ImageFont.ImageFont] = {}


def _font(size: int):
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType: the fixed bitmap font
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


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
