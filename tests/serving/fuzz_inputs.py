"""Seeded fuzz inputs for the decoders and the server, and a runner that feeds them to the in-process decode path.

Run as a script (`python -m tests.serving.fuzz_inputs N SEED`) so that a crash in a native decoder shows as the
child's exit status instead of killing pytest; prints one JSON line: counts of accepted / refused inputs, the
slowest input's seconds, and any input that raised something other than the documented refusal.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time

import numpy as np

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF")


def seed_images(rng) -> list:
    """Small valid captures in every format the decoders take (the mutation seeds)."""
    from PIL import Image

    out = []
    for i, fmt in enumerate(FORMATS):
        pixels = rng.integers(0, 40, (40 + 8 * i, 56, 1), dtype=np.uint8)
        pixels[10, 5:50] = 220
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0]).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


def mutate(rng, data: bytes) -> bytes:
    """One random damage of an encoded image: flipped bytes (header or body), truncation, a spliced-in chunk, or
    header size fields rewritten to huge or zero values."""
    b = bytearray(data)
    how = int(rng.integers(0, 5))
    if how == 0:  # flip bytes in the header
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, min(len(b), 64)))] = int(rng.integers(0, 256))
    elif how == 1:  # flip bytes anywhere
        for _ in range(int(rng.integers(1, 20))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
    elif how == 2:  # truncate
        b = b[:int(rng.integers(0, len(b)))]
    elif how == 3:  # splice random bytes in
        at = int(rng.integers(0, len(b)))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    else:  # 0x00/0xff runs over the first 32 bytes: width/height fields become 0 or 65535
        at = int(rng.integers(0, min(len(b), 32)))
        b[at:at + 4] = bytes([0xFF if rng.uniform() < 0.5 else 0x00] * 4)
    return bytes(b)


def image_inputs(n: int, seed: int) -> list:
    """`n` byte strings: random bytes, bare magic numbers with garbage, and mutated valid images."""
    rng = np.random.default_rng(seed)
    seeds = seed_images(rng)
    magics = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
    out = []
    for i in range(n):
        r = i % 4
        if r == 0:
            out.append(rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes())
        elif r == 1:
            out.append(magics[i % len(magics)] + rng.integers(0, 256, int(rng.integers(0, 300)),
                                                              dtype=np.uint8).tobytes())
        else:
            out.append(mutate(rng, seeds[i % len(seeds)]))
    return out


def json_bodies(n: int, seed: int) -> list:
    """`n` request bodies (bytes): random JSON values, TF Serving shapes with wrong types, damaged images in a
    well-formed request, and non-JSON bytes."""
    rng = np.random.default_rng(seed + 1)
    images = image_inputs(max(n // 3, 1), seed + 2)

    def value(depth=0):
        k = int(rng.integers(0, 7 if depth < 3 else 4))
        if k == 0:
            return None
        if k == 1:
            return bool(rng.integers(0, 2))
        if k == 2:
            return float(rng.normal() * 10 ** int(rng.integers(0, 12)))
        if k == 3:
            return "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, int(rng.integers(0, 12))))
        if k == 4:
            return [value(depth + 1) for _ in range(int(rng.integers(0, 4)))]
        keys = ("instances", "inputs", "b64", "image_bytes", "signature_name", "x")
        return {keys[int(rng.integers(0, len(keys)))]: value(depth + 1) for _ in range(int(rng.integers(0, 4)))}

    out = []
    for i in range(n):
        r = i % 5
        if r == 0:
            body = json.dumps(value()).encode()
        elif r == 1:
            body = json.dumps({"instances": value()}).encode()
        elif r == 2:
            body = json.dumps({"instances": [{"b64": base64.b64encode(images[i % len(images)]).decode()}]}).encode()
        elif r == 3:
            body = json.dumps({"inputs": {"image_bytes": [{"b64": value()}]}}).encode()
        else:
            body = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        out.append(body)
    return out


def run(n: int, seed: int) -> dict:
    """Feed `n` image inputs through the serving decode path (check → prepare → the SavedModel's TF decode and
    model-input rule) and `n` bodies through the request parser; refusals must be the documented ones."""
    import tensorflow as tf

    from meteor_tf.data import preprocess
    from meteor_tf.serving import client, server

    decode = tf.function(lambda b: preprocess.preprocess_bytes(b, 32))
    counts = {"images": 0, "images_accepted": 0, "bodies": 0, "bodies_accepted": 0}
    unexpected, slowest = [], 0.0
    for data in image_inputs(n, seed):
        t0 = time.perf_counter()
        try:
            prepared = client.prepare_image_bytes(data)
            decode(tf.constant(prepared))
            counts["images_accepted"] += 1
        except (client.InvalidImageError, tf.errors.InvalidArgumentError):
            pass
        except Exception as e:  # noqa: BLE001 — what the test is looking for
            unexpected.append(f"image {data[:16]!r}…: {type(e).__name__}: {e}"[:300])
        counts["images"] += 1
        slowest = max(slowest, time.perf_counter() - t0)
    for body in json_bodies(n, seed):
        t0 = time.perf_counter()
        try:
            server.parse_request(body)
            counts["bodies_accepted"] += 1
        except server.InvalidInput:
            pass
        except Exception as e:  # noqa: BLE001
            unexpected.append(f"body {body[:40]!r}…: {type(e).__name__}: {e}"[:300])
        counts["bodies"] += 1
        slowest = max(slowest, time.perf_counter() - t0)
    return {**counts, "slowest_s": round(slowest, 3), "unexpected": unexpected}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]), int(sys.argv[2]))))
