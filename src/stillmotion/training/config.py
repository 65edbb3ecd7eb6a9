"""Training configs: a flat dataclass per trainer, filled from a YAML or TOML file plus overrides.

Every trainer declares its settings as one dataclass at the top of its module (nanoGPT style) and
calls :func:`load_config`. The file holds the same flat keys (comments in ``configs/*.yaml`` say
what each one means); ``key=value`` overrides from the command line win over the file. Values are
parsed as YAML scalars (``lr=1e-4``, ``mixed_precision=null``, ``resolution=[64,64]``) and checked
against the field's type, so a typo or a wrong type is one clear error naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from stillmotion.errors import UserInputError

C = TypeVar("C")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml``/``.toml``/``.json`` file; a missing or bad file is a user error."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"config {path} is a folder; give a .yaml, .toml or .json file")
    if not path.is_file():
        raise UserInputError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read config file {path}: {exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # parse errors of three libraries; the message names the file
        raise UserInputError(f"config file {path} cannot be parsed: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise UserInputError(f"config file {path} must hold a mapping of key: value, got {kind}")
    return data


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["lr=1e-4", "max_steps=10"]`` -> ``{"lr": 1e-4, "max_steps": 10}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UserInputError(f"override {item!r} must look like key=value")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a dataclass field annotation; convert the safe cases (int -> float)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except UserInputError as exc:
                errors.append(str(exc))
        raise UserInputError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    if origin in (list, tuple):
        if origin is list and isinstance(value, str):
            value = [value]  # a single path where a list of paths is expected
        if not isinstance(value, list | tuple):
            raise UserInputError(f"config key {key!r} must be a list, got {value!r}")
        (inner, *_) = typing.get_args(annotation) or (Any,)
        items = [_coerce(key, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserInputError(f"config key {key!r} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserInputError(f"config key {key!r} must be an integer, got {value!r}")
    if annotation is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise UserInputError(f"config key {key!r} must be a number, got {value!r}")
        if not math.isfinite(number):  # YAML's .nan / .inf; every float setting must be finite
            raise UserInputError(f"config key {key!r} must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise UserInputError(f"config key {key!r} must be a string, got {value!r}")
    if annotation is dict or typing.get_origin(annotation) is dict:
        if isinstance(value, dict):
            return value
        raise UserInputError(f"config key {key!r} must be a mapping, got {value!r}")
    return value


def build_config(cls: type[C], values: dict[str, Any], *, source: str = "config") -> C:
    """Instantiate dataclass ``cls`` from ``values``; unknown keys and wrong types are user errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserInputError(
            f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))
    kwargs = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
    cfg = cls(**kwargs)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()
    return cfg


def load_config(cls: type[C], path: str | Path | None, overrides: Sequence[str] | dict[str, Any] = ()) -> C:
    """Defaults of ``cls`` <- file at ``path`` (optional) <- overrides (``key=value`` strings or a dict)."""
    values: dict[str, Any] = read_config_file(path) if path is not None else {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    values.update(extra)
    return build_config(cls, values, source=str(path) if path else "config")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-safe dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
