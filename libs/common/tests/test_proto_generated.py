"""The checked-in event classes must be exactly what proto/ generates."""

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_up_to_date() -> None:
    generator = load_generator()
    assert generator.stale_files(generator.PYTHON_OUT) == []


def test_a_stale_file_is_detected(tmp_path: Path) -> None:
    generator = load_generator()
    shutil.copytree(generator.PYTHON_OUT / "fetalmlops" / "v1", tmp_path / "fetalmlops" / "v1")
    edited = tmp_path / "fetalmlops" / "v1" / "images_pb2.py"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    (tmp_path / "fetalmlops" / "v1" / "orphan_pb2.py").write_text("")
    assert generator.stale_files(tmp_path) == ["images_pb2.py", "orphan_pb2.py"]
