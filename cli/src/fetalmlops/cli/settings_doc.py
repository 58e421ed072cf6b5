"""`fetalmlops settings`: every environment variable, its default and meaning, as Markdown.

The README's settings tables are this command's output; a test keeps the two identical.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from fetalmlops.common.settings import ENV_PREFIX, Settings
from fetalmlops.stack.config import ENV_PREFIX as STACK_ENV_PREFIX
from fetalmlops.stack.config import StackConfig


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    text = str(getattr(value, "value", value))
    return text.replace(str(Path.home()), "~")


def _rows(settings: type[BaseSettings], prefix: str) -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            for sub, sub_field in type(default).model_fields.items():
                value = _shown(getattr(default, sub))
                var = f"{prefix}{name.upper()}__{sub.upper()}"
                rows.append(f"| `{var}` | `{value}` | {sub_field.description} |")
        else:
            var = f"{prefix}{name.upper()}"
            rows.append(f"| `{var}` | `{_shown(default)}` | {field.description} |")
    return rows


def settings_markdown() -> str:
    """Every service's shared settings, each installed service's own, then the local stack's."""
    sections: list[tuple[str, type[BaseSettings], str]] = [("Every service", Settings, ENV_PREFIX)]
    for group in sorted(entry_points(group="fetalmlops.settings"), key=lambda e: e.name):
        own = group.load()
        sections.append((f"The {group.name} service", own, own.model_config.get("env_prefix", "")))
    sections.append(("The local stack", StackConfig, STACK_ENV_PREFIX))
    return "".join(
        f"{title}:\n\n" + "\n".join(_rows(cls, prefix)) + "\n\n" for title, cls, prefix in sections
    )


def settings() -> None:
    """Print every FETALMLOPS_* variable with its default (Markdown tables)."""
    typer.echo(settings_markdown(), nl=False)
