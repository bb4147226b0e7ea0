"""Serve an exported model the way TF Serving does, without TF Serving: KServe's Python ModelServer.

A station PC without Docker or the `tensorflow_model_server` binary runs `python -m meteor_tf.serve
--model=savedmodels/meteor` and gets the newest version on the same APIs TF Serving offers, so the same clients work
against either:

- REST (KServe's V1 protocol, which follows TF Serving's):
  `POST /v1/models/NAME:predict` with `{"instances": [{"b64": "<base64 JPEG/PNG/BMP/GIF/TIFF>"}, ...]}` (also
  `{"instances": [{"image_bytes": {"b64": ...}}]}`) → `{"predictions": [{"meteor_probability": 0.97, "label":
  "meteor", "class_id": 0}, ...]}`; columnar `{"inputs": {"image_bytes": [{"b64": ...}]}}` (or `{"inputs": [...]}`)
  → `{"outputs": {"meteor_probability": [...], "label": [...], "class_id": [...]}}`.
  The `predict_images` signature answers the same outputs for model inputs sent as numbers (float32 [N, S, S, 1],
  gray 0..255, `preprocess.to_model_input` already applied): `{"signature_name": "predict_images", "instances":
  [<S×S×1 nested list>, ...]}` (or `{"images": <S×S×1>}` per instance) → `predictions`, `{"signature_name":
  "predict_images", "inputs": {"images": [...]}}` (or `"inputs": [...]`) → `outputs`.
  `GET /v1/models/NAME` → TF Serving's `{"model_version_status": [{"version": "1", "state": "AVAILABLE", ...}]}`
  with KServe's `"name": "meteor", "ready": true` beside it, so clients of either server read it. TF Serving's other
  routes answer too: `POST /v1/models/NAME/versions/N:predict`, `GET /v1/models/NAME/metadata` (and
  `/versions/N/metadata`: the signatures in TF Serving's shape), `GET /v1/models/NAME/versions/N` (TF Serving's
  `model_version_status`); another version than the served one is 404.
- gRPC: TF Serving's `tensorflow.serving.PredictionService/Predict` on `serving_default` only (input `image_bytes`,
  DT_STRING [N]; outputs `meteor_probability`, `label`, `class_id`) and `ModelService/GetModelStatus`.

Labels apply the recall-first threshold stored with the model. Bad requests (not JSON, bad base64, not an image, no
`instances`) answer HTTP 400 (gRPC INVALID_ARGUMENT) with `{"error": "<what and which instance>"}`; a body above the
request-size limit (`max_request_bytes`, default 32 MiB, checked on Content-Length and on the bytes received) answers
413; an unknown model name 404. The server binds 127.0.0.1 unless given another host: it has no authentication.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import socket
import sys
import warnings
from typing import List, Optional

import numpy as np

# kserve.model_server parses sys.argv with its own argparse flags when imported: keep the caller's flags from it.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve.errors import InvalidInput
    from kserve.logging import logger as kserve_logger, trace_logger
finally:
    sys.argv = _argv

from fastapi import Request  # noqa: E402 — a KServe dependency; at module level so FastAPI resolves the annotation

from meteor_tf.serving import client
from meteor_tf.serving.export import IMAGES_INPUT, SIGNATURE_IMAGES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8501  # TF Serving's REST port
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port
DEFAULT_MAX_REQUEST_BYTES = 32 * 2**20
"""32 MiB: a batch of ~400 base64 640×480 JPEG frames, or a few full-resolution PNGs; a body above it is refused
(413) before the server reads it, and gRPC messages above it are refused (RESOURCE_EXHAUSTED)."""

log = logging.getLogger("meteor_tf.serve")


@dataclasses.dataclass
class ParsedRequest:
    images: List[bytes]  # serving_default: the encoded images
    columnar: bool  # answer TF Serving's columnar `outputs` instead of row `predictions`
    pixels: Optional[np.ndarray] = None  # predict_images: the model inputs, float32 (N, S, S, 1)


# The signatures a predict request may name, each with its one input; explain_images (Grad-CAM) is not served.
INPUTS = {client.SIGNATURE: client.INPUT_NAME, SIGNATURE_IMAGES: IMAGES_INPUT}
EXAMPLES = {client.SIGNATURE: '[{"b64": "<base64 image>"}]', SIGNATURE_IMAGES: "[<S×S×1 nested list of numbers>]"}


def parse_request(payload, image_size: Optional[int] = None) -> ParsedRequest:
    """A TF Serving predict body (raw bytes or already-parsed JSON) → the images it carries; InvalidInput when not.

    `image_size`: the side S a `predict_images` request's images must have (any side when None)."""
    if isinstance(payload, (bytes, bytearray, str)):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"request body is not JSON ({e}); send {{\"instances\": [{{\"b64\": "
                               f"\"<base64 image>\"}}]}}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"request body must be a JSON object with \"instances\" or \"inputs\", got "
                           f"{type(payload).__name__}")
    signature = payload.get("signature_name") or client.SIGNATURE
    if not isinstance(signature, str) or signature not in INPUTS:
        raise InvalidInput(f"unknown signature_name {signature!r}: this server answers {client.SIGNATURE!r} "
                           f"(encoded images in {client.INPUT_NAME!r}) and {SIGNATURE_IMAGES!r} (float32 "
                           f"[N, S, S, 1] in {IMAGES_INPUT!r})")
    if ("instances" in payload) == ("inputs" in payload):
        raise InvalidInput("request needs exactly one of \"instances\" (row format) or \"inputs\" (columnar), "
                           "e.g. {\"instances\": [{\"b64\": \"<base64 image>\"}]}")
    columnar = "inputs" in payload
    key = "inputs" if columnar else "instances"
    values, name = payload[key], INPUTS[signature]
    if columnar and isinstance(values, dict):
        if set(values) != {name}:
            raise InvalidInput(f"\"inputs\" must hold only {name!r}, got {sorted(values)}")
        values = values[name]
    if not isinstance(values, list) or not values:
        raise InvalidInput(f"{key!r} must be a non-empty list of images, e.g. {EXAMPLES[signature]}")
    if signature == SIGNATURE_IMAGES:
        if not columnar:  # {"images": <one image>}: the input named, as TF Serving allows in the row format
            values = [v[name] if isinstance(v, dict) and set(v) == {name} else v for v in values]
        return ParsedRequest([], columnar, _pixels(values, key, image_size))
    return ParsedRequest([_instance_bytes(v, f"{key}[{i}]") for i, v in enumerate(values)], columnar)


def _pixels(values: list, where: str, image_size: Optional[int]) -> np.ndarray:
    """predict_images' input: JSON numbers in a rectangular (N, S, S, 1) array → float32; InvalidInput naming the
    expected shape otherwise (TF Serving would let the signature fail on it)."""
    side = "S" if image_size is None else str(image_size)
    expected = (f"{SIGNATURE_IMAGES!r} takes {IMAGES_INPUT!r} float32 [N, {side}, {side}, 1]: one {side}×{side}×1 "
                f"nested list of gray 0..255 numbers per image")
    try:
        array = np.array(values, dtype=object)  # ragged lists stay lists inside it: caught as not numbers below
    except ValueError as e:
        raise InvalidInput(f"{where}: {expected}; got nested lists numpy cannot arrange ({e})") from None
    odd = next((v for v in array.flat if type(v) not in (int, float)), expected)  # bool, str, null, dict, list
    if odd is not expected:
        raise InvalidInput(f"{where}: {expected}; got a {type(odd).__name__} where a number belongs "
                           f"({json.dumps(odd)[:40]})")
    if array.ndim != 4 or (image_size is not None and array.shape[1:] != (image_size, image_size, 1)):
        raise InvalidInput(f"{where}: {expected}; got shape {list(array.shape)}")
    try:
        with np.errstate(over="ignore"):
            pixels = array.astype(np.float32)
    except OverflowError:  # an integer beyond float range
        pixels = None
    if pixels is None or not np.all(np.isfinite(pixels)):
        raise InvalidInput(f"{where}: {expected}; got a value that is not a finite float32")
    return pixels


def _instance_bytes(value, where: str) -> bytes:
    if isinstance(value, dict) and set(value) == {client.INPUT_NAME}:
        value = value[client.INPUT_NAME]  # {"image_bytes": {"b64": ...}}: the input named, as TF Serving allows
    if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
        raise InvalidInput(f"{where}: expected {{\"b64\": \"<base64 image>\"}} (binary data travels base64-encoded "
                           f"in TF Serving's REST API), got {json.dumps(value)[:80]}")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{where}: \"b64\" is not valid base64 ({e})") from None


class MeteorModel(kserve.Model):
    """The exported SavedModel as a KServe model: parses and checks TF Serving predict bodies itself (KServe 0.21
    hands `predict` the raw body when the content type is not exactly application/json) and runs inference in a
    worker thread so the event loop keeps answering."""

    def __init__(self, name: str, model_path):
        super().__init__(name)
        self.model_path = model_path
        self.backend: Optional[client.LocalBackend] = None

    def load(self) -> bool:
        self.backend = client.LocalBackend(self.model_path, name=self.name)
        self.ready = True
        return self.ready

    @property
    def version(self) -> Optional[int]:
        return self.backend.version if self.backend else None

    async def predict(self, payload, headers=None, response_headers=None):
        request = parse_request(payload, self.backend.image_size)
        if request.pixels is not None:
            run, data = self.predict_pixels, request.pixels
        else:
            run, data = self.classify, request.images
        predictions = await asyncio.get_running_loop().run_in_executor(None, run, data)
        return {"outputs": predictions.columns()} if request.columnar else {"predictions": predictions.rows()}

    def predict_pixels(self, pixels: np.ndarray) -> client.Predictions:
        """The SavedModel's own predict_images signature on checked model inputs (N, S, S, 1)."""
        return client.Predictions.from_outputs(self.backend.model.predict_images(pixels))

    def classify(self, images: List[bytes], where: str = "instances") -> client.Predictions:
        """Check and predict one request's images; InvalidInput naming the first bad one (the whole request fails,
        as in TF Serving)."""
        prepared = []
        for i, data in enumerate(images):
            try:
                prepared.append(client.prepare_image_bytes(data))
            except client.InvalidImageError as e:
                raise InvalidInput(f"{where}[{i}]: {e}") from None
        try:
            return self.backend.predict_bytes(prepared)
        except client.InvalidImageError as e:
            bad = client.first_undecodable(prepared)  # the batch failed in the decoder: name the image that did it
            raise InvalidInput(f"{where}[{bad[0]}]: {bad[1]}" if bad else str(e)) from None


class BodySizeLimit:
    """ASGI middleware: 413 with a JSON error for a body above `max_bytes`, decided on Content-Length before reading
    and on the bytes actually received (chunked uploads have no Content-Length). Starlette and KServe have no such
    limit of their own."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, int(declared))
        messages, received = [], 0
        while True:  # read the body here (at most max_bytes of it), then replay it to the app
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return await self._refuse(send, received, at_least=True)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send, size: int, at_least: bool = False):
        error = (f"request body is {'over ' if at_least else ''}{size} bytes, above this server's limit of "
                 f"{self.max_bytes} bytes (meteor-serve --max_request_bytes); send fewer images per request")
        body = json.dumps({"error": error}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _add_tf_serving_routes(app, model: MeteorModel) -> None:
    """TF Serving's REST routes KServe lacks: predict on a named version, model metadata, model status with and
    without a version (in TF Serving's shape). A version other than the served one, or another model name, is 404
    as in TF Serving."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def missing(name: str, version: Optional[str] = None, status: bool = False):
        if name != model.name:
            # a status request: TF Serving's own wording (get_model_status_impl.cc), then what this server has
            error = f"Could not find any versions of model {name}" if status else f"no model {name!r}"
            return JSONResponse({"error": f"{error}; this server has {model.name!r}"}, status_code=404)
        if version is not None and version != str(model.version):
            error = f"Could not find version {version} of model {name}" if status else \
                f"model {name!r} has no version {version}"
            return JSONResponse({"error": f"{error}; this server has version {model.version}"}, status_code=404)
        return None

    async def predict_version(name: str, version: str, request: Request):
        answer = missing(name, version)
        if answer is None:
            try:
                answer = await model.predict(await request.body())
            except InvalidInput as e:
                answer = JSONResponse({"error": str(e)}, status_code=400)
        return answer

    async def metadata(name: str, version: Optional[str] = None):
        return missing(name, version) or {
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": model.backend.model.signature_defs()}}}

    def version_status():
        # TF Serving's GetModelStatus in JSON (api_rest.md "Model status API", http_rest_api_handler.cc)
        return {"model_version_status": [{"version": str(model.version), "state": "AVAILABLE" if model.ready else
                                          "LOADING", "status": {"error_code": "OK", "error_message": ""}}]}

    async def status_of_version(name: str, version: str):
        return missing(name, version, status=True) or version_status()

    async def status_of_model(name: str):
        """TF Serving's answer (every version's status) with KServe's V1 readiness fields beside it: a client of
        either server reads it. 503 while not ready, as KServe's route answers."""
        if ":" in name:  # GET /v1/models/NAME:predict: TF Serving's status path takes no ':' in the name
            raise StarletteHTTPException(404)
        return missing(name, status=True) or JSONResponse({**version_status(), "name": model.name,
                                                           "ready": model.ready}, 200 if model.ready else 503)

    async def http_error(request: Request, exc):
        # FastAPI answers a path or method it has no route for with {"detail": ...}; TF Serving with {"error": ...}
        detail = exc.detail
        if exc.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            detail = f"Malformed request: {request.method} {request.url.path}"
        return JSONResponse({"error": str(detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_api_route("/v1/models/{name}/versions/{version}:predict", predict_version, methods=["POST"],
                      response_model=None)
    app.add_api_route("/v1/models/{name}/metadata", metadata, methods=["GET"], response_model=None)
    app.add_api_route("/v1/models/{name}/versions/{version}/metadata", metadata, methods=["GET"], response_model=None)
    app.add_api_route("/v1/models/{name}/versions/{version}", status_of_version, methods=["GET"],
                      response_model=None)
    app.add_api_route("/v1/models/{name}", status_of_model, methods=["GET"], response_model=None)
    # KServe adds its own GET /v1/models/{model_name} ({"name", "ready"} only) when the server starts; Starlette
    # takes the first route that matches, so ours goes to the front of the list whatever the registration order.
    app.router.routes.insert(0, app.router.routes.pop())


def _prediction_servicers(model: MeteorModel):
    """TF Serving's gRPC PredictionService (Predict) and ModelService (GetModelStatus) on the same model."""
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                         prediction_service_pb2_grpc)

    async def check_spec(spec, context):
        if spec.name != model.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {spec.name!r}; this server has {model.name!r}")
        if spec.HasField("version") and spec.version.value != model.version:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {model.name!r} has no version "
                                f"{spec.version.value}; this server has version {model.version}")

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):
            await check_spec(request.model_spec, context)
            signature = request.model_spec.signature_name or client.SIGNATURE
            if signature != client.SIGNATURE:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown signature_name {signature!r}: "
                                    f"this server answers {client.SIGNATURE!r}")
            if set(request.inputs) != {client.INPUT_NAME}:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"inputs must be exactly "
                                    f"{client.INPUT_NAME!r} (DT_STRING [N]), got {sorted(request.inputs)}")
            tensor = request.inputs[client.INPUT_NAME]
            if tensor.dtype != tf.string.as_datatype_enum:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{client.INPUT_NAME} must be DT_STRING "
                                    f"(encoded images)")
            images = [bytes(b) for b in tf.make_ndarray(tensor).reshape(-1)]
            if not images:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{client.INPUT_NAME} holds no image")
            try:
                predictions = await asyncio.get_running_loop().run_in_executor(
                    None, model.classify, images, client.INPUT_NAME)
            except InvalidInput as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = model.name
            response.model_spec.signature_name = client.SIGNATURE
            if model.version is not None:
                response.model_spec.version.value = model.version
            response.outputs["meteor_probability"].CopyFrom(tf.make_tensor_proto(predictions.meteor_probability))
            response.outputs["label"].CopyFrom(tf.make_tensor_proto(
                np.array([l.encode() for l in predictions.label], dtype=object), dtype=tf.string))
            response.outputs["class_id"].CopyFrom(tf.make_tensor_proto(predictions.class_id.astype(np.int32)))
            return response

    class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
        async def GetModelStatus(self, request, context):
            await check_spec(request.model_spec, context)
            response = get_model_status_pb2.GetModelStatusResponse()
            status = response.model_version_status.add()
            status.version = model.version or 0
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE if model.ready else \
                get_model_status_pb2.ModelVersionStatus.LOADING
            return response

    return PredictionServicer(), ModelServicer()


async def _start_grpc(model: MeteorModel, host: str, port: int, max_message_bytes: int):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes)])
    predict, status = _prediction_servicers(model)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predict, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(status, server)
    server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")  # IPv6 literals in brackets
    await server.start()
    return server


class _OneLineClientErrors(logging.Filter):
    """KServe logs every refused request with a traceback; a bad client request is one line in the server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        from kserve.errors import ModelNotFound

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (InvalidInput, ModelNotFound)):
            record.msg, record.args, record.exc_info, record.exc_text = "refused request: %s", (error,), None, None
        return True


class ModelServer(kserve.ModelServer):
    """KServe's ModelServer bound to `host` (0.21 hard-codes 0.0.0.0), with TF Serving's gRPC API in place of
    KServe's own V2 gRPC protocol, and the request-size limit on REST."""

    def __init__(self, model: MeteorModel, host: str = DEFAULT_HOST, http_port: int = DEFAULT_HTTP_PORT,
                 grpc_port: Optional[int] = DEFAULT_GRPC_PORT, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        super().__init__(http_port=http_port, enable_grpc=False, workers=1, enable_latency_logging=False)
        self.model = model
        self.host = host
        self.tf_grpc_port = grpc_port
        self.max_request_bytes = max_request_bytes
        from kserve.model_server import app

        app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
        _add_tf_serving_routes(app, model)
        kserve_logger.addFilter(_OneLineClientErrors())
        trace_logger.setLevel(logging.WARNING)  # two timing lines per request; uvicorn's access line stays
        # kserve 0.21's own endpoints use FastAPI's deprecated ORJSONResponse: a warning per request, nothing to act on
        warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")

    def setup_event_loop(self):
        # start() calls this after building the REST server and before serving: the one place to set its host
        self._rest_server.config.host = self.host
        super().setup_event_loop()

    async def _serve(self):
        grpc_server = None
        if self.tf_grpc_port:
            grpc_server = await _start_grpc(self.model, self.host, self.tf_grpc_port, self.max_request_bytes)
        try:
            await super()._serve()
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=2)


def check_port_free(host: str, port: int, what: str) -> None:
    """OSError naming the flag when `host:port` cannot be bound (uvicorn would only log it and exit)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port} for {what} ({e.strerror or e}); is another server "
                      f"running? Choose another port") from None


def serve(model_path, name: str = client.DEFAULT_MODEL_NAME, host: str = DEFAULT_HOST,
          port: int = DEFAULT_HTTP_PORT, grpc_port: Optional[int] = DEFAULT_GRPC_PORT,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
    """Load the newest version under `model_path` (or that version dir) and serve it until SIGINT/SIGTERM.

    Raises FileNotFoundError (no model / no version) or OSError (port taken) before serving starts.
    """
    from meteor_tf.serving.export import resolve_model

    if max_request_bytes <= 0:
        raise ValueError(f"max_request_bytes must be positive, got {max_request_bytes}")
    model_path = resolve_model(model_path)  # a missing model or version fails first, before any port or loading
    check_port_free(host, port, "REST (--port)")
    if grpc_port:
        check_port_free(host, grpc_port, "gRPC (--grpc_port)")
    model = MeteorModel(name, model_path)
    model.load()
    where = f"http://{host}:{port}/v1/models/{name}:predict"
    if grpc_port:
        where += f" and grpc://{host}:{grpc_port}"
    log.info("serving %s (threshold %.4f, %d px) as %r on %s; request limit %d bytes", model.backend.path,
             model.backend.threshold, model.backend.image_size, name, where, max_request_bytes)
    ModelServer(model, host, port, grpc_port, max_request_bytes).start([model])
