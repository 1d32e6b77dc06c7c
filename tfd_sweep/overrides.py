"""Check command-line overrides against the schema before Hydra composes anything.

Hydra would stop at the first unknown key or wrong type with a message that does not suggest a
fix. This check reads every override at once, so a user sees all problems together, with the
closest valid key for a typo and the sweep syntax for a list typed where one value belongs.
"""

from __future__ import annotations

import typing
from dataclasses import fields, is_dataclass
from typing import Any, Iterable

from tfd_sweep.config import Config, suggest_key

# Config groups that can be selected from the command line, such as +sweep=optimization.
GROUPS = ("sweep",)
# Hydra's own flags that take a separate value argument.
FLAGS_WITH_VALUE = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd",
                    "--cfg", "-c", "--package", "-p", "--info", "--experimental-rerun")
# Hydra's flags that print something and exit without running anything.
INFO_FLAGS = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--version",
              "--shell-completion", "-sc", "--resolve")
MULTIRUN_FLAGS = ("-m", "--multirun")
# Prefix of the overrides that set a sweep's grid, such as hydra.sweeper.params.eps=0.1,0.2.
SWEEPER_PARAMS = "hydra.sweeper.params."


def field_types() -> dict[str, Any]:
    """Return the annotated type of every dotted schema key, such as {'eps': float, ...}."""
    types: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            hint = hints[f.name]
            if isinstance(hint, type) and is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            else:
                types[prefix + f.name] = hint

    walk(Config, "")
    return types


def is_multirun(argv: Iterable[str]) -> bool:
    """Return True when a command line requests a sweep (-m or --multirun)."""
    return any(arg in MULTIRUN_FLAGS for arg in argv)


def last_value(argv: Iterable[str], key: str) -> str | None:
    """Return the text of the last override of key on a command line, or None when absent."""
    value = None
    for arg in _override_args(argv):
        name, _, text = arg.partition("=")
        if name.lstrip("+~") == key:
            value = text
    return value


def sweep_presets() -> list[str]:
    """Return the names of the sweep presets in conf/sweep/, such as 'optimization'."""
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "conf" / "sweep"
    return sorted(path.stem for path in folder.glob("*.yaml"))


def _override_args(argv: Iterable[str]) -> list[str]:
    args: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in FLAGS_WITH_VALUE:
            skip_next = True
        elif not arg.startswith("-") and "=" in arg:
            args.append(arg)
    return args


def _type_problem(key: str, text: str, value: Any, hint: Any) -> str | None:
    """Return a message when value does not fit the schema type hint of key, else None."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    optional = origin is typing.Union and type(None) in args
    if optional:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)

    if origin in (list, typing.List):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return (f"{key}={text} is invalid: {key} takes a list of whole numbers such as '{key}=[16,32]' "
                    f"(quote it for the shell). To sweep over lists, run with -m: '{key}=[2,2],[100,100]'.")
        return None
    if isinstance(value, (list, dict)):
        return (f"{key}={text} is invalid: {key} takes one value, not a list. To sweep over several "
                f"values, run with -m and separate them with commas: python -m tfd_sweep -m {key}=a,b,c")
    if hint is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{key}={text} is invalid: {key} takes a number such as {key}=0.01."
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{key}={text} is invalid: {key} takes a whole number such as {key}=100."
    if hint is bool and not isinstance(value, bool):
        return f"{key}={text} is invalid: {key} takes true or false."
    return None


def check_command_line(argv: Iterable[str]) -> list[str]:
    """Return one message per problem in the overrides of a command line; empty when all look valid.

    Overrides that this check cannot parse are left for Hydra, which reports them itself.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    argv = list(argv)
    multirun = is_multirun(argv)
    types = field_types()
    sections = {key.rsplit(".", 1)[0] for key in types if "." in key}
    parser = OverridesParser.create()
    problems: list[str] = []

    for arg in _override_args(argv):
        try:
            override = parser.parse_override(arg)
        except HydraException:
            continue
        key = override.key_or_group
        if key.startswith(SWEEPER_PARAMS):
            swept = key[len(SWEEPER_PARAMS):]
            if swept not in types:
                problems.append(f"{arg}: unknown key '{swept}'.{suggest_key(swept)} "
                                f"Run `python -m tfd_sweep --cfg job` to list every key.")
            continue
        if key in GROUPS and not override.is_delete():
            presets = sweep_presets()
            if override.value() not in presets:
                problems.append(f"{arg}: unknown sweep preset '{override.value()}'; choose one of "
                                f"{', '.join(presets)}, such as -m +{key}={presets[0]}.")
            continue
        if override.is_hydra_override() or override.is_delete():
            continue
        if key not in types:
            if key in sections:
                problems.append(f"{arg} is invalid: {key} is a section; set one of its keys, "
                                f"such as {key}.{_first_key(types, key)}=...")
            else:
                problems.append(f"{arg}: unknown key '{key}'.{suggest_key(key)} "
                                f"Run `python -m tfd_sweep --cfg job` to list every key.")
            continue

        text = arg.split("=", 1)[1]
        if override.is_sweep_override() and not multirun:
            problems.append(f"{arg} lists several values, which makes a sweep: add -m, as in "
                            f"python -m tfd_sweep -m {arg}")
            continue
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            problem = _type_problem(key, text, value, types[key])
            if problem:
                problems.append(problem)
                break
    return problems


def _first_key(types: dict[str, Any], section: str) -> str:
    return next(key for key in types if key.startswith(section + ".")).split(".", 1)[1]
