"""Base class of the options every plugin item takes."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

import pydantic

from resbench.errors import UsageError

__all__ = ["NoOptions", "Options", "describe_options", "format_validation_error", "validate_options"]


class Options(pydantic.BaseModel):
    """Options of one plugin item. Unknown fields are refused, so a misspelt key is an error."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


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
            if "input" in problem and problem["type"] != "value_error" and not isinstance(problem["input"], dict):
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
