"""The README's commands work as printed.

Every `fetalmlops …` line in the README's code blocks names a command and options that exist,
every `make …` a target the Makefile has; the inference examples (curl and the Python client)
are run word for word, in bash, against a real server on the port they name, with a scan
larger than a shell argument may be (the base64 of a 100 KB PNG).
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from PIL import Image

from fetalmlops.datasets.phantom.dataset import draw, plan

from .model_versions import build_version
from .processes import SERVE, answers, wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
INFERENCE = "Inference: the model on KServe's protocols"
PORT = 8080  # the port the README's examples use
TOKEN = "readme-token"
FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def blocks(language: str, section: str | None = None) -> list[str]:
    """The README's code blocks in ``language``, in order; only those under ``section``'s
    heading when given."""
    text = README.read_text()
    if section is not None:
        start = text.index(f"## {section}\n")
        following = text.find("\n## ", start + 1)
        text = text[start : following if following >= 0 else len(text)]
    return [
        "\n".join(line.removeprefix(indent) for line in body.splitlines())
        for indent, lang, body in FENCE.findall(text)
        if lang == language
    ]


def shell_lines(block: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines, pending = [], ""
    for line in joined.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted string goes on to the next line
            continue
        if words:
            lines.append(" ".join(shlex.quote(word) for word in words))
        pending = ""
    assert not pending, f"unbalanced quotes in {block!r}"
    return lines


def invocations(program: str) -> list[list[str]]:
    """Each README invocation of ``program``, a synopsis (``up|down``) expanded."""
    found = []
    for block in blocks("bash"):
        for line in shell_lines(block):
            words = shlex.split(line)
            if words[0] != program:
                continue
            alternatives = [word.split("|") for word in words[1:]]
            longest = max((len(a) for a in alternatives), default=1)
            for index in range(longest):
                found.append([program] + [a[min(index, len(a) - 1)] for a in alternatives])
    return found


def resolve(command: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The subcommand ``words`` name, and the options given to it. (Typer brings its own copy
    of click: its groups are known by their ``commands``, not by click's classes; the root
    loads its commands when asked for one.)"""
    while getattr(command, "commands", None) and words and not words[0].startswith("-"):
        sub = getattr(command, "loaded", command.commands.get)(words[0])
        assert sub is not None, f"no command {words[0]!r} under {command.name!r}"
        command, words = sub, words[1:]
    return command, [w.split("=")[0] for w in words if w.startswith("--")]


def test_every_fetalmlops_command_in_the_readme_exists() -> None:
    from fetalmlops.cli.main import app

    root = typer.main.get_command(app)
    lines = invocations("fetalmlops")
    assert len(lines) > 15, lines
    for words in lines:
        command, options = resolve(root, words[1:])
        declared = {"--help"} | {name for param in command.params for name in param.opts}
        assert set(options) <= declared, (words, sorted(declared))


def test_every_make_target_in_the_readme_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = {words[1] for words in invocations("make")}
    assert named and named <= targets, named - targets


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real `fetalmlops serve` of a `fetal-planes` version on the README's port, with a
    token; yields a folder holding `scan.png`, as the examples expect."""
    work = tmp_path_factory.mktemp("readme")
    version = build_version(work, "fetal-planes", 1, seed=5)
    frame = draw(plan(1, seed=4)[0], 4, difficulty=0.5, banner=True).pixels
    scan = io.BytesIO()
    Image.fromarray(frame).resize((1280, 960), Image.BICUBIC).save(scan, "PNG")
    assert len(scan.getvalue()) * 4 // 3 > 128 * 1024  # past the longest shell argument
    (work / "scan.png").write_bytes(scan.getvalue())
    if answers(f"http://127.0.0.1:{PORT}/healthz", 200) or answers(f"http://127.0.0.1:{PORT}/"):
        pytest.fail(f"port {PORT}, which the README's examples use, is taken")
    env = {**os.environ, "FETALMLOPS_INFERENCE_TOKENS": json.dumps([TOKEN])}
    log = work / "serve.log"
    command = [*SERVE, "--model-dir", str(version.layout.root), "--http-port", str(PORT)]
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            return answers(f"http://127.0.0.1:{PORT}/readyz")

        wait_for(up, 90, "fetalmlops serve on the README's port")
        yield work
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()


def documents(text: str) -> list[object]:
    """The JSON documents curl printed one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def test_the_curl_examples_run_as_printed(readme_server: Path) -> None:
    (example,) = blocks("bash", INFERENCE)[:1]
    curls = [line for line in shell_lines(example) if line.startswith("curl")]
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example],
        cwd=readme_server,
        env={**os.environ, "TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and not run.stderr, run.stderr[-2000:]
    answers_ = documents(run.stdout)
    assert len(answers_) == len(curls), run.stdout[-2000:]
    for answer in answers_:
        assert isinstance(answer, dict) and "error" not in answer, str(answer)[:500]
    predicted = [a for a in answers_ if isinstance(a, dict) and "predictions" in a]
    assert predicted and predicted[0]["predictions"][0]["model_name"] == "fetal-planes"


PLANES = {"fetal_abdomen", "fetal_brain", "fetal_femur", "fetal_thorax", "maternal_cervix", "other"}


def run_python(source: str, cwd: Path) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-c", source],
        cwd=cwd,
        env={**os.environ, "TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.split(maxsplit=1)


def test_the_tritonclient_example_runs_as_printed(readme_server: Path) -> None:
    (example,) = [b for b in blocks("python", INFERENCE) if "tritonclient" in b]
    label, versions = run_python(example, readme_server)
    assert label in PLANES and versions.strip() == "['1']"


def test_the_python_client_example_runs_as_printed(readme_server: Path) -> None:
    (example,) = [b for b in blocks("python", INFERENCE) if "PlaneClient" in b]
    # The example leaves `token=None` for a server without tokens; ours has one, as a
    # deployment would: the only edit is the token's value.
    source = example.replace("token=None", f"token={TOKEN!r}")
    label, probability = run_python(source, readme_server)
    assert label in PLANES and 0 <= float(probability) <= 1
