"""Pins the night_sky captures: a refactor of the renderer must leave every capture as it was.

The fixture `night_sky_pins_<VERSION>.npz` (written by `make_night_sky_pins.py`, which documents when to run it)
holds the 16 captures of `generate_examples(meteors=10, non_meteors=6, seed=3, small=True)`: ids, labels,
sub-labels, kinds, scene ids, decoded JPEG pixels and the uint8 images before JPEG encoding ("raw").

Pixels are compared within a tolerance that survives CPU-dependent float rounding (AVX2 vs AVX-512 sums, library
builds) but not a real change:
- every image, decoded and raw: at least 99% of pixels within ±2 grey levels and a mean |difference| under 0.5;
- raw images also closely: at most 0.1% of pixels (at least 2 allowed) differ, by 1 grey level at most. Rounding
  noise flips isolated pixels by 1 before JPEG encoding (JPEG then spreads a flip over its 8x8 block, hence the
  looser rule above), while a small real change (say a satellite's jitter 0.03 -> 0.04, which the looser rule lets
  through) moves more pixels.
The sha256 of the JPEG and raw bytes is shown in the failure messages only, never asserted.
"""

import glob
import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WITHIN = 2  # grey levels
MIN_SHARE_WITHIN = 0.99  # of an image's pixels
MAX_MEAN_ABS_DIFF = 0.5  # grey levels
RAW_MAX_SHARE_DIFFERENT = 0.001  # of a raw image's pixels (but at least RAW_MIN_ALLOWED pixels)
RAW_MIN_ALLOWED = 2
RAW_MAX_ABS_DIFF = 1  # grey levels


def _maker():
    spec = importlib.util.spec_from_file_location("make_night_sky_pins", os.path.join(HERE, "make_night_sky_pins.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _version():
    from meteor_tf.data.night_sky import builder

    return str(builder.VERSION)


REGENERATE = ("the night_sky generator VERSION changed: if the captures are meant to change, run "
              "`.venv/bin/python tests/data/make_night_sky_pins.py`, delete the old pin file and commit the new one")


@pytest.fixture(scope="module")
def pinned():
    """The pins of the current VERSION or, if there are none, the only pin file there is (whose recorded version
    then fails test_pins_are_for_the_current_version)."""
    path = _maker().pin_path(_version())
    if not os.path.exists(path):
        found = sorted(glob.glob(os.path.join(HERE, "night_sky_pins_*.npz")))
        if len(found) != 1:
            pytest.fail(f"no pins for night_sky {_version()} ({os.path.basename(path)} missing; found "
                        f"{[os.path.basename(p) for p in found]}): {REGENERATE}")
        path = found[0]
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def fresh():
    return _maker().collect()


def test_pins_are_for_the_current_version(pinned):
    assert str(pinned["version"]) == _version(), f"pins are for {pinned['version']}, not {_version()}: {REGENERATE}"


def test_metadata_matches_pins(pinned, fresh):
    assert list(fresh["ids"]) == [str(s) for s in pinned["ids"]]
    assert list(fresh["labels"]) == [int(v) for v in pinned["labels"]]
    assert list(fresh["sub_labels"]) == [str(s) for s in pinned["sub_labels"]]
    assert list(fresh["kinds"]) == [str(s) for s in pinned["kinds"]]
    assert list(fresh["scene_ids"]) == [int(v) for v in pinned["scene_ids"]]


def _loose(d):
    share, mad = float(np.mean(d <= WITHIN)), float(d.mean())
    if share < MIN_SHARE_WITHIN or mad >= MAX_MEAN_ABS_DIFF:
        return (f"{share:.2%} of pixels within ±{WITHIN} (need {MIN_SHARE_WITHIN:.0%}), mean |diff| {mad:.3f} "
                f"(need < {MAX_MEAN_ABS_DIFF})")
    return None


def _close(d):
    allowed = max(RAW_MIN_ALLOWED, int(RAW_MAX_SHARE_DIFFERENT * d.size))
    if int((d > 0).sum()) > allowed or int(d.max()) > RAW_MAX_ABS_DIFF:
        return f"more than {allowed} pixels differ or some by more than {RAW_MAX_ABS_DIFF}"
    return None


CHECKS = {  # test id: (which images, rule)
    "pixels": ("pixels", _loose),
    "raw": ("raw", _loose),
    "raw_close": ("raw", _close),
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_images_match_pins(pinned, fresh, check):
    """Decoded JPEG pixels ("pixels") and render_scene's uint8 output before encoding ("raw") match the pins."""
    what, rule = CHECKS[check]
    ids = [str(s) for s in pinned["ids"]]
    assert sorted(fresh[what]) == sorted(ids)
    sha_key, name = ("jpeg_sha256", "JPEG") if what == "pixels" else ("raw_sha256", "raw")
    failures, same_bytes = [], 0
    for i, eid in enumerate(ids):
        same = fresh[sha_key][i] == str(pinned[sha_key][i])
        same_bytes += same
        note = (f"{name} sha256 identical" if same else
                f"{name} sha256 {fresh[sha_key][i][:12]}… vs pinned {str(pinned[sha_key][i])[:12]}…")
        got, want = fresh[what][eid], pinned[eid if what == "pixels" else f"{eid}__raw"]
        if got.shape != want.shape:
            failures.append(f"{eid} {what}: shape {got.shape} != pinned {want.shape} ({note})")
            continue
        d = np.abs(got.astype(np.int16) - want.astype(np.int16))
        why = rule(d)
        if why:
            failures.append(f"{eid} {what}: {why}; max |diff| {int(d.max())}, {int((d > 0).sum())}/{d.size} pixels "
                            f"differ ({note})")
    assert not failures, (f"{len(failures)} of {len(ids)} night_sky captures differ from the pins ({check} rule; "
                          f"{same_bytes}/{len(ids)} byte-identical):\n  " + "\n  ".join(failures) +
                          "\nThe renderer's output changed. A refactor must not change it; a deliberate change needs a "
                          "new VERSION and new pins (tests/data/make_night_sky_pins.py).")
