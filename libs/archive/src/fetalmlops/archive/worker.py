"""An archive's handler imported the way a TorchServe worker imports it: unpacked into a folder,
``handler.py`` loaded from there with the folder on ``sys.path``, so its ``import preprocessing``
finds the archive's copy and never an installed package. What a check of "the archive answers
by itself" needs, without TorchServe's JVM.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType


def worker_handler(mar: Path, directory: Path) -> ModuleType:
    """``mar`` unpacked into ``directory`` and its handler module imported from there."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(directory)
    sys.path.insert(0, str(directory))
    try:
        spec = importlib.util.spec_from_file_location("handler", directory / "handler.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"{mar.name} holds no importable handler.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if Path(sys.modules["preprocessing"].__file__ or "").parent != directory:
            raise ImportError(
                "the handler imported a preprocessing module from outside its archive"
            )
        return module
    finally:
        # At once: another archive imported later brings its own top-level `preprocessing`.
        sys.path.remove(str(directory))
        sys.modules.pop("preprocessing", None)
