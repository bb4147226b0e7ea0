"""Low-level drawing helpers of the `night_sky` renderer: numpy (+ Pillow resizes, scipy blurs) primitives that add
light to a float32 image in place or build smooth fields, knowing nothing of scenes or labels.

- `_resize` (Pillow resize of a float32 array), `_fractal` (zero-mean unit-variance fractal noise), `_smoothstep`;
- `splat` (Gaussian spots), `line_points` (points along a slightly curved segment), `draw_line` (a line of a given
  cross-section peak), `blurred_points` (points blurred by a Gaussian or a defocus ring).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage, signal


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
