"""Command groups loaded when they run, so `fetalmlops --help` imports no service.

A command is named by a reference, ``module:attribute`` (a Typer app becomes a group, a function
a command), as in the ``fetalmlops.commands`` entry points. Until a command runs it is a
placeholder whose one-line help is read from the module's source without importing it: the
``help=`` given to ``typer.Typer`` for an app, the docstring for a function, else the module's
docstring. Importing the trainer's commands alone takes seconds (torch, torchvision).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer import _click as click  # typer vendors click: its groups take these types
from typer.core import TyperCommand, TyperGroup


def load(name: str, reference: str) -> click.Command:
    """The click command that ``reference`` names, called ``name``."""
    module, _, attribute = reference.partition(":")
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        command: click.Command = typer.main.get_group(target)
    else:
        single = typer.Typer()
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


def static_help(reference: str) -> str:
    """The help ``reference``'s source gives it, read without importing the module."""
    module, _, attribute = reference.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attribute:
            return ast.get_docstring(node) or ""
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == attribute for t in node.targets
        ):
            given = _help_keyword(node.value)
            if given:
                return given
    return ast.get_docstring(tree) or ""


def _help_keyword(value: ast.expr) -> str:
    if isinstance(value, ast.Call):
        for keyword in value.keywords:
            if keyword.arg == "help":
                try:
                    return str(ast.literal_eval(keyword.value))
                except ValueError:  # a help text computed at import time
                    return ""
    return ""


class LazyGroup(TyperGroup):
    """A Typer group whose commands in ``references`` load the first time one is resolved."""

    references: Mapping[str, str] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.placeholders = set(self.references) - set(self.commands)
        for name in self.placeholders:
            # Shown in the help; replaced by the real command before it runs.
            self.commands[name] = TyperCommand(name, help=static_help(self.references[name]))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args:
            self.loaded(args[0])
        return super().resolve_command(ctx, args)

    def loaded(self, name: str) -> click.Command | None:
        """The command ``name`` (loaded now if it was a placeholder), or None."""
        if name in self.placeholders:
            self.commands[name] = load(name, self.references[name])
            self.placeholders.discard(name)
        return self.commands.get(name)


def lazy_group(references: Mapping[str, str]) -> type[LazyGroup]:
    """A ``LazyGroup`` class for ``typer.Typer(cls=...)``, which instantiates it itself."""
    return type("LazyCommands", (LazyGroup,), {"references": dict(references)})
