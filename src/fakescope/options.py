"""Command-line options made from the dataclass fields that own them (Settings, Limits,
TrainConfig, ...): each option's type, default and help are written once, on its field
(`metadata={"help": ...}`), and a command built from them resolves to what the Python API
resolves to."""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, Field, fields
from typing import Annotated, Any, TypeVar

import typer

from .settings import option
from .types import SettingError

T = TypeVar("T")


def flagged(error: SettingError) -> str:
    """A setting error's message with the settings it names written as options."""
    message = str(error)
    for name in error.settings:
        message = re.sub(rf"(?<![\w-]){re.escape(name)}\b", option(name), message)
    return message


def _parameter(f: Field, hint: Any) -> inspect.Parameter:
    help_text = f.metadata.get("help")
    if f.metadata.get("argument"):
        info: Any = typer.Argument(help=help_text)
    else:
        flag = option(f.name)
        decls = [f"{flag}/--no-{flag[2:]}"] if hint is bool else [flag]
        info = typer.Option(*decls, help=help_text)
    default = f.default if f.default is not MISSING else inspect.Parameter.empty
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[hint, info]
    )


def with_fields(
    *groups: type, only: Collection[str] | None = None, skip: Collection[str] = ()
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a typer command with one option per field of each dataclass in `groups`
    (`only` those named, none in `skip`; in declaration order, the first group's field
    winning a name). The command receives their values as `fields`, a dict by field name."""

    def decorate(command: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "fields"]
        taken = {p.name for p in own}
        added: list[inspect.Parameter] = []
        for group in groups:
            hints = typing.get_type_hints(group)
            for f in fields(group):
                if f.name in taken or f.name in skip or (only is not None and f.name not in only):
                    continue
                if not f.init or f.metadata.get("option") is False:
                    continue
                added.append(_parameter(f, hints[f.name]))
                taken.add(f.name)
        names = [p.name for p in added]

        @functools.wraps(command)
        def run(**given: Any) -> T:
            own = {k: v for k, v in given.items() if k not in names}
            return command(**own, fields={k: given[k] for k in names})

        # Required arguments first, so that typer keeps their order on the command line.
        ordered = sorted(own + added, key=lambda p: p.default is not inspect.Parameter.empty)
        run.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in ordered]
        )
        return run

    return decorate


def pick(group: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `group`'s fields among `values` (e.g. a command's `fields`)."""
    names = {f.name for f in fields(group)}
    return {k: v for k, v in values.items() if k in names}


def deferred(
    app: typer.Typer, name: str, help: str, load: Callable[[], Callable[..., Any]]
) -> None:
    """Add the command `name`, made only when it runs: `load` imports the module whose fields
    its options come from (a module that loads PyTorch, which no other command then waits
    for) and returns the command (with_fields applied)."""

    @app.command(
        name,
        help=help,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def run(ctx: typer.Context) -> None:
        command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        command.command(help=help)(load())
        command(ctx.args, prog_name=ctx.command_path)
