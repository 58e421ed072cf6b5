"""The TorchServe handler packaged into every `.mar`: image bytes in, plane probabilities out.

TorchServe imports this file as the top-level module ``handler`` from the unpacked archive, with
``preprocessing.py`` beside it, and calls the module's ``handle(data, context)``: once with
``data=None`` when a worker starts (load the model), then once per batch. So this module imports
only the standard library, numpy, Pillow and torch, never ``ts`` nor ``fetalmlops``: the
archive is all the serving side gets, and our inference service unpacks and runs the same files.

What a batch looks like (read from TorchServe 0.12's ``ts/service.py``,
``ts/protocol/otf_message_handler.py`` and ``ts/torch_handler/request_envelope/``):

* ``POST /predictions/<model>``: one dict per request, ``{"body": bytes}`` for a raw body or
  ``{"<field>": bytes}`` per multipart field; TorchServe has already turned an
  ``application/json`` body into a dict/list and a ``text/*`` body into a ``str``.
* ``TS_SERVICE_ENVELOPE=kserve`` (KServe v1, ``/v1/models/<model>:predict``): the instances of
  the *first* request of the batch, e.g. ``{"data": "<base64>"}`` or ``{"b64": "<base64>"}``;
  our answers come back as ``{"predictions": [...]}``.
* ``TS_SERVICE_ENVELOPE=kservev2`` (``/v2/models/<model>/infer``): the ``inputs`` of the first
  request, each ``{"name", "shape", "datatype": "BYTES", "data": "<base64>"}`` (the envelope
  keeps ``data[0]``); our answers come back as ``outputs[i].data == [answer]``.

Both envelopes read only the first request of a batch, so a KServe deployment runs with
``batchSize`` 1 (see ``packaging.WorkerSettings``).

Beyond TorchServe, our inference service reads more of the archive through `PlaneClassifier`:
``scores`` gives the head's input (embedding) beside the probabilities, from the TorchScript's
``forward_with_features`` when the archive has it, and ``background`` holds SHAP's background
images (``background.npy``) when the archive carries them. Archives from before either keep
working, without them.

Errors: a request whose body is not an image gets ``{"error": ...}`` (and HTTP 400 when each
item is its own request) while the rest of the batch is answered. An exception escaping
``handle`` does not kill the worker either: ``ts.service.Service.predict`` answers every request
of the batch with 503 "Prediction failed" (507 on ``MemoryError`` or a CUDA out-of-memory) and
logs the traceback to ``model_log.log``; a failure while loading makes TorchServe restart the
worker with back-off. That is why only batch-wide faults (a broken model) are raised here.
"""

from __future__ import annotations

import base64
import binascii
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__:
    from .preprocessing import FILENAME as PREPROCESSING_FILE
    from .preprocessing import Preprocessing, decode
else:  # inside TorchServe: the archive's own copy, next to this file
    from preprocessing import FILENAME as PREPROCESSING_FILE  # type: ignore[no-redef]
    from preprocessing import Preprocessing, decode  # type: ignore[no-redef]

MODEL_FILE = "model.pt"
CLASSES_FILE = "index_to_name.json"
BACKGROUND_FILE = "background.npy"
FEATURES_METHOD = "forward_with_features"

# KServe v1 names an encoded image "b64"; TorchServe names a raw body "body" and a multipart
# field by its name ("data" by convention, also the key of the KServe examples' instances).
IMAGE_KEYS = ("b64", "data", "body")
# A whole KServe body reaching the handler means TorchServe was started without its envelope.
KSERVE_BODIES = {"instances": ("v1", "kserve"), "inputs": ("v2", "kservev2")}
MAX_NESTING = 4
BAD_REQUEST = 400

Answer = dict[str, Any]


def read_classes(text: str) -> list[str]:
    """``index_to_name.json`` ({"0": name, ...}, TorchServe's convention) as an ordered list."""
    mapping = json.loads(text)
    return [mapping[str(i)] for i in range(len(mapping))]


def image_bytes(item: object, depth: int = 0) -> bytes:
    """The encoded image inside one request item, however TorchServe or an envelope wrapped it.

    Raises ValueError naming what was found instead; whether the bytes are an image is for
    ``preprocessing.decode`` to say.
    """
    if depth > MAX_NESTING:
        raise ValueError("request body is nested too deeply to hold an image")
    if isinstance(item, bytes | bytearray):
        raw = bytes(item)
        if not raw:
            raise ValueError("request body is empty")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return raw  # binary: PNG and JPEG signatures are not ASCII
        return image_bytes(text, depth + 1)
    if isinstance(item, str):
        text = item.strip()
        if not text:
            raise ValueError("request body is empty")
        if text.startswith(("{", "[")):
            try:
                return image_bytes(json.loads(text), depth + 1)
            except json.JSONDecodeError:
                raise ValueError("request body is neither JSON nor base64") from None
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            raise ValueError("request text is not base64 of a PNG or JPEG image") from None
    if isinstance(item, Mapping):
        for key, (protocol, envelope) in KSERVE_BODIES.items():
            if key in item:
                raise ValueError(
                    f"a KServe {protocol} request reached the model without TorchServe's "
                    f"envelope: start TorchServe with TS_SERVICE_ENVELOPE={envelope} "
                    f"(service_envelope={envelope})"
                )
        for key in IMAGE_KEYS:
            if key in item:
                return image_bytes(item[key], depth + 1)
        raise ValueError(f"request has no image under any of {', '.join(IMAGE_KEYS)}")
    if isinstance(item, list) and len(item) == 1:
        return image_bytes(item[0], depth + 1)
    raise ValueError(f"request body of type {type(item).__name__} holds no image")


def read_background(path: Path) -> torch.Tensor | None:
    """``background.npy`` as a (B, C, H, W) float32 tensor, None when the archive has none."""
    if not path.exists():
        return None
    array = np.load(path, allow_pickle=False)
    if array.ndim != 4 or array.dtype != np.float32:
        raise ValueError(f"{path.name} holds {array.dtype} {array.shape}, not (B, C, H, W) float32")
    return torch.from_numpy(array)


def device_for(context: Any) -> torch.device:
    gpu_id = context.system_properties.get("gpu_id")
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


class PlaneClassifier:
    """What one worker holds: the TorchScript model, its preprocessing and its class names.

    ``background`` is SHAP's background (B, C, H, W) float32 on the CPU, None when the archive
    has none; ``has_features`` says whether the model gives embeddings (``scores``).
    """

    def __init__(
        self,
        model: torch.jit.ScriptModule,
        preprocessing: Preprocessing,
        classes: Sequence[str],
        device: torch.device,
        background: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.preprocessing = preprocessing
        self.classes = list(classes)
        self.device = device
        self.background = background
        self.has_features = hasattr(model, FEATURES_METHOD)

    @classmethod
    def load(cls, model_dir: Path, device: torch.device) -> PlaneClassifier:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, but TorchServe 0.12 and
            # our inference service run TorchScript; the warning would repeat per worker.
            warnings.filterwarnings("ignore", message="`torch.jit", category=FutureWarning)
            model = torch.jit.load(  # type: ignore[no-untyped-call]
                str(model_dir / MODEL_FILE), map_location=device
            ).eval()
        preprocessing = Preprocessing.from_json((model_dir / PREPROCESSING_FILE).read_text())
        classes = read_classes((model_dir / CLASSES_FILE).read_text())
        background = read_background(model_dir / BACKGROUND_FILE)
        return cls(model, preprocessing, classes, device, background)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits = self.model(images.to(self.device))
        return self._softmax(logits, len(images))

    def scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Probabilities (N, classes) and embeddings (N, D) float32, both on the CPU, of one
        forward pass; the embeddings are None when the model does not give them."""
        if not self.has_features:
            return self.probabilities(images), None
        with torch.inference_mode():
            logits, embeddings, _ = getattr(self.model, FEATURES_METHOD)(images.to(self.device))
        if embeddings.dim() != 2 or len(embeddings) != len(images):
            raise RuntimeError(
                f"model answered embeddings of shape {tuple(embeddings.shape)} for "
                f"{len(images)} images"
            )
        return self._softmax(logits, len(images)), embeddings.float().cpu()

    def _softmax(self, logits: torch.Tensor, count: int) -> torch.Tensor:
        if logits.shape != (count, len(self.classes)):
            raise RuntimeError(
                f"model answered shape {tuple(logits.shape)} for {count} images of "
                f"{len(self.classes)} classes"
            )
        return torch.softmax(logits.float(), dim=1).cpu()

    def answer(self, batch: Sequence[object]) -> list[Answer]:
        """One answer per item, in order; an item that is not an image gets an ``error``."""
        answers: dict[int, Answer] = {}
        tensors: dict[int, torch.Tensor] = {}
        for index, item in enumerate(batch):
            try:
                tensors[index] = decode(image_bytes(item), self.preprocessing)
            except ValueError as error:
                answers[index] = {"error": str(error)}
        if tensors:
            rows = self.probabilities(torch.stack(list(tensors.values())))
            answers |= {i: self.prediction(row) for i, row in zip(tensors, rows, strict=True)}
        return [answers[index] for index in range(len(batch))]

    def prediction(self, probabilities: torch.Tensor) -> Answer:
        values = [float(p) for p in probabilities]
        best = max(range(len(values)), key=values.__getitem__)
        return {
            "label": self.classes[best],
            "probabilities": dict(zip(self.classes, values, strict=True)),
        }


# TorchServe's function entry point keeps its state in the module: one worker process serves
# one model. Keyed by model directory so one Python process (a test) may load several archives.
_CLASSIFIERS: dict[str, PlaneClassifier] = {}


def classifier_for(context: Any) -> PlaneClassifier:
    model_dir = str(context.system_properties["model_dir"])
    if model_dir not in _CLASSIFIERS:
        _CLASSIFIERS[model_dir] = PlaneClassifier.load(Path(model_dir), device_for(context))
    return _CLASSIFIERS[model_dir]


def report_errors(answers: Sequence[Answer], context: Any) -> None:
    """Gives each failed request its own 400 where items are requests (no envelope).

    Under an envelope the items are instances of one request, and TorchServe keeps one status
    per request, so the error stays in the answer body.
    """
    request_ids = getattr(context, "request_ids", None)
    if not isinstance(request_ids, Mapping) or len(request_ids) != len(answers):
        return
    for index, answer in enumerate(answers):
        if "error" in answer:
            context.set_response_status(code=BAD_REQUEST, phrase="Bad Request", idx=index)


def handle(data: list[object] | None, context: Any) -> list[Answer] | None:
    """TorchServe's entry point: loads on ``data=None``, else answers a batch in order."""
    classifier = classifier_for(context)
    if data is None:
        return None
    answers = classifier.answer(data)
    report_errors(answers, context)
    return answers
