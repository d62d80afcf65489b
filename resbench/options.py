"""Base class of the options every plugin item takes."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

import pydantic

from resbench.errors import UsageError

__all__ = ["NoOptions", "Options", "describe_options", "format_validation_error", "numbers_not_booleans",
           "validate_options"]


def _is_number(annotation: Any) -> bool:
    """Whether a field holds a number (``int``, ``float``, possibly ``Annotated`` or ``| None``), not a bool."""
    if annotation in (int, float):
        return True
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _is_number(arguments[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_number(argument) for argument in arguments) and bool not in arguments
    return False


def _holds_numbers(annotation: Any) -> bool:
    """Whether a field holds a list or tuple of numbers."""
    return typing.get_origin(annotation) in (list, tuple) and all(
        _is_number(argument) for argument in typing.get_args(annotation) if argument is not Ellipsis)


def numbers_not_booleans(model: type[pydantic.BaseModel], data: Any) -> Any:
    """``data`` with ``true``/``false`` given where ``model`` wants a number written as the words they were:
    pydantic then refuses them with the key and what it got (Python counts a bool as the number 1 or 0,
    which would turn ``trials: true`` into one trial)."""
    if not isinstance(data, dict):
        return data

    def spelled(value: Any) -> Any:
        return str(value).lower() if isinstance(value, bool) else value

    fixed = dict(data)
    for name, field in model.model_fields.items():
        value = fixed.get(name)
        if isinstance(value, bool) and _is_number(field.annotation):
            fixed[name] = spelled(value)
        elif isinstance(value, list) and _holds_numbers(field.annotation):
            fixed[name] = [spelled(item) for item in value]
    return fixed


class Options(pydantic.BaseModel):
    """Options of one plugin item. Unknown fields are refused, so a misspelt key is an error, and a number
    option refuses ``true``/``false``."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _numbers_not_booleans(cls, data: Any) -> Any:
        return numbers_not_booleans(cls, data)


class NoOptions(Options):
    """An item that takes no options."""


def _describe_constraints(field: Any) -> str:
    bounds = []
    for meta in field.metadata:
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attribute, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    return " and ".join(bounds)


def _nested_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The pydantic model an annotation holds (itself, or inside ``list[...]``, ``X | None``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if (found := _nested_model(argument)) is not None:
            return found
    return None


def _model_at(model: type | None, path: Sequence[Any]) -> type | None:
    """The model whose key sits at ``path`` inside ``model`` (list indices skipped); None when not a model."""
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        model = _nested_model(fields[part].annotation)
    return model


def format_validation_error(error: pydantic.ValidationError, where: str, model: type | None = None) -> str:
    """One line per problem: where it is, the key, what is wrong and, when known, the allowed range."""
    lines = []
    fields = getattr(model, "model_fields", {}) if model is not None else {}
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":  # the keys of the item that holds it, not of the suite
            allowed = (", ".join(sorted(getattr(_model_at(model, problem["loc"][:-1]), "model_fields", {})))
                       or "none, this item takes no options")
            message = f"unknown option (allowed: {allowed})"
        else:
            key = str(problem["loc"][0]) if problem["loc"] else ""
            if key in fields:
                allowed_range = _describe_constraints(fields[key])
                if allowed_range:
                    message += f" (allowed range: {allowed_range})"
            # A validator's own message (value_error) already says what it got.
            if ("input" in problem and problem["type"] != "value_error" and not isinstance(problem["input"], dict)
                    and "got " not in message):
                message += f", got {problem['input']!r}"
        prefix = f"{where}: {location}" if location else where
        lines.append(f"{prefix}: {message}")
    return "\n".join(lines)


def validate_options(model: type[Options], raw: dict[str, Any], where: str) -> Options:
    """Validate raw options for one item; bad input raises :class:`UsageError` naming key and range."""
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as error:
        raise UsageError(format_validation_error(error, where, model)) from None


def describe_options(model: type[Options]) -> list[dict[str, Any]]:
    """Options with their types, defaults and descriptions, for ``resbench list``."""
    described = []
    for name, field in model.model_fields.items():
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if isinstance(default, pydantic.BaseModel):  # a recipe's component: shown as in suites and tables
            default = getattr(default, "label", None) or default.model_dump(mode="json")
        described.append(
            {
                "name": name,
                "type": getattr(field.annotation, "__name__", str(field.annotation)),
                "default": default,
                "required": field.is_required(),
                "description": field.description or "",
                "range": _describe_constraints(field),
            }
        )
    return described
