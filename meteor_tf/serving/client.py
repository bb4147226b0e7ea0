"""One interface over every way a meteor_tf model answers: in process, or a server speaking TF Serving's predict API.

    backend = open_backend(model="savedmodels/meteor")        # in process: newest SavedModel version
    backend = open_backend(model="meteor_int8.tflite")        # in process: TFLite (decoding outside the interpreter)
    backend = open_backend(server="http://127.0.0.1:8501")    # REST: TF Serving or `python -m meteor_tf.serve`
    backend = open_backend(server="grpc://127.0.0.1:8500")    # gRPC PredictionService: the same two servers
    backend.predict_bytes([open("FF_0001.jpg", "rb").read()]) # Predictions(meteor_probability, label, class_id)

The clients use nothing but the predict API (REST `POST /v1/models/NAME:predict`, gRPC `PredictionService/Predict` on
the `serving_default` signature's `image_bytes` input), so they work against TF Serving's own binary or Docker image,
a KServe InferenceService, or `meteor_tf.serve`. Model status is the one place those servers answer differently (TF
Serving: `{"model_version_status": [...]}`, KServe: `{"name": ..., "ready": ...}`, `meteor_tf.serve`: both in one
body); `parse_status` reads each, TF Serving's first (it carries the version).

Errors: `InvalidImageError` means the images of this request were refused (the caller may retry them one by one to
find the bad file); any other `ServingError` (server unreachable, unknown model, server failure) ends the run.
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import io
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import numpy as np

from meteor_tf import CLASS_NAMES, METEOR
from meteor_tf.config import DEFAULT_INPUT_RULE

DEFAULT_MODEL_NAME = "meteor"
DEFAULT_TIMEOUT_S = 120.0
SIGNATURE = "serving_default"
INPUT_NAME = "image_bytes"
OUTPUT_NAMES = ("meteor_probability", "label", "class_id")
GRPC_MAX_MESSAGE_BYTES = 256 * 2**20  # a client-side ceiling only; the server's own limit decides


class ServingError(Exception):
    """A prediction could not be made for a reason that ends the run (the message says what to do)."""


class ServerUnavailableError(ServingError, ConnectionError):
    """The server cannot be reached (not running, wrong host or port, or timed out)."""


class InvalidImageError(ServingError, ValueError):
    """The images of one request were refused: not an image, damaged, too large, or rejected by the server."""


@dataclasses.dataclass
class Predictions:
    """The three outputs of the `serving_default` signature, one entry per image, in request order."""

    meteor_probability: np.ndarray  # float32 (N,)
    label: List[str]  # "meteor" / "non_meteor"
    class_id: np.ndarray  # int32 (N,), 0 = meteor

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def from_outputs(cls, outputs: Dict[str, object]) -> "Predictions":
        """From the signature's outputs (numpy arrays or lists); labels may be bytes (tf.string) or str."""
        missing = [k for k in OUTPUT_NAMES if k not in outputs]
        if missing:
            raise ServingError(f"the model's answer lacks the output(s) {', '.join(missing)} (got "
                               f"{', '.join(sorted(outputs)) or 'none'}); is it a meteor_tf export?")
        labels = [_text(v) for v in np.asarray(outputs["label"], dtype=object).reshape(-1)]
        probability = np.asarray(outputs["meteor_probability"], np.float32).reshape(-1)
        class_id = np.asarray(outputs["class_id"]).astype(np.int32).reshape(-1)
        if not len(probability) == len(labels) == len(class_id):
            raise ServingError(f"the model's outputs disagree in length ({len(probability)}, {len(labels)}, "
                               f"{len(class_id)})")
        return cls(probability, labels, class_id)

    @classmethod
    def from_probabilities(cls, probability, threshold: float) -> "Predictions":
        """Labels from probabilities with the recall-first rule the export uses: meteor when p >= threshold."""
        probability = np.asarray(probability, np.float32).reshape(-1)
        class_id = np.where(probability >= threshold, METEOR, 1 - METEOR).astype(np.int32)
        return cls(probability, [CLASS_NAMES[i] for i in class_id], class_id)

    def rows(self) -> List[dict]:
        """One JSON-ready dict per image, the shape of TF Serving's row-format `predictions`."""
        return [{"meteor_probability": float(p), "label": l, "class_id": int(c)}
                for p, l, c in zip(self.meteor_probability, self.label, self.class_id)]

    def columns(self) -> dict:
        """JSON-ready columns, the shape of TF Serving's columnar `outputs`."""
        return {"meteor_probability": [float(p) for p in self.meteor_probability], "label": list(self.label),
                "class_id": [int(c) for c in self.class_id]}


@dataclasses.dataclass
class ModelStatus:
    name: str
    ready: bool
    version: Optional[int] = None  # None when the server does not say (KServe)
    detail: str = ""


def _text(value) -> str:
    if isinstance(value, dict) and "b64" in value:  # TF Serving base64-encodes string outputs named *_bytes
        value = base64.b64decode(value["b64"])
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray, np.bytes_)) else str(value)


# ----------------------------------------------------------------------------------------------------
# Image bytes: the checks every backend applies before inference


def check_image_bytes(data: bytes, max_pixels: Optional[int] = None) -> str:
    """The Pillow format name of encoded image bytes that look usable (header only); InvalidImageError otherwise.

    The same rules as `meteor_tf.data.folder.check_image_file` (formats, minimum side, pixel limit), on bytes.
    """
    from PIL import Image, UnidentifiedImageError

    from meteor_tf.data import folder

    max_pixels = folder.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if not data:
        raise InvalidImageError("empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(io.BytesIO(data)) as image:  # parses the header only
                fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError as e:
        raise InvalidImageError(f"image too large: {e}") from None
    except UnidentifiedImageError:
        raise InvalidImageError("not an image (JPEG, PNG, BMP, GIF or TIFF bytes expected)") from None
    except Exception as e:  # noqa: BLE001 — Pillow raises assorted errors on damaged headers
        raise InvalidImageError(f"damaged image header ({type(e).__name__}: {e})") from None
    if fmt not in folder.TF_FORMATS + folder.PIL_FORMATS:
        raise InvalidImageError(f"image format {fmt} is not supported (JPEG, PNG, BMP, GIF, TIFF are)")
    if width * height > max_pixels:
        raise InvalidImageError(f"image too large: {width}x{height} = {width * height / 1e6:.1f} megapixels, "
                                f"above the limit of {max_pixels / 1e6:g} megapixels")
    if min(width, height) < folder.MIN_SIDE:
        raise InvalidImageError(f"image too small: {width}x{height}, below {folder.MIN_SIDE} pixels a side")
    return fmt


def prepare_image_bytes(data: bytes, max_pixels: Optional[int] = None) -> bytes:
    """Checked bytes the `image_bytes` signature can decode: JPEG/PNG/BMP/GIF as they are, TIFF re-encoded as PNG.

    TensorFlow's decoders (the ones inside the SavedModel, and TF Serving's) do not read TIFF; Pillow reads it the
    way `meteor_tf.data.folder` does for training (16-bit → high byte), and a lossless 8-bit PNG of that carries
    exactly those pixels through the signature.
    """
    from meteor_tf.data import folder

    fmt = check_image_bytes(data, max_pixels)
    return reencode_with_pillow(data) if fmt in folder.PIL_FORMATS else bytes(data)


def first_undecodable(images: Sequence[bytes]) -> Optional[Tuple[int, str]]:
    """(index, message) of the first image TensorFlow's decoder (the one in the SavedModel) refuses, or None.

    Decoding only, no model: naming the bad image of a refused 1,000-image batch used to predict each image alone
    (16.8 s against 3.7 s for the batch); decoding them costs milliseconds."""
    import tensorflow as tf

    from meteor_tf.data.preprocess import decode_image

    for i, data in enumerate(images):
        try:
            decode_image(tf.constant(data))
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            return i, f"cannot decode the image: {_first_line(e)}"
    return None


def reencode_with_pillow(data: bytes) -> bytes:
    """Decode with Pillow as `meteor_tf.data.folder` does (TIFF, and whatever TensorFlow refuses) and re-encode the
    uint8 pixels as PNG; InvalidImageError when Pillow cannot decode them either."""
    from PIL import Image

    from meteor_tf.data import folder

    try:
        pixels = folder.read_with_pillow(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 — truncated or damaged data
        raise InvalidImageError(f"cannot decode the image ({type(e).__name__}: {e})") from None
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# Backends


class Backend(abc.ABC):
    """Encoded images in, `Predictions` out; `threshold` is the model's own when the backend knows it."""

    threshold: Optional[float] = None
    image_size: Optional[int] = None
    input_rule: str = DEFAULT_INPUT_RULE  # how a capture becomes the model's input (preprocess.INPUT_RULES)

    @abc.abstractmethod
    def predict_bytes(self, images: Sequence[bytes]) -> Predictions:
        """Predictions for a batch of encoded images; InvalidImageError when the batch is refused."""

    @abc.abstractmethod
    def status(self) -> ModelStatus:
        """Whether the model is ready (servers: ServerUnavailableError when unreachable)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for logs and summaries: what answers, and where."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalBackend(Backend):
    """A SavedModel export run in this process (`meteor_tf.serving.export.ExportedModel` on its bytes signature)."""

    def __init__(self, path, name: str = DEFAULT_MODEL_NAME):
        from meteor_tf.serving.export import ExportedModel, resolve_model

        self.path = resolve_model(path)
        self.name = name
        self.model = ExportedModel(self.path)
        self.threshold = float(self.model.threshold)
        self.image_size = int(self.model.image_size)
        self.input_rule = self.model.input_rule
        self.version = _int_or_none(os.path.basename(os.path.normpath(self.path)))

    def predict_bytes(self, images: Sequence[bytes]) -> Predictions:
        import tensorflow as tf

        try:
            outputs = self.model.predict_bytes(list(images))
        except (tf.errors.InvalidArgumentError, ValueError) as e:  # a decoder refused an image of the batch
            raise InvalidImageError(f"cannot decode the image: {_first_line(e)}") from None
        return Predictions.from_outputs(outputs)

    def status(self) -> ModelStatus:
        return ModelStatus(self.name, True, self.version, str(self.path))

    def describe(self) -> str:
        return f"SavedModel {self.path} (in process)"


class TFLiteBackend(Backend):
    """A `.tflite` model (`meteor_tf.serving.tflite.TFLiteModel`): decoding and resizing run in TensorFlow outside
    the interpreter (TFLite's builtin ops have no image decoders), through the same `preprocess` code as training."""

    def __init__(self, path, threshold: Optional[float] = None, name: str = DEFAULT_MODEL_NAME):
        from meteor_tf.serving.tflite import TFLiteModel

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"TFLite model {self.path} does not exist (convert one with "
                                    f"python -m meteor_tf.export --tflite, see the README)")
        self.name = name
        self.model = TFLiteModel(self.path)
        self.image_size = int(self.model.image_size)
        self.input_rule = self.model.input_rule
        stored = getattr(self.model, "threshold", None)
        if threshold is None and stored is None:
            raise ServingError(f"{self.path} has no threshold beside it ({_tflite_json(self.path)} missing); "
                               f"pass --threshold")
        self.threshold = float(stored if threshold is None else threshold)

    def predict_bytes(self, images: Sequence[bytes]) -> Predictions:
        import tensorflow as tf

        from meteor_tf.data import preprocess

        try:
            batch = np.stack([preprocess.preprocess_bytes(tf.constant(b), self.image_size, self.input_rule).numpy()
                              for b in images])
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            raise InvalidImageError(f"cannot decode the image: {_first_line(e)}") from None
        probability = np.asarray(self.model.predict_images(batch), np.float32).reshape(-1)
        return Predictions.from_probabilities(probability, self.threshold)

    def status(self) -> ModelStatus:
        return ModelStatus(self.name, True, None, self.path)

    def describe(self) -> str:
        return f"TFLite model {self.path} (in process)"


def _tflite_json(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


class RestClient(Backend):
    """TF Serving's REST predict API: `POST {url}/v1/models/{name}:predict` with `{"instances": [{"b64": ...}]}`."""

    def __init__(self, url: str, name: str = DEFAULT_MODEL_NAME, timeout: float = DEFAULT_TIMEOUT_S, session=None):
        import requests

        self.url = url.rstrip("/")
        self.name = name
        self.timeout = timeout
        self.session = session or requests.Session()
        self.model_url = f"{self.url}/v1/models/{name}"

    def predict_bytes(self, images: Sequence[bytes]) -> Predictions:
        body = {"signature_name": SIGNATURE,
                "instances": [{"b64": base64.b64encode(b).decode("ascii")} for b in images]}
        answer = self._request("POST", self.model_url + ":predict", json=body)
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(images):
            raise ServingError(f"{self.model_url}:predict answered without {len(images)} predictions: "
                               f"{str(answer)[:200]}")
        return parse_predictions(predictions)

    def status(self) -> ModelStatus:
        return parse_status(self._request("GET", self.model_url), self.name)

    def describe(self) -> str:
        return f"model {self.name!r} at {self.url} (REST)"

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, url: str, **kwargs):
        import requests

        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise ServerUnavailableError(f"{self.url} did not answer within {self.timeout:g} s") from None
        except requests.ConnectionError as e:
            raise ServerUnavailableError(f"cannot reach {self.url} ({_connection_reason(e)}); is the server "
                                         f"running (python -m meteor_tf.serve, or TF Serving)?") from None
        message = _error_message(response)
        if response.status_code == 404:
            raise ServingError(f"{url}: 404 — the server has no model {self.name!r} ({message}); check "
                               f"--model_name and the server's model name")
        if response.status_code in (400, 413, 422):
            raise InvalidImageError(f"server refused the request ({response.status_code}): {message}")
        if response.status_code >= 400:
            raise ServingError(f"{url}: HTTP {response.status_code}: {message}")
        try:
            return response.json()
        except ValueError:
            raise ServingError(f"{url} answered with something that is not JSON: {response.text[:200]!r}") from None


def _error_message(response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason
    return str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer)


def _connection_reason(error: Exception) -> str:
    text = str(error)
    for known in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if known in text:
            return known.lower()
    return text.splitlines()[0][:200] if text else type(error).__name__


def parse_predictions(predictions: list) -> Predictions:
    """TF Serving's row-format `predictions` (one dict of named outputs per image) → Predictions."""
    if not all(isinstance(p, dict) for p in predictions):
        raise ServingError("the server's predictions are not one dict of named outputs per image; is the model a "
                           "meteor_tf export (outputs meteor_probability, label, class_id)?")
    return Predictions.from_outputs({k: [p.get(k) for p in predictions] for k in OUTPUT_NAMES
                                     if all(k in p for p in predictions)})


def parse_status(answer, name: str = DEFAULT_MODEL_NAME) -> ModelStatus:
    """The model status answer of either server: TF Serving's `GET /v1/models/NAME` (`model_version_status`, one
    entry per version, ready when one is AVAILABLE) or KServe's (`{"name": ..., "ready": ...}`)."""
    if isinstance(answer, dict) and "model_version_status" in answer:
        versions = answer["model_version_status"] or []
        available = [_int_or_none(v.get("version")) for v in versions if v.get("state") == "AVAILABLE"]
        errors = [v.get("status", {}).get("error_message") for v in versions]
        detail = "; ".join(f"version {v.get('version')}: {v.get('state')}" for v in versions)
        if any(errors):
            detail += " (" + "; ".join(e for e in errors if e) + ")"
        known = [v for v in available if v is not None]
        return ModelStatus(name, bool(available), max(known) if known else None, detail)
    if isinstance(answer, dict) and "ready" in answer:
        ready = answer["ready"]
        ready = ready if isinstance(ready, bool) else str(ready).lower() == "true"
        return ModelStatus(str(answer.get("name", name)), ready, None, "")
    raise ServingError(f"unrecognised model status answer (neither TF Serving's model_version_status nor "
                       f"KServe's name/ready): {str(answer)[:200]}")


def _int_or_none(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class GrpcClient(Backend):
    """TF Serving's gRPC `PredictionService/Predict` (and `ModelService/GetModelStatus` for the status)."""

    def __init__(self, target: str, name: str = DEFAULT_MODEL_NAME, timeout: float = DEFAULT_TIMEOUT_S):
        import grpc

        try:
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
        except ImportError:
            raise ServingError("the gRPC client needs tensorflow-serving-api: pip install 'meteor_tf[serve]'") from None
        self.target = target
        self.name = name
        self.timeout = timeout
        options = [("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict_bytes(self, images: Sequence[bytes]) -> Predictions:
        request = build_predict_request(images, self.name)
        response = self._call(self.predict_stub.Predict, request)
        return parse_predict_response(response)

    def status(self) -> ModelStatus:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.name
        response = self._call(self.model_stub.GetModelStatus, request)
        available = [v.version for v in response.model_version_status
                     if v.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        detail = "; ".join(f"version {v.version}: {get_model_status_pb2.ModelVersionStatus.State.Name(v.state)}"
                           for v in response.model_version_status)
        return ModelStatus(self.name, bool(available), max(available) if available else None, detail)

    def describe(self) -> str:
        return f"model {self.name!r} at grpc://{self.target} (gRPC)"

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServerUnavailableError(f"cannot reach grpc://{self.target} ({details}); is the server "
                                             f"running (python -m meteor_tf.serve, or TF Serving)?") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServerUnavailableError(f"grpc://{self.target} did not answer within {self.timeout:g} s") from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise ServingError(f"grpc://{self.target} has no model {self.name!r} ({details}); check "
                                   f"--model_name and the server's model name") from None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise InvalidImageError(f"server refused the request ({code.name}): {details}") from None
            raise ServingError(f"grpc://{self.target}: {code.name}: {details}") from None


def build_predict_request(images: Sequence[bytes], name: str = DEFAULT_MODEL_NAME, signature: str = SIGNATURE):
    """A `PredictRequest` on the bytes signature: `image_bytes` as a DT_STRING tensor of shape [N]."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    return request


def parse_predict_response(response) -> Predictions:
    """A `PredictResponse` of the bytes signature → Predictions."""
    import tensorflow as tf

    return Predictions.from_outputs({k: tf.make_ndarray(response.outputs[k]) for k in OUTPUT_NAMES
                                     if k in response.outputs})


# ----------------------------------------------------------------------------------------------------


def connect(server: str, name: str = DEFAULT_MODEL_NAME, timeout: float = DEFAULT_TIMEOUT_S) -> Backend:
    """A client for `http(s)://host:port` (REST) or `grpc://host:port` (gRPC)."""
    parts = urlsplit(server)
    if parts.scheme in ("http", "https") and parts.netloc:
        return RestClient(server, name, timeout)
    if parts.scheme == "grpc" and parts.netloc:
        return GrpcClient(parts.netloc, name, timeout)
    raise ValueError(f"--server={server!r}: give http://HOST:PORT (REST, TF Serving's 8501) or grpc://HOST:PORT "
                     f"(gRPC, TF Serving's 8500)")


def open_backend(model=None, server: Optional[str] = None, name: str = DEFAULT_MODEL_NAME,
                 timeout: float = DEFAULT_TIMEOUT_S, threshold: Optional[float] = None) -> Backend:
    """A local model (SavedModel dir or version dir, or a `.tflite` file) or a server client; exactly one of the two.

    `threshold` only matters for a `.tflite` file without its metadata JSON (the other backends label with the
    model's stored threshold; callers relabel from the probabilities when they want another one).
    """
    if (model is None) == (server is None):
        raise ValueError("give either a model (--model) or a server (--server), not both")
    if server is not None:
        return connect(server, name, timeout)
    if os.fspath(model).endswith(".tflite"):
        return TFLiteBackend(model, threshold=threshold, name=name)
    return LocalBackend(model, name=name)


def open_model(model, work_dir, threshold: Optional[float] = None) -> Backend:
    """A local `Backend` for any model form `--model` takes: a SavedModel (dir or version dir), a `.tflite` file, a
    `.keras` file or a run directory (these two are exported to `work_dir` first; a `.keras` file's threshold is
    `threshold`, 0.5 without one)."""
    from pathlib import Path

    from meteor_tf.run_dir import RunDir
    from meteor_tf.serving import export as ex

    path = Path(model)
    if path.suffix == ".keras":
        threshold = threshold if threshold is not None else 0.5
        version = ex.export_savedmodel(ex.load_keras_model(path), work_dir, "meteor", threshold=threshold,
                                       metadata={"input_rule": ex.input_rule_beside(path)})
        return open_backend(model=str(version))
    if RunDir.holding_final_model(path) is not None:
        return open_backend(model=str(ex.export_run(path, work_dir)))
    return open_backend(model=str(path))


_TF_NOISE = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[{{node")


def _first_line(error: Exception) -> str:
    """The line of a TensorFlow error that says what is wrong (not "Graph execution error:" or the node names)."""
    text = getattr(error, "message", None) or str(error)
    lines = [l.strip() for l in text.strip().splitlines() if l.strip() and not l.strip().startswith(_TF_NOISE)]
    if not lines:
        return type(error).__name__
    line = lines[0].split(" [Op:")[0]
    if line.startswith("assertion failed: [") and line.endswith("]"):
        line = line[len("assertion failed: ["):-1]
    return line[:300]
