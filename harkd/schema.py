"""Config schema building blocks (pydantic v2): strict value types, frozen dataclasses that forbid unknown keys, and
the conversion of pydantic's errors into one HarkdError line naming where, the dotted key, the value and what is
allowed."""

from __future__ import annotations

import functools
import types
from typing import Annotated, Any, Callable, Union, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr,
                      TypeAdapter, ValidationError)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import PydanticCustomError

from harkd.errors import HarkdError


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's float would read true as 1.0
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


def _distinct(values: tuple) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {list(values)}")
    return values


Int = StrictInt
Bool = StrictBool
Str = StrictStr
# Lax on strings on purpose: YAML 1.1 reads `1e-3` (no dot) as a string, which users mean as a number.
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
# Subject, session and fold names: YAML reads `[1, 2]` as numbers, the data names them as strings.
Name = Annotated[str, Field(coerce_numbers_to_str=True, strict=False)]
PositiveInts = Annotated[tuple[PositiveInt, ...], Field(min_length=1), AfterValidator(_distinct)]
PositiveFloats = Annotated[tuple[PositiveFloat, ...], Field(min_length=1), AfterValidator(_distinct)]

FORBID_UNKNOWN = ConfigDict(extra="forbid")


def config_dataclass(where: str) -> Callable[[type], type]:
    """A frozen pydantic dataclass that forbids unknown keys. Built directly in code (`WindowConfig(length=0, ...)`),
    a bad value is a one-line HarkdError starting with `where`; inside a config, the config's message names the full
    key instead (nested validation never calls __init__)."""

    def make(cls: type) -> type:
        cls = pydantic_dataclass(frozen=True, config=FORBID_UNKNOWN)(cls)
        validate = cls.__init__

        @functools.wraps(validate)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:  # positional arguments by name, so that an error names the key
                validate(self, **dict(zip(_keys(cls), args)), **kwargs)
            except ValidationError as exc:
                raise config_error(exc, where, cls) from None

        cls.__init__ = __init__
        return cls

    return make


@functools.cache
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


class ConfigErrors(HarkdError):
    """A config's every problem: the message is the first with a count of the rest; `lines` holds each, one line."""

    def __init__(self, lines: list[str]):
        super().__init__(lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""))
        self.lines = lines


def validate(schema: Any, values: Any, where: str, at: tuple = ()) -> Any:
    """`values` (YAML data) checked against `schema` (a type); a bad one is a HarkdError of one line. `at` is where
    `values` sit in a larger document (e.g. ("channels", 2)), for the key path the message names."""
    try:
        return _adapter(schema).validate_python(values)
    except ValidationError as exc:
        raise config_error(exc, where, schema, at) from None


def resolved_yaml(schema: Any, value: Any) -> str:
    """A validated config as YAML, every default filled in."""
    return yaml.safe_dump(_adapter(schema).dump_python(value, mode="json", by_alias=True), sort_keys=False)


_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")
_PHRASES = {
    "int_type": "expected an integer", "int_parsing": "expected an integer", "int_from_float": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number", "finite_number": "expected a number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "string_type": "expected a string", "list_type": "expected a list", "tuple_type": "expected a list",
    "dict_type": "expected a mapping", "dataclass_type": "expected a mapping", "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping", "dataclass_args_type": "expected a mapping",
    "greater_than": "must be greater than {gt}", "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}", "less_than_equal": "must be at most {le}",
    "literal_error": "expected {expected}", "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def _dotted(loc: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unwrap(tp: Any) -> Any:
    """The type under Annotated[...] and `X | None`."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            tp = next(arg for arg in get_args(tp) if arg is not type(None))
        else:
            return tp


def _keys(tp: Any) -> dict[str, Any]:
    """A model's or dataclass's keys as written in YAML (aliases), with their types."""
    fields = getattr(_unwrap(tp), "__pydantic_fields__", {})
    return {info.validation_alias or info.alias or name: info.annotation for name, info in fields.items()}


def _valid_keys(schema: Any, loc: tuple) -> list[str]:
    tp = schema
    for part in loc:
        tp = get_args(_unwrap(tp))[0] if isinstance(part, int) else _keys(tp)[part]
    return sorted(_keys(tp))


def _message(error: dict) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":  # our own validators' messages name the value themselves
        return str(ctx["error"])
    if kind in ("missing", "missing_argument"):
        return "required key missing"
    phrase = _PHRASES.get(kind, error["msg"][:1].lower() + error["msg"][1:]).format(**ctx)
    return f"{phrase}, got {_shown(error['input'])}"


def config_error(exc: ValidationError, where: str, schema: Any, at: tuple = ()) -> ConfigErrors:
    """pydantic's errors as one line (the first of `error_lines` and a count of the rest), each kept in `lines`."""
    return ConfigErrors(error_lines(exc, where, schema, at))


def error_lines(exc: ValidationError, where: str, schema: Any, at: tuple = ()) -> list[str]:
    """pydantic's errors, one line each naming `where` and the key path (below `at`); unknown keys at one place are
    listed together with the valid ones, and come first."""
    lines: dict[str, None] = {}
    unknown: dict[tuple, list[str]] = {}
    errors = exc.errors()
    for error in errors:
        if error["type"] in _UNKNOWN_KEY:
            unknown.setdefault(error["loc"][:-1], []).append(str(error["loc"][-1]))
    missing: dict[tuple, list[str]] = {}
    for error in errors:
        loc = error["loc"]
        if error["type"] in _UNKNOWN_KEY:
            continue
        if error["type"] in ("missing", "missing_argument") and loc[:-1] in unknown:  # a misspelt key: one line
            missing.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        place = _dotted(at + loc)
        lines[" ".join(filter(None, (f"{where}:", place + ":" if place else "", _message(error))))] = None
    for parent, keys in unknown.items():
        place = f"{where}: {_dotted(at + parent)}:" if at + parent else f"{where}:"
        absent = f" (and {sorted(missing[parent])} missing)" if parent in missing else ""
        lines[f"{place} unknown key(s) {sorted(keys)}{absent}; valid keys: {_valid_keys(schema, parent)}"] = None
    return sorted(lines, key=lambda line: "unknown key(s)" not in line)
