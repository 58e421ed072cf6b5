"""What `fetalmlops up` tells its user and its clients: each service's endpoints and health.

`endpoints` is the document written to ``endpoints.json`` (the demo finds the platform by it);
`table` draws it with each service's health, which `health` reads from the service's own
``/readyz`` (a failing check is named, as the service names it).
"""

from __future__ import annotations

from typing import Any

import httpx

from fetalmlops.up.layout import HOST, SERVICES, Choices


def endpoints(choices: Choices, ae_title: str) -> dict[str, Any]:
    ports, model = choices.ports, choices.model

    def url(service: str) -> str:
        return f"http://{HOST}:{ports.http(service)}"

    return {
        "backend": "stack" if choices.stack else "embedded",
        "database": choices.database,
        "model": model,
        "data_dir": str(choices.layout.data_dir),
        "log": str(choices.layout.log),
        "token_file": str(choices.layout.secrets),
        "plan": None if choices.plan is None else str(choices.plan),
        "services": {name: url(name) for name in SERVICES},
        "dicom": {"host": HOST, "port": ports.scp, "ae_title": ae_title},
        "dicomweb": f"{url('ingest')}/dicomweb",
        "predict": f"{url('inference')}/v1/models/{model}:predict",
        "dashboard": f"{url('monitor')}/dashboard",
    }


def health(base_url: str, timeout_s: float = 2.0) -> str:
    """``ready``, ``unready: <failing checks>`` or ``down``, from the service's ``/readyz``."""
    try:
        response = httpx.get(f"{base_url}/readyz", timeout=timeout_s)
    except httpx.HTTPError:
        return "down"
    if response.status_code == 200:
        return "ready"
    try:
        failures = response.json().get("failures", {})
    except ValueError:
        failures = {}
    return "unready: " + ("; ".join(f"{k}: {v}" for k, v in failures.items()) or "503")[:90]


def rows(document: dict[str, Any], states: dict[str, str]) -> list[tuple[str, str, str]]:
    """(service, endpoint, health) for each line of the table."""
    services = document["services"]
    dicom = document["dicom"]
    lines = []
    for name in SERVICES:
        lines.append((name, services[name], states.get(name, "")))
        if name == "ingest":
            scp = f"{dicom['ae_title']}@{dicom['host']}:{dicom['port']}"
            lines.append(("", f"DICOM C-STORE SCP {scp}", ""))
            lines.append(("", f"DICOMweb STOW-RS {document['dicomweb']}/studies", ""))
        if name == "inference":
            lines.append(("", f"KServe V1 {document['predict']}", ""))
        if name == "monitor":
            lines.append(("", f"dashboard {document['dashboard']}", ""))
    return lines


def table(lines: list[tuple[str, str, str]]) -> str:
    head = ("SERVICE", "ENDPOINT", "HEALTH")
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(2)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in [head, *lines]
    )
