"""Seeded fuzz of the decoders and the request parser (issue: nothing silently wrong): random bytes, damaged
JPEG/PNG/GIF/BMP/TIFF, random JSON bodies. Each input must be accepted or refused with the documented error
(InvalidImageError / the decoder's InvalidArgumentError / InvalidInput, which become HTTP 400) — never another
exception, never a crash of the process (it runs in a child, so a native crash shows as its exit status), never a
hang. The server itself is fuzzed over HTTP in test_server.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fuzz(n: int, seed: int, timeout: int) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-m", "tests.serving.fuzz_inputs", str(n), str(seed)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"fuzz child died with {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_decoders_and_parser_refuse_damaged_input_cleanly():
    report = _fuzz(400, seed=0, timeout=120)  # 800 inputs: 400 images, 400 bodies
    assert report["unexpected"] == []
    assert report["images"] == 400 and report["bodies"] == 400
    # both sides of the line are exercised: some damaged images still decode, most are refused
    assert 0 < report["images_accepted"] < report["images"]
    assert 0 < report["bodies_accepted"] < report["bodies"]
    assert report["slowest_s"] < 5.0, "one input took seconds: a decoder is doing work the header did not justify"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_decoders_and_parser_fuzz_more_seeds(seed):
    report = _fuzz(3000, seed=seed, timeout=600)
    assert report["unexpected"] == [] and report["slowest_s"] < 5.0
