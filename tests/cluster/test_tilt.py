"""The Tiltfile on the local cluster: `tilt ci` builds every image with buildah (its
custom_build runs `fetalmlops cluster images --only <service> --tag $EXPECTED_REF`), deploys the
chart with the images it built, and returns 0 once every resource is ready. The release runs on
topics of its own (`tilt ci -- --set ...`), so its consumers never read the stack's events.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from fetalmlops.cluster.builds import Binaries
from fetalmlops.cluster.images import repository_root
from fetalmlops.cluster.layout import Layout
from fetalmlops.cluster.release import Release, Tokens
from fetalmlops.cluster.tools import HELM, TILT
from fetalmlops.common.settings import Settings, Topics
from fetalmlops.stack.config import StackConfig

pytestmark = [pytest.mark.cluster, pytest.mark.stack, pytest.mark.timeout(2400)]

NAMESPACE = "fetalmlops"  # the Tiltfile's


def test_tilt_ci_builds_deploys_and_every_resource_gets_ready(
    running_cluster: Layout, stack_settings: Callable[[str | None], Settings], tmp_path: Path
) -> None:
    layout = running_cluster
    kubectl = str(Binaries(layout).kube("kubectl"))
    tools = tmp_path / "bin"  # `helm` and `kubectl` on PATH, as the Tiltfile's helm() needs
    tools.mkdir()
    (tools / "helm").symlink_to(HELM.ensure(layout.cache))
    (tools / "kubectl").symlink_to(kubectl)
    tilt = TILT.ensure(layout.cache)
    release = Release(kubectl, HELM.ensure(layout.cache), layout.admin_kubeconfig, NAMESPACE)
    release.apply_secrets(StackConfig(), Tokens.load_or_make(layout.root / "tokens.json"))
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()}
    settings = [f"--set=config.FETALMLOPS_TOPICS__{k.upper()}={v}" for k, v in topics.items()]
    env = {
        **os.environ,
        "PATH": f"{tools}:{os.environ['PATH']}",
        "KUBECONFIG": str(layout.admin_kubeconfig),
        "TILT_DISABLE_ANALYTICS": "1",
    }
    log = layout.logs / "test-tilt-ci.log"
    try:
        with log.open("w") as output:
            done = subprocess.run(
                [str(tilt), "ci", "--context", "fetalmlops", "--timeout", "25m", "--web-mode=prod",
                 "--", *settings],
                cwd=repository_root(), env=env, stdout=output, stderr=subprocess.STDOUT,
                timeout=1800, check=False,
            )  # fmt: skip
        assert done.returncode == 0, log.read_text()[-4000:]
        text = log.read_text()
        assert "fetalmlops cluster images --only ingest" in text, "built by the custom_build"
    finally:
        subprocess.run([str(tilt), "down", "--context", "fetalmlops"], cwd=repository_root(),
                       env=env, capture_output=True, timeout=600, check=False)  # fmt: skip
        subprocess.run([kubectl, "delete", "namespace", NAMESPACE, "--wait=true"], env=env,
                       capture_output=True, timeout=600, check=False)  # fmt: skip
