"""Typed values into config dataclasses: what recipes and `--set` overrides go through.

Sections and keys are checked by name against the dataclasses' fields, each value is
coerced to its field's declared type, and numbers are checked against the range named for
them (config_rules.FIELD_RANGES). Every failure is a one-line UserError naming the key. Nothing
here knows the sections themselves: config.py declares them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import yaml

from nmt_bert.errors import UserError

# What each allowed range in FIELD_RANGES means.
RANGE_TESTS: dict[str, Callable[[float], bool]] = {
    "positive": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
    "in [0, 2**32)": lambda v: 0 <= v < 2**32,  # what numpy accepts as a seed
}


def check_ranges(config: Any, field_ranges: dict[str, str]) -> None:
    """Every float finite and every numeric key within its range (`field_ranges`, by dotted
    key); the UserError names the first offending key, in declaration order."""
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        hints = typing.get_type_hints(type(values))
        for f in dataclasses.fields(values):
            key, value = f"{section.name}.{f.name}", getattr(values, f.name)
            if value is not None and without_none(hints[f.name]) is float \
                    and not math.isfinite(value):
                raise UserError(f"{key} must be a finite number, got {value}")
            allowed = field_ranges.get(key)
            if allowed is not None and value is not None and not RANGE_TESTS[allowed](value):
                raise UserError(f"{key} must be {allowed}, got {value}")


def apply_dict(config: Any, raw: Any, source: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    for section_name, values in raw.items():
        section = _section(config, str(section_name), source)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{source}: section '{section_name}' must be a mapping")
        for key, value in values.items():
            _set_field(section, f"{section_name}.{key}", str(key), value, source)


def apply_override(config: Any, assignment: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML (1e-4, true, [a])."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected section.key=value")
    dotted, text = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2:
        raise UserError(f"--set {assignment!r}: the key must look like section.key, e.g. train.lr")
    section = _section(config, parts[0], "--set")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    _set_field(section, dotted.strip(), parts[1], value, "--set")


def _section(config: Any, name: str, source: str) -> Any:
    names = [f.name for f in dataclasses.fields(config)]
    if name not in names:
        raise UserError(f"{source}: unknown section '{name}' (expected one of: {', '.join(names)})")
    return getattr(config, name)


def _set_field(section: Any, dotted: str, key: str, value: Any, source: str) -> None:
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise UserError(f"{source}: unknown key '{dotted}' (known keys: {known})")
    setattr(section, key, _coerce(value, hints[key], dotted, source))


def without_none(hint: Any) -> Any:
    """A declared type without its None (float for `float | None`; the first other member
    of a wider union); any other type as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _coerce(value: Any, expected: Any, dotted: str, source: str) -> Any:
    """Check `value` against a field's declared type; ints are accepted where floats are."""
    origin = typing.get_origin(expected)
    if origin is Literal:
        choices = typing.get_args(expected)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
        if value in choices:
            return value
        raise UserError(
            f"{source}: '{dotted}' must be one of {', '.join(map(str, choices))}; got {value!r}"
        )
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{source}: '{dotted}' must be a list; got {value!r}")
        (inner,) = typing.get_args(expected)
        return [_coerce(v, inner, dotted, source) for v in value]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(expected):
            return None
        return _coerce(value, without_none(expected), dotted, source)
    if expected is float and isinstance(value, str):
        # YAML 1.1 reads "2e-4" (no dot) as a string; users mean a number.
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(expected)
    if ok is None:
        raise TypeError(f"config field {dotted} has unsupported type {expected}")
    if not ok:
        raise UserError(
            f"{source}: '{dotted}' must be {expected.__name__}; got {value!r} "
            f"({type(value).__name__})"
        )
    return float(value) if expected is float else value
