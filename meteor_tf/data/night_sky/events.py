"""Events of a `night_sky` scene: what each sub-label adds to a `Scene` (`EVENT_RENDERERS[sub_label](scene)`).

Meteors (`render_meteor`, one variant per meteor sub-label) and everything else a night-sky camera catches
(planes, satellites, birds / bats / insects, lightning, lit clouds, rain and dew, fireworks, nothing). A
renderer draws into `scene.event` (what the event adds to the frame), may set `scene.moving` (what a
max-minus-average image shows), `scene.foreground` (the event is in front of the site) and `scene.track` (a streak
as drawn, read by tests), and some change `scene.static` (clouds hiding stars, dew blurring the lens).
Brightnesses are drawn in multiples of the scene's noise sigma, so "faint" means faint for that camera.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np
from scipy import ndimage

from meteor_tf.data.night_sky.drawing import _fractal, _smoothstep, blurred_points, draw_line, line_points, splat
from meteor_tf.data.night_sky.labels import METEOR_SUB_LABELS
from meteor_tf.data.night_sky.sky import Scene


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
