"""Typed configuration: frozen dataclasses filled from TOML and ``--set key=value`` overrides.

Unknown keys are errors (a typo must not silently fall back to a default). A TOML file for a model
holds its keys at top level or under a ``[model]`` table; ``--set lr=3e-4`` overrides one key, with
the value parsed as TOML (so ``--set layers=3``, ``--set weights={click=1.0}`` and
``--set name="x"`` all work; a bare word is taken as a string).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(cls: type, name: str, value: Any, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    hint = hints[name]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: '{name}' must be {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{where}: '{name}' must be int, got {value!r}")
    return value


def build_config(cls: type[T], path: Path | None = None, overrides: list[str] | None = None) -> T:
    """An instance of the dataclass ``cls`` from defaults, a TOML file and overrides."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as handle:
            try:
                raw = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ConfigError(f"{path}: {error}") from error
        raw = raw.get("model", raw)
        for key, value in raw.items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown key '{key}' for {cls.__name__}")
            values[key] = _coerce(cls, key, value, str(path))
    for item in overrides or []:
        key, sep, text = item.partition("=")
        key = key.strip().removeprefix("model.")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"--set {item!r}: unknown key '{key}' for {cls.__name__} ({known})")
        values[key] = _coerce(cls, key, _parse_value(text), f"--set {item}")
    return cls(**values)
