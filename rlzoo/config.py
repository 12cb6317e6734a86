"""Dataclass configs on the command line: one `--field-name` flag per field,
typed from the annotation, documented by the field's attribute docstring
(the string literal on the line after it)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from typing import Any, Literal


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: its attribute docstring} of a dataclass, inherited ones
    included (a subclass that redeclares a field may give it a new docstring).
    A class made at run time can carry its docs in `__field_docs__`."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "__field_docs__" in klass.__dict__:
            docs.update(klass.__dict__["__field_docs__"])
        elif dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return tp, False


def parse_value(text: str, tp: Any, name: str) -> Any:
    """`text` converted to the annotated type `tp`; ValueError naming the flag otherwise."""
    tp, optional = _unwrap_optional(tp)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    flag = "--" + name.replace("_", "-")
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if text not in choices:
            raise ValueError(f"{flag} must be one of {', '.join(map(str, choices))}; got {text!r}")
        return text
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{flag} must be true or false; got {text!r}")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"{flag} must be a{'n' if tp is int else ''} {tp.__name__}; got {text!r}") from None
    raise ValueError(f"{flag}: cannot parse a {tp} from the command line")


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, skip: frozenset[str] = frozenset(),
                  dest_prefix: str = "", flag_prefix: str = "") -> list[str]:
    """Add one flag per field of dataclass `cls` (defaults shown in --help);
    returns the field names added. Values stay strings until `from_namespace`."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    added = []
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        tp, _ = _unwrap_optional(hints[field.name])
        if typing.get_origin(tp) is tuple:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        flag = "--" + flag_prefix + field.name.replace("_", "-")
        choices = f" {{{', '.join(map(str, typing.get_args(tp)))}}}" if typing.get_origin(tp) is Literal else ""
        parser.add_argument(
            flag, dest=dest_prefix + field.name, default=None, metavar=tp.__name__.upper() if hasattr(tp, "__name__") else "VALUE",
            help=f"{docs.get(field.name, '')}{choices} (default: {default})",
        )
        added.append(field.name)
    return added


def from_namespace(cls: type, namespace: argparse.Namespace, names: list[str], dest_prefix: str = "", **extra: Any) -> Any:
    """Build `cls` from the flags that were given (others keep their defaults)."""
    hints = typing.get_type_hints(cls)
    values = dict(extra)
    for name in names:
        text = getattr(namespace, dest_prefix + name)
        if text is not None:
            values[name] = parse_value(text, hints[name], name)
    return cls(**values)
