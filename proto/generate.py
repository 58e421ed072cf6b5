"""Generate the Python event classes from proto/fetalmlops/v1/*.proto.

The generated modules are checked in (libs/common/src/fetalmlops/v1/) so services need no
protoc at build time. `--check` regenerates into a temporary folder and fails when the checked-in
code differs, which is how CI catches a .proto edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PYTHON_OUT = PROTO_ROOT.parent / "libs" / "common" / "src"
PACKAGE = Path("fetalmlops") / "v1"


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every .proto of the package; return the generated files."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package_dir = out_root / PACKAGE
    # An __init__ keeps fetalmlops.v1 importable as a regular package inside the namespace.
    (package_dir / "__init__.py").write_text('"""Generated event classes. Do not edit."""\n')
    return sorted(package_dir.glob("*"))


def stale_files(checked_in_root: Path) -> list[str]:
    """Names of generated files that differ from, or are missing in, the checked-in tree."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        expected = {p.name for p in fresh}
        present = {p.name for p in (checked_in_root / PACKAGE).glob("*") if p.is_file()}
        differing = [
            p.name
            for p in fresh
            if not (checked_in_root / PACKAGE / p.name).exists()
            or not filecmp.cmp(p, checked_in_root / PACKAGE / p.name, shallow=False)
        ]
        return sorted(set(differing) | (present - expected))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in code is stale")
    if parser.parse_args().check:
        stale = stale_files(PYTHON_OUT)
        if stale:
            sys.exit(f"generated event code is stale ({', '.join(stale)}): run `make proto`")
        print("generated event code is up to date")
    else:
        for path in generate(PYTHON_OUT):
            print(path.relative_to(PYTHON_OUT.parent.parent.parent))


if __name__ == "__main__":
    main()
