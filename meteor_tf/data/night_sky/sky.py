"""Camera, sky and site of a `night_sky` scene: the `Scene` one camera sees before any event is drawn in it.

`_make_scene` draws a camera (all-sky, CCTV or DSLR: frame size, read noise, PSF, stacked video or not), the sky
(brightness, glow, moon or glare, Milky Way, clouds), the site (an all-sky lens's rim of trees and buildings, or a
horizon with trees, buildings, lit windows) and the stars, all from the same distributions for every sub-label: the
two classes overlap in global brightness statistics, only the event (`events`) differs.

Brightnesses are display values (0..255); stars are drawn in multiples of the camera's noise sigma.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from meteor_tf.data.night_sky.drawing import _fractal, _resize, _smoothstep, blurred_points, splat
from meteor_tf.data.night_sky.labels import SizeProfile


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


class _Camera(NamedTuple):
    """What the camera fixes before the sky is drawn (`_draw_camera`)."""

    camera: str  # "cctv", "allsky" or "dslr"
    w: int
    h: int
    scale: float  # linear size relative to a 640x480 frame
    noise: float  # read-noise sigma (DN)
    psf: float  # star PSF sigma (px)
    stacked: bool


@dataclasses.dataclass
class _Layers:
    """The light of a scene under construction, before the stars, which the stages of `_make_scene` add to."""

    w: int
    h: int
    yy: np.ndarray  # row coordinates, (h, 1)
    xx: np.ndarray  # column coordinates, (1, w)
    hl: int  # size of the coarse grid (see `_blank_layers`)
    wl: int
    YY: np.ndarray  # coarse grid's cell centres in frame rows, (hl, 1)
    XX: np.ndarray  # coarse grid's cell centres in frame columns, (1, wl)
    smooth: np.ndarray  # smooth light on the coarse grid: sky level, glow, twilight, glare, Milky Way, clouds
    sharp: np.ndarray  # sharp light at full size: lit windows, the moon's disc
    sky_mask: np.ndarray  # 1 inside the imaged sky (all-sky circle), else 0
    ground: np.ndarray  # 1 where the site hides the sky
    lights: List[Tuple[float, float]]  # bright site lights (x, y)
    horizon_y: float  # mean horizon height (rows), h if none
    cx: float  # optical centre (the all-sky circle's centre): lens flare ghosts mirror through it
    cy: float


def _make_scene(rng, allsky: bool, sizes: SizeProfile, force_stacked=False, dslr=False) -> Scene:
    """The static scene of one camera: an all-sky, a CCTV (640x480 or PAL 720x576) or a DSLR camera (`dslr`: a 3:2
    long exposure, low read noise, many stars, stars often trailed, no caption). The camera is drawn by the caller
    independently of the event.

    Its stages draw from `rng` in this order, and that order fixes every capture of the dataset's VERSION (the
    pins of tests/data/test_night_sky_pins.py): camera, sky level, sky-glow gradient, site (an all-sky lens's rim;
    for other cameras a horizon 65% of the time, else open sky), the site's own light, moon or glare, Milky Way,
    clouds, stars, then the site's lights and their lens flare ghosts."""
    cam = _draw_camera(rng, allsky, sizes, force_stacked, dslr)
    sky_level = _draw_sky_level(rng)
    lay = _blank_layers(cam.w, cam.h, sky_level)
    _sky_glow_gradient(rng, lay, sky_level)
    if allsky:
        _allsky_site(rng, lay, sky_level)
    elif rng.uniform() < 0.65:  # otherwise open sky down to the frame's edges
        _horizon_site(rng, lay, sky_level, cam.scale)
    glevel = _ground_light(rng, lay, sky_level)
    _moon_or_glare(rng, lay, cam.scale)
    _milky_way(rng, lay, sky_level, cam.camera)
    cover = _clouds(rng, lay, sky_level)
    static = _static_light(lay, glevel)
    stars = _stars(rng, cam, lay, sky_level, cover)
    static += stars * (1 - lay.ground) * lay.sky_mask

    scene = Scene(rng=rng, w=cam.w, h=cam.h, allsky=allsky, stacked=cam.stacked, camera=cam.camera,
                  noise=cam.noise, psf=cam.psf, sky_level=sky_level, static=static, stars=stars, ground=lay.ground,
                  lights=lay.lights, horizon_y=lay.horizon_y, sky_mask=lay.sky_mask, scale=cam.scale)
    scene.event = np.zeros((cam.h, cam.w), np.float32)
    _site_lights(scene, lay.cx, lay.cy)
    return scene


def _draw_camera(rng, allsky: bool, sizes: SizeProfile, force_stacked: bool, dslr: bool) -> _Camera:
    """The camera: its kind, frame size (a CCTV camera is PAL 45% of the time), read noise, star PSF and whether
    its capture is a stacked video (always for `force_stacked`)."""
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
    return _Camera(camera=camera, w=w, h=h, scale=scale, noise=noise, psf=psf, stacked=stacked)


def _draw_sky_level(rng) -> float:
    # Sky brightness: mostly dark, some grey (moonlit / urban / gain: UFOCapture frames are often mid-grey), drawn
    # independently of the event.
    return float(rng.choice([rng.uniform(4, 25), rng.uniform(20, 60), rng.uniform(50, 110)], p=[0.5, 0.3, 0.2]))


def _blank_layers(w: int, h: int, sky_level: float) -> _Layers:
    """Layers of a w×h frame holding only the sky level: no site (all sky, no ground, no lights), the optical
    centre in the middle."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    # smooth light (sky glow, twilight, glare) is computed on a 4x coarser grid and upsampled once
    hl, wl = max(4, h // 4), max(4, w // 4)
    YY = ((np.arange(hl, dtype=np.float32) + 0.5) * h / hl)[:, None]
    XX = ((np.arange(wl, dtype=np.float32) + 0.5) * w / wl)[None, :]
    return _Layers(w=w, h=h, yy=yy, xx=xx, hl=hl, wl=wl, YY=YY, XX=XX,
                   smooth=np.full((hl, wl), sky_level, np.float32), sharp=np.zeros((h, w), np.float32),
                   sky_mask=np.ones((h, w), np.float32), ground=np.zeros((h, w), np.float32), lights=[],
                   horizon_y=float(h), cx=w / 2, cy=h / 2)


def _sky_glow_gradient(rng, lay: _Layers, sky_level: float) -> None:
    # sky-glow plane gradient
    g = rng.uniform(0, 0.5) * sky_level
    ang = rng.uniform(0, 2 * np.pi)
    lay.smooth += g * ((lay.XX / lay.w - 0.5) * np.cos(ang) + (lay.YY / lay.h - 0.5) * np.sin(ang))


def _allsky_site(rng, lay: _Layers, sky_level: float) -> None:
    """An all-sky lens: the imaged circle (centre jittered), sky glow rising toward its rim, trees / buildings
    around the rim and a few lights on it."""
    w, h, xx, yy, XX, YY = lay.w, lay.h, lay.xx, lay.yy, lay.XX, lay.YY
    cx, cy = w / 2 + rng.uniform(-0.02, 0.02) * w, h / 2 + rng.uniform(-0.02, 0.02) * h
    R = h * rng.uniform(0.46, 0.5)
    r = np.hypot(xx - cx, yy - cy) / R
    phi = np.arctan2(yy - cy, xx - cx)
    lay.sky_mask = (r < 1).astype(np.float32)
    # sky glow rises toward the horizon (airmass), more on the city side
    rl = np.hypot(XX - cx, YY - cy) / R
    phil = np.arctan2(YY - cy, XX - cx)
    city = rng.uniform(-np.pi, np.pi)
    lay.smooth += sky_level * (rng.uniform(0.3, 1.2) * rl ** 3 + rng.uniform(0, 1.5) * rl ** 4 * np.clip(np.cos(phil - city), 0, 1) ** 2)
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
    lay.ground = ((r > 1 - depth + fine) & (r < 1)).astype(np.float32)
    n_lights = rng.poisson(2.5)
    for _ in range(n_lights):
        a = rng.uniform(-np.pi, np.pi)
        rr = rng.uniform(0.86, 0.97)
        lay.lights.append((cx + rr * R * np.cos(a), cy + rr * R * np.sin(a)))
    lay.cx, lay.cy = cx, cy


def _horizon_site(rng, lay: _Layers, sky_level: float, scale: float) -> None:
    """A horizon with buildings and trees along the bottom (sometimes a side) of the frame, the twilight / city
    glow just above it, lit windows and site lights."""
    w, h, XX, YY = lay.w, lay.h, lay.XX, lay.YY
    base, tilt, prof, windows = _skyline(rng, w, h, scale)
    lay.ground = (lay.yy >= prof[None, :]).astype(np.float32)
    lay.horizon_y = float(prof.mean())
    # twilight / city glow just above the horizon
    glow = rng.uniform(0, 1.6) * sky_level * rng.uniform(0, 1) ** 2
    sp = base + tilt * (XX / w - 0.5)
    lay.smooth += glow * np.exp(-np.clip(sp - YY, 0, None) / (rng.uniform(0.1, 0.4) * h))
    _lit_windows(rng, lay.sharp, windows, scale)
    for _ in range(rng.poisson(1.3)):
        lx = rng.uniform(0, w)
        ly = prof[int(min(w - 1, max(0, lx)))] + rng.uniform(-15, 25) * scale
        lay.lights.append((lx, min(h - 2, ly)))


def _skyline(rng, w: int, h: int, scale: float):
    """The horizon's profile (the top row of the site in each column): a tilted base line, trees and up to 6
    buildings. Returns (base, tilt, profile, buildings as (x0, x1, top))."""
    base = h * (1 - rng.uniform(0.04, 0.3))
    tilt = rng.uniform(-0.08, 0.08) * h
    x = np.arange(w, dtype=np.float32)
    prof = base + tilt * (x / w - 0.5)
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
    return base, tilt, prof, windows


def _lit_windows(rng, sharp: np.ndarray, windows, scale: float) -> None:
    # lit windows
    h = sharp.shape[0]
    for x0, x1, top in windows:
        nwin = rng.poisson(max(1.0, (x1 - x0) / (30 * scale)) * rng.uniform(0, 2))
        for _ in range(nwin):
            wx = int(rng.uniform(x0, x1))
            wy = int(rng.uniform(top + 3, min(h - 1, top + 120 * scale)))
            ww, wh = max(1, int(rng.uniform(2, 6) * scale)), max(1, int(rng.uniform(2, 6) * scale))
            if 0 <= wy < h:
                sharp[wy:wy + wh, wx:wx + ww] += rng.uniform(20, 160)


def _ground_light(rng, lay: _Layers, sky_level: float) -> np.ndarray:
    """The site's own light (a fraction of the sky level, textured), on the coarse grid."""
    gtex = _fractal(rng, lay.hl, lay.wl, base=8, octaves=3)
    return sky_level * rng.uniform(0.15, 0.8) * (1 + 0.12 * gtex)


def _moon_or_glare(rng, lay: _Layers, scale: float) -> None:
    # Moon or city glare from outside the frame; sometimes the moon in the frame
    w, h, xx, yy, XX, YY, cx, cy = lay.w, lay.h, lay.xx, lay.yy, lay.XX, lay.YY, lay.cx, lay.cy
    mr = rng.uniform()
    if mr < 0.15:
        a = rng.uniform(0, 2 * np.pi)
        px, py = cx + np.cos(a) * 0.9 * w, cy + np.sin(a) * 0.9 * h
        d = np.hypot(XX - px, YY - py) / math.hypot(w, h)
        lay.smooth += rng.uniform(15, 120) * np.exp(-d / rng.uniform(0.1, 0.35))
    elif mr < 0.21:
        mx, my = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.6) * h
        d = np.hypot(XX - mx, YY - my)
        rad = rng.uniform(5, 12) * scale + 1
        k = int(rad + 4)
        y0, x0 = max(0, int(my) - k), max(0, int(mx) - k)
        dd = np.hypot(xx[:, x0:int(mx) + k] - mx, yy[y0:int(my) + k] - my)
        lay.sharp[y0:int(my) + k, x0:int(mx) + k] += 255 * _smoothstep((rad - dd) / 1.5 + 1)
        lay.smooth += rng.uniform(40, 120) * np.exp(-d / (rng.uniform(15, 60) * scale + 1))
        lay.smooth += rng.uniform(5, 30) * np.exp(-d / (rng.uniform(100, 300) * scale + 1))
        lay.lights.append((mx, my))


def _milky_way(rng, lay: _Layers, sky_level: float, camera: str) -> None:
    # Milky Way band on dark skies
    w, h, hl, wl, XX, YY = lay.w, lay.h, lay.hl, lay.wl, lay.XX, lay.YY
    if sky_level < 30 and rng.uniform() < (0.35 if camera == "dslr" else 0.15):
        a = rng.uniform(0, np.pi)
        d = (XX - rng.uniform(0.2, 0.8) * w) * np.sin(a) - (YY - rng.uniform(0.2, 0.8) * h) * np.cos(a)
        band = np.exp(-0.5 * (d / (rng.uniform(0.06, 0.15) * math.hypot(w, h))) ** 2)
        lay.smooth += band * rng.uniform(3, 12) * np.clip(1 + 0.6 * _fractal(rng, hl, wl, base=6, octaves=4), 0, None)


def _clouds(rng, lay: _Layers, sky_level: float) -> Optional[np.ndarray]:
    """Occasional clouds (both classes) in the smooth light; returns their cover of the sky at full size (what they
    hide of the stars), None without clouds."""
    if rng.uniform() < 0.25:
        cl = _smoothstep((_fractal(rng, lay.hl, lay.wl, base=2) - rng.uniform(-0.3, 1.2)) * rng.uniform(0.5, 1.5))
        lay.smooth += cl * sky_level * rng.uniform(0.1, 1.0)
        return _resize(cl, lay.h, lay.w, Image.BILINEAR) * (1 - lay.ground)
    return None


def _static_light(lay: _Layers, glevel: np.ndarray) -> np.ndarray:
    """Everything but the stars at full size: the smooth light over the sky, the site's own light over the site,
    plus the sharp light."""
    h, w = lay.h, lay.w
    static = _resize(lay.smooth, h, w, Image.BILINEAR)
    return static * (1 - lay.ground) + lay.ground * _resize(glevel, h, w, Image.BILINEAR) + lay.sharp


def _stars(rng, cam: _Camera, lay: _Layers, sky_level: float, cover: Optional[np.ndarray]) -> np.ndarray:
    """The star layer: counts and limiting magnitude from the sky level and the field of view, dimmed toward an
    all-sky lens's rim, trailed in stacked videos and half the DSLR exposures, hidden by the clouds' `cover`."""
    w, h, noise, psf, scale = cam.w, cam.h, cam.noise, cam.psf, cam.scale
    stars = np.zeros((h, w), np.float32)
    m_lim = rng.uniform(3.0, 6.0) - max(0, (sky_level - 30) / 40)
    fov = rng.uniform(0.5, 2.0) * {"cctv": 1, "allsky": 8, "dslr": 6}[cam.camera]
    n = int(min(6000, 180 * fov * 10 ** (0.42 * (m_lim + 0.7 - 5))))
    mags = _magnitudes(rng, n, -1.5, m_lim + 0.7)
    sx, sy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    peak = noise * 2.2 * 10 ** (-0.4 * (mags - m_lim))
    if cam.camera == "allsky":
        rr = np.hypot(sx - lay.cx, sy - lay.cy) / (h * 0.48)
        peak *= np.clip(1.2 - rr ** 4, 0, 1)
    peak = np.minimum(peak, 3000)
    # a stacked video drifts the stars a little; a DSLR exposure of tens of seconds trails them all alike
    trailed = cam.camera == "dslr" and rng.uniform() < 0.5
    if cam.stacked or trailed:
        tl = (rng.uniform(1.0, 4.0) if cam.stacked else rng.uniform(1.5, 7.0)) * scale + 0.5
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
    return stars


def _site_lights(scene: Scene, cx: float, cy: float) -> None:
    """The site's bright lights in `scene.static`: street lights with their halo and, 40% of the time, lens flare
    ghosts mirrored through the optical centre (cx, cy)."""
    rng, static, psf, scale = scene.rng, scene.static, scene.psf, scene.scale
    # street lights and lens flare ghosts
    for lx, ly in scene.lights:
        a = rng.uniform(80, 255)
        splat(static, [lx], [ly], [a * 3], psf * 1.5)
        splat(static, [lx], [ly], [a * rng.uniform(0.05, 0.3)], rng.uniform(5, 25) * scale + 1)
        if rng.uniform() < 0.4:
            for f in rng.uniform(-1.4, -0.3, rng.integers(1, 4)):
                gx, gy = cx + f * (lx - cx), cy + f * (ly - cy)
                blurred_points(static, [gx], [gy], rng.uniform(2, 10), rng.uniform(4, 16) * scale + 1, ring=True)
