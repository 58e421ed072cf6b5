"""JSON schemas kubeconform validates the chart's manifests with, generated offline.

kubeconform looks a manifest's schema up by kind, group and version; its usual source is a Git
repository on the internet. Here every schema comes from what the Go module proxy (which these
machines reach) already serves, and is generated once into the cache:

* Kubernetes' own kinds from ``api/openapi-spec/swagger.json`` inside the module zip of
  ``k8s.io/kubernetes`` at the cluster's version, as kubeconform's ``-standalone-strict`` layout
  (``v1.34.4-standalone-strict/deployment-apps-v1.json``): one self-contained file per kind
  whose references point into its own ``definitions``, with ``additionalProperties: false`` on
  every object that lists its properties, as ``kubectl --validate=strict`` refuses unknown
  fields;
* custom resources from their CustomResourceDefinitions' ``openAPIV3Schema``
  (``<group>/<kind>_<version>.json``): KServe's, and the Prometheus Operator's ServiceMonitor
  and PrometheusRule from the module zip of ``github.com/prometheus-operator/prometheus-operator``.

``python deploy/helm/k8s_schemas.py [--cache DIR]`` prints the schema locations to pass to
``kubeconform -schema-location``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "1.34.4"  # the local cluster's (../shared/reference/kubernetes.md)
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_OPERATOR_CRDS = ("servicemonitors", "prometheusrules")
KSERVE_MODULE = "github.com/kserve/kserve"
KSERVE_VERSION = "v0.16.0"  # the controller the local cluster runs
KSERVE_CRDS = ("inferenceservices", "servingruntimes", "clusterservingruntimes")
# The CRDs the project keeps beside the repository (DESIGN.md §4), read where they are.
SHARED_CRDS = Path(__file__).resolve().parents[3] / "shared" / "crds"

# Raised whenever the generated schemas change, so that a cache made by an older generator is
# not reused.
FORMAT = 1

Schema = dict[str, Any]
DEFINITION_PREFIX = "#/definitions/"
# Types the swagger document declares as strings that the API server also takes as numbers.
NUMERIC_STRINGS = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": ["string", "number", "null"],
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": ["string", "integer", "null"],
}


@dataclass(frozen=True)
class Locations:
    """What `kubeconform -schema-location` takes, one flag per entry."""

    kubernetes: Path  # a folder: kubeconform adds its own standalone layout under it
    crds: Path  # a folder with <group>/<kind>_<version>.json

    def flags(self) -> list[str]:
        crd_template = str(
            self.crds / "{{.Group}}" / "{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"
        )
        return ["-schema-location", str(self.kubernetes), "-schema-location", crd_template]


# ---------------------------------------------------------------------------------------------
# Kubernetes' own kinds


def kind_file(group: str, version: str, kind: str) -> str:
    """kubeconform's file name for a kind: the group's first label, as its ``KindSuffix``."""
    prefix = f"-{group.split('.')[0]}" if group else ""
    return f"{kind.lower()}{prefix}-{version}.json"


def strict_definition(name: str, schema: Schema) -> Schema:
    """One swagger definition as JSON schema: references into ``#/definitions``, null allowed
    where the API server treats null as absent, unknown properties refused."""
    if name in NUMERIC_STRINGS:
        return {"type": NUMERIC_STRINGS[name]}
    return strict(schema)


def strict(schema: Schema) -> Schema:
    out: Schema = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = value  # swagger's own "#/definitions/<name>" form
        elif key == "properties":
            out[key] = {prop: strict(sub) for prop, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict(sub) for sub in value]
        elif key == "type" and isinstance(value, str):
            out[key] = [value, "null"]
        elif key == "format" or key.startswith("x-"):
            continue  # formats such as int64 are not JSON schema's; extensions are documentation
        else:
            out[key] = value
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def references(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(DEFINITION_PREFIX):
            yield ref.removeprefix(DEFINITION_PREFIX)
        for value in schema.values():
            yield from references(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from references(value)


def closure(root: str, definitions: dict[str, Schema]) -> list[str]:
    """Every definition ``root`` reaches, itself included (recursive types end the walk)."""
    seen: list[str] = []
    pending = [root]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.append(name)
        pending.extend(references(definitions[name]))
    return sorted(seen)


def kind_schemas(swagger: Schema) -> Iterator[tuple[str, Schema]]:
    """(file name, standalone strict schema) for every kind the swagger document serves."""
    definitions: dict[str, Schema] = swagger["definitions"]
    for name, definition in sorted(definitions.items()):
        kinds = definition.get("x-kubernetes-group-version-kind", [])
        # DeleteOptions, WatchEvent and friends are listed under every group: not manifests.
        if len(kinds) != 1:
            continue
        gvk = kinds[0]
        group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
        api_version = f"{group}/{version}" if group else version
        reached = closure(name, definitions)
        schema: Schema = {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$ref": DEFINITION_PREFIX + name,
            "definitions": {n: strict_definition(n, definitions[n]) for n in reached},
        }
        properties = schema["definitions"][name].get("properties", {})
        if "kind" in properties and "apiVersion" in properties:
            properties["kind"] = {"type": "string", "enum": [kind]}
            properties["apiVersion"] = {"type": "string", "enum": [api_version]}
        yield kind_file(group, version, kind), schema


def write_kubernetes_schemas(swagger: Schema, folder: Path, version: str) -> Path:
    """The schemas under ``folder/v<version>-standalone-strict/``; returns ``folder``."""
    target = folder / f"v{version}-standalone-strict"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for file_name, schema in kind_schemas(swagger):
        (partial / file_name).write_text(json.dumps(schema, separators=(",", ":")))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return folder


# ---------------------------------------------------------------------------------------------
# Custom resources


def strict_crd(schema: Schema) -> Schema:
    """A CRD's structural schema as JSON schema: ``nullable`` and int-or-string spelled out,
    unknown fields refused where the API server prunes them (no preserve-unknown-fields)."""
    out: Schema = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {prop: strict_crd(sub) for prop, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_crd(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_crd(sub) for sub in value]
        elif key == "format" or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserves = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not preserves:
        out["additionalProperties"] = False
    return out


def crd_schemas(crd: Schema) -> Iterator[tuple[str, str, Schema]]:
    """(group, file name, schema) for every served version of a CustomResourceDefinition."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = strict_crd(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        properties = schema.setdefault("properties", {})
        properties["kind"] = {"type": "string", "enum": [kind]}
        properties["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        yield group, f"{kind.lower()}_{version['name']}.json", schema


def write_crd_schemas(documents: Iterable[str], folder: Path) -> Path:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for text in documents:
        for crd in yaml.safe_load_all(text):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for group, file_name, schema in crd_schemas(crd):
                (partial / group).mkdir(parents=True, exist_ok=True)
                (partial / group / file_name).write_text(json.dumps(schema, separators=(",", ":")))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Sources: Go module zips, fetched by `go mod download` (cached by Go)


def module_zip(module: str, version: str) -> Path:
    """The module's zip in Go's download cache, downloaded first when missing."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("`go` is needed to fetch Kubernetes' OpenAPI document and the CRDs")
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path.home(),  # outside any module, so no go.mod is read or changed
    )
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Zip" not in info:
        raise RuntimeError(f"go mod download {module}@{version}: {info.get('Error', done.stderr)}")
    return Path(info["Zip"])


def read_member(archive: Path, module: str, version: str, path: str) -> str:
    with zipfile.ZipFile(archive) as opened:
        return opened.read(f"{module}@{version}/{path}").decode()


def kserve_crds(source: str) -> list[str]:
    """The KServe CRDs: ``shared`` (../shared/crds) or ``module`` (the KServe release's own)."""
    if source == "shared":
        return [
            (SHARED_CRDS / f"serving.kserve.io_{name}.yaml").read_text() for name in KSERVE_CRDS
        ]
    archive = module_zip(KSERVE_MODULE, KSERVE_VERSION)
    return [
        read_member(
            archive, KSERVE_MODULE, KSERVE_VERSION, f"config/crd/full/serving.kserve.io_{name}.yaml"
        )
        for name in KSERVE_CRDS
    ]


def prometheus_crds() -> list[str]:
    module, version = PROMETHEUS_OPERATOR_MODULE, PROMETHEUS_OPERATOR_VERSION
    archive = module_zip(module, version)
    return [
        read_member(
            archive,
            module,
            version,
            f"example/prometheus-operator-crd/monitoring.coreos.com_{name}.yaml",
        )
        for name in PROMETHEUS_OPERATOR_CRDS
    ]


def ensure(cache: Path, kserve: str = "shared") -> Locations:
    """The schema folders under ``cache/kubeconform-schemas-<FORMAT>``, generated once."""
    root = cache / f"kubeconform-schemas-{FORMAT}"
    kubernetes = root / "kubernetes"
    if not (kubernetes / f"v{KUBERNETES_VERSION}-standalone-strict").is_dir():
        version = f"v{KUBERNETES_VERSION}"
        archive = module_zip(KUBERNETES_MODULE, version)
        swagger = json.loads(
            read_member(archive, KUBERNETES_MODULE, version, "api/openapi-spec/swagger.json")
        )
        write_kubernetes_schemas(swagger, kubernetes, KUBERNETES_VERSION)
    crds = root / f"crds-kserve-{KSERVE_VERSION if kserve == 'module' else 'shared'}"
    if not crds.is_dir():
        write_crd_schemas([*kserve_crds(kserve), *prometheus_crds()], crds)
    return Locations(kubernetes, crds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "fetalmlops")
    parser.add_argument(
        "--kserve",
        choices=["shared", "module"],
        default="shared",
        help="KServe CRDs from ../shared/crds or from the KServe release the cluster runs",
    )
    args = parser.parse_args()
    print(" ".join(ensure(args.cache, args.kserve).flags()))


if __name__ == "__main__":
    main()
