"""The Secrets the chart names, made from the local stack's credentials."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import yaml

from fetalmlops.cluster.release import CHART, Tokens, secret_data, secret_manifests
from fetalmlops.stack.config import StackConfig


def stack_config(tmp_path: Path) -> StackConfig:
    return StackConfig(home=tmp_path, node_address="10.250.0.1")


def test_every_secret_the_chart_names_is_made_with_the_keys_its_readme_lists(
    tmp_path: Path,
) -> None:
    data = secret_data(stack_config(tmp_path), Tokens.load_or_make(tmp_path / "tokens.json"))
    readme = (CHART / "README.md").read_text()
    rows = re.findall(r"^ *\| `(fetalmlops-[a-z-]+)` \([^)]*\) \| (.+) \|$", readme, re.MULTILINE)
    assert rows
    for name, keys in rows:
        listed = set(re.findall(r"`([A-Z0-9_]+)`", keys))
        assert listed <= set(data[name]), (name, listed - set(data[name]))
    assert {name for name, _ in rows} == set(data)


def test_endpoints_are_at_the_node_address_and_each_service_has_its_own_role(
    tmp_path: Path,
) -> None:
    data = secret_data(stack_config(tmp_path), Tokens.load_or_make(tmp_path / "tokens.json"))
    urls = {name: keys["FETALMLOPS_DATABASE_URL"] for name, keys in data.items()
            if "FETALMLOPS_DATABASE_URL" in keys}  # fmt: skip
    assert all("@10.250.0.1:15432/" in url for url in urls.values()), urls
    roles = {url.split("://")[1].split(":")[0] for url in urls.values()}
    assert len(roles) == len(urls)  # ingest, anonymizer, monitor, trainer, the owner
    users = {keys["FETALMLOPS_MINIO_ACCESS_KEY"] for keys in data.values()
             if "FETALMLOPS_MINIO_ACCESS_KEY" in keys}  # fmt: skip
    assert users == {"ingest", "anonymizer", "monitor", "trainer", "inference"}
    assert data["fetalmlops-inference-storage"]["S3_ENDPOINT"] == "10.250.0.1:19000"


def test_tokens_are_made_once_and_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "cluster" / "tokens.json"
    first = Tokens.load_or_make(path)
    assert Tokens.load_or_make(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = secret_data(stack_config(tmp_path), first)
    assert json.loads(data["fetalmlops-trainer-credentials"]["FETALMLOPS_TRAINER_TOKENS"]) == {
        first.operator: ["training:write"]
    }


def test_manifests_are_secrets_in_the_namespace(tmp_path: Path) -> None:
    config = stack_config(tmp_path)
    data = secret_data(config, Tokens.load_or_make(tmp_path / "tokens.json"))
    manifests = yaml.safe_load_all(yaml.safe_dump_all(secret_manifests(data, "ns")))
    kinds = {(m["kind"], m["metadata"]["namespace"]) for m in manifests}
    assert kinds == {("Secret", "ns")}
