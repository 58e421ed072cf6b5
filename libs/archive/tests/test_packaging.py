"""A model version as KServe's TorchServe runtime and our inference service receive it.

No TorchServe process here (tests/integration/test_torchserve_mar.py runs one): the archive's
contents, its config.properties, and the handler *unpacked from the archive* run in-process
against the eager model.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fetalmlops.archive import handler, preprocessing
from fetalmlops.archive.handler import PlaneClassifier, image_bytes
from fetalmlops.archive.packaging import (
    ExportMismatch,
    ModelLayout,
    WorkerSettings,
    build_mar,
    export_torchscript,
    read_mar,
)
from fetalmlops.archive.preprocessing import Preprocessing, decode
from fetalmlops.archive.worker import worker_handler
from fetalmlops.common import model_version
from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.samples import plane_pictures

CLASSES = [plane.value for plane in Plane]
PREP = Preprocessing(size=64)
NAME, VERSION = "fetal_planes", 3
HEAD, FEATURES = "11", "8"  # of tiny_cnn: its Linear, and the ReLU after its last conv


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(CLASSES)),
    ).eval()  # fmt: skip


def phantom_pngs(count: int) -> list[bytes]:
    return plane_pictures(count, seed=5)


@dataclass
class Version:
    model: nn.Module
    layout: ModelLayout
    files: dict[str, bytes]
    background: np.ndarray


def export(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    return export_torchscript(model, example, path, head=HEAD, features=FEATURES)


def preprocessed(pngs: list[bytes]) -> np.ndarray:
    return np.stack([decode(png, PREP).numpy() for png in pngs])


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Version:
    root = tmp_path_factory.mktemp("version")
    model = tiny_cnn()
    torchscript = export(model, torch.randn(1, 3, 64, 64), root / "model_ts.pt")
    background = preprocessed(phantom_pngs(4))
    layout = build_mar(
        NAME, VERSION, torchscript, PREP, CLASSES, root / "store", {"model_card.json": b"{}"},
        background=background,
    )  # fmt: skip
    return Version(model, layout, read_mar(layout.mar), background)


def unpacked(files: dict[str, bytes], directory: Path) -> Path:
    for name, content in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
    return directory


@dataclass
class FakeContext:
    """The part of ts.context.Context the handler touches."""

    system_properties: dict[str, Any]
    request_ids: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, tuple[int, str]] = field(default_factory=dict)

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)


@pytest.fixture
def packaged_handler(version: Version, tmp_path: Path) -> tuple[ModuleType, Path]:
    """handler.py from the unpacked archive, importing the archive's preprocessing.py."""
    model_dir = tmp_path / "unpacked"
    return worker_handler(version.layout.mar, model_dir), model_dir


def eager_probabilities(model: nn.Module, png: bytes) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(decode(png, PREP).unsqueeze(0)), 1)[0].numpy()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_reproduces_the_eager_model_and_leaves_it_untouched(tmp_path: Path) -> None:
    model = tiny_cnn().train()
    path = export(model, torch.randn(2, 3, 64, 64), tmp_path / "m.pt")
    assert model.training, "the caller's model keeps its mode"
    exported = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model.eval()(x), atol=1e-5, rtol=1e-4)


class BatchOfOneOnly(nn.Module):
    """Python control flow on the batch size: tracing bakes in the example's branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.linear = nn.Linear(3, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if x.shape[0] == 1 else 2.0
        logits: torch.Tensor = self.linear(self.conv(x).mean((2, 3))) * scale
        return logits


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_export_refuses_a_trace_that_does_not_reproduce_the_model(tmp_path: Path) -> None:
    with pytest.raises(ExportMismatch, match="batch of 2"):
        export_torchscript(
            BatchOfOneOnly(), torch.randn(1, 3, 8, 8), tmp_path / "m.pt",
            head="linear", features="conv",
        )  # fmt: skip


def test_export_refuses_features_that_are_no_feature_map(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="linear gives a 2-dimensional output"):
        export_torchscript(
            BatchOfOneOnly(), torch.randn(2, 3, 8, 8), tmp_path / "m.pt",
            head="linear", features="linear",
        )  # fmt: skip


def test_archive_holds_model_code_preprocessing_classes_and_manifest(version: Version) -> None:
    files = version.files
    assert set(files) == {
        "model.pt", "handler.py", "preprocessing.py", "preprocessing.json",
        "index_to_name.json", "background.npy", "model_card.json", "MAR-INF/MANIFEST.json",
        "fetalmlops-archive.json",
    }  # fmt: skip
    assert json.loads(files["fetalmlops-archive.json"]) == {"format": model_version.ARCHIVE_FORMAT}
    manifest = json.loads(files["MAR-INF/MANIFEST.json"])
    assert manifest["model"] == {
        "modelName": NAME,
        "serializedFile": "model.pt",
        "handler": "handler.py",
        "modelVersion": str(VERSION),
    }
    assert Preprocessing.from_json(files["preprocessing.json"].decode()) == PREP
    assert json.loads(files["index_to_name.json"]) == {str(i): c for i, c in enumerate(CLASSES)}
    source = Path(__file__).parents[1] / "src/fetalmlops/archive"
    assert files["handler.py"] == (source / "handler.py").read_bytes()
    assert files["preprocessing.py"] == (source / "preprocessing.py").read_bytes()
    assert version.layout.mar == version.layout.root / "model-store" / f"{NAME}.mar"


def test_the_handler_reads_the_members_the_contract_names() -> None:
    """The handler runs inside TorchServe without this library, so it keeps its own names."""
    assert (handler.MODEL_FILE, handler.CLASSES_FILE, handler.BACKGROUND_FILE) == (
        model_version.MODEL_FILE,
        model_version.CLASSES_FILE,
        model_version.BACKGROUND_FILE,
    )
    assert preprocessing.FILENAME == model_version.PREPROCESSING_PARAMETERS
    assert all(hasattr(handler, name) for name in model_version.HANDLER_API)
    assert all(hasattr(preprocessing, name) for name in model_version.PREPROCESSING_API)


def test_the_archive_carries_the_shap_background_as_given(version: Version) -> None:
    background = np.load(io.BytesIO(version.files["background.npy"]), allow_pickle=False)
    assert background.dtype == np.float32
    np.testing.assert_array_equal(background, version.background)


@pytest.mark.parametrize(
    "background",
    [
        np.zeros((3, 64, 64), np.float32),  # one image, unbatched
        np.zeros((0, 3, 64, 64), np.float32),
        np.zeros((2, 3, 32, 32), np.float32),  # not the model's input size
        np.zeros((2, 3, 64, 64), np.float64),
        np.full((2, 3, 64, 64), np.nan, np.float32),
    ],
)
def test_build_mar_refuses_a_background_the_model_could_not_take(
    background: np.ndarray, version: Version, tmp_path: Path
) -> None:
    torchscript = tmp_path / "model.pt"
    torchscript.write_bytes(version.files["model.pt"])
    with pytest.raises(ValueError, match="background"):
        build_mar(NAME, 1, torchscript, PREP, CLASSES, tmp_path / "out", background=background)
    assert not (tmp_path / "out").exists(), "nothing written for a rejected version"


def test_the_packaged_classifier_scores_with_the_heads_input_as_embedding(
    version: Version, packaged_handler: tuple[ModuleType, Path]
) -> None:
    """The embedding is the classification head's input: what the trainer's drift reference
    summarises (the trainer's test_servable compares the two on the exported model)."""
    handler, model_dir = packaged_handler
    classifier = handler.PlaneClassifier.load(model_dir, torch.device("cpu"))
    images = torch.from_numpy(preprocessed(phantom_pngs(3)))

    probabilities, embeddings = classifier.scores(images)

    assert classifier.has_features
    torch.testing.assert_close(probabilities, classifier.probabilities(images))
    assert embeddings is not None and embeddings.dtype == torch.float32
    below_head = nn.Sequential(*list(version.model.children())[: int(HEAD)])
    with torch.no_grad():
        np.testing.assert_allclose(embeddings.numpy(), below_head(images).numpy(), atol=1e-5)
    assert torch.equal(classifier.background, torch.from_numpy(version.background))


@pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:FutureWarning")
def test_an_archive_from_before_scores_without_embeddings_or_background(
    version: Version, tmp_path: Path
) -> None:
    files = {k: v for k, v in version.files.items() if k != "background.npy"}
    model_dir = unpacked(files, tmp_path / "old")
    example = torch.randn(1, 3, 64, 64)
    torch.jit.save(torch.jit.trace(version.model, example), str(model_dir / "model.pt"))  # type: ignore[no-untyped-call]
    classifier = PlaneClassifier.load(model_dir, torch.device("cpu"))
    images = torch.from_numpy(preprocessed(phantom_pngs(2)))

    probabilities, embeddings = classifier.scores(images)

    assert not classifier.has_features and classifier.background is None
    assert embeddings is None
    torch.testing.assert_close(probabilities, classifier.probabilities(images))
    with torch.no_grad():
        expected = torch.softmax(version.model(images), 1)
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-4)


def test_config_properties_serve_the_archive_from_kserves_mount(version: Version) -> None:
    # Parsed the way pytorch/serve's kserve_wrapper/__main__.py reads it.
    lines = version.layout.config_properties.read_text().splitlines()
    assert version.layout.config_properties == version.layout.root / "config/config.properties"
    properties = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert properties["model_store"] == "/mnt/models/model-store"
    assert properties["enable_envvars_config"] == "true"
    assert properties["install_py_dep_per_model"] == "true"
    for key in ("inference_address", "management_address", "metrics_address"):
        assert properties[key].startswith("http://0.0.0.0:")
    snapshot = json.loads(properties["model_snapshot"])
    assert snapshot["modelCount"] == 1
    workers = WorkerSettings()
    assert snapshot["models"] == {
        NAME: {
            str(VERSION): {
                "defaultVersion": True,
                "marName": f"{NAME}.mar",
                "minWorkers": workers.min_workers,
                "maxWorkers": workers.max_workers,
                "batchSize": 1,
                "maxBatchDelay": workers.max_batch_delay_ms,
                "responseTimeout": workers.response_timeout_s,
            }
        }
    }


@pytest.mark.parametrize(
    ("name", "version_number", "classes", "extra"),
    [
        ("fetal planes", 1, CLASSES, {}),
        (NAME, 0, CLASSES, {}),
        (NAME, 1, ["a", "a"], {}),
        (NAME, 1, CLASSES, {"handler.py": b""}),
        (NAME, 1, CLASSES, {"../escape.txt": b""}),
    ],
)
def test_build_mar_rejects_what_torchserve_could_not_serve(
    name: str,
    version_number: int,
    classes: list[str],
    extra: dict[str, bytes],
    version: Version,
    tmp_path: Path,
) -> None:
    torchscript = tmp_path / "model.pt"
    torchscript.write_bytes(version.files["model.pt"])
    with pytest.raises(ValueError):
        build_mar(name, version_number, torchscript, PREP, classes, tmp_path / "out", extra)
    assert not (tmp_path / "out").exists(), "nothing written for a rejected version"


def test_packaged_handler_answers_like_the_eager_model(
    version: Version, packaged_handler: tuple[ModuleType, Path]
) -> None:
    handler, model_dir = packaged_handler
    pngs = phantom_pngs(3)
    context = FakeContext({"model_dir": str(model_dir), "gpu_id": None})
    assert handler.handle(None, context) is None  # TorchServe's load call

    batch = [
        {"body": pngs[0]},
        {"body": bytearray(pngs[1])},
        {"body": base64.b64encode(pngs[2]).decode()},
    ]
    context.request_ids = {i: f"r{i}" for i in range(len(batch))}
    answers = handler.handle(batch, context)

    assert context.statuses == {}
    for png, answer in zip(pngs, answers, strict=True):
        expected = eager_probabilities(version.model, png)
        assert list(answer["probabilities"]) == CLASSES
        np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-5)
        assert answer["label"] == CLASSES[int(expected.argmax())]


def test_a_corrupt_body_fails_only_its_own_request(
    version: Version, packaged_handler: tuple[ModuleType, Path]
) -> None:
    handler, model_dir = packaged_handler
    png = phantom_pngs(1)[0]
    context = FakeContext({"model_dir": str(model_dir), "gpu_id": None})
    batch = [{"body": png}, {"body": png[: len(png) // 3]}, {"body": b"garbage"}, {"body": png}]
    context.request_ids = {i: f"r{i}" for i in range(len(batch))}

    answers = handler.handle(batch, context)

    assert "not a PNG or JPEG image" in answers[1]["error"]
    assert "not base64" in answers[2]["error"]
    assert context.statuses == {1: (400, "Bad Request"), 2: (400, "Bad Request")}
    expected = eager_probabilities(version.model, png)
    for answer in (answers[0], answers[3]):
        np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-5)


def test_instances_of_one_enveloped_request_keep_errors_in_the_body(
    packaged_handler: tuple[ModuleType, Path],
) -> None:
    handler, model_dir = packaged_handler
    png = phantom_pngs(1)[0]
    # TorchServe's kserve envelope hands over the instances of a single request.
    context = FakeContext({"model_dir": str(model_dir), "gpu_id": None}, request_ids={0: "r0"})
    answers = handler.handle([{"b64": base64.b64encode(png).decode()}, {"b64": "AAAA"}], context)
    assert answers[0]["label"] in CLASSES
    assert "error" in answers[1]
    assert context.statuses == {}


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "wrapped",
    [
        PNG_SIGNATURE,
        bytearray(PNG_SIGNATURE),
        base64.b64encode(PNG_SIGNATURE),  # text/plain sent as octet-stream
        base64.b64encode(PNG_SIGNATURE).decode(),  # text/plain
        {"body": PNG_SIGNATURE},  # raw POST /predictions
        {"data": PNG_SIGNATURE},  # multipart field "data"
        {"b64": base64.b64encode(PNG_SIGNATURE).decode()},  # KServe v1 instance
        {"name": "scan", "shape": [1], "datatype": "BYTES",  # KServe v2 input, data[0] kept
         "data": base64.b64encode(PNG_SIGNATURE).decode()},
        {"body": {"b64": base64.b64encode(PNG_SIGNATURE).decode()}},  # JSON POST /predictions
        json.dumps({"data": base64.b64encode(PNG_SIGNATURE).decode()}).encode(),
    ],
)  # fmt: skip
def test_image_bytes_unwraps_every_shape_torchserve_hands_over(wrapped: object) -> None:
    assert image_bytes(wrapped) == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        ("not base64!", "not base64"),
        ({"instances": [{"b64": "AAAA"}]}, "TS_SERVICE_ENVELOPE=kserve"),
        ({"inputs": [{"data": ["AAAA"]}]}, "TS_SERVICE_ENVELOPE=kservev2"),
        ({"picture": "AAAA"}, "no image under"),
        (42, "holds no image"),
    ],
)
def test_image_bytes_says_what_it_found_instead_of_an_image(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image_bytes({"body": body})
