"""Structural checks of a parsed TOML tree against msgspec types, all at once.

Part of config loading (startup only, outside the onion). ``msgspec.convert``
stops at the first problem; to report every problem in one run, this module
walks the tree itself, struct by struct and entry by entry, and leaves only the
leaves (numbers, strings, lists of them) to msgspec. A tree with no problems is
then converted by msgspec as usual, so msgspec stays the one judge of types.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Annotated, Any, Final, NamedTuple

import msgspec

from gateway.sourcemap import KeyPath, parse

if typing.TYPE_CHECKING:
    from collections.abc import Mapping

_UNKNOWN_FIELD: Final = re.compile(r"Object contains unknown field `(.+)`")
#: msgspec speaks JSON; a TOML user knows tables and arrays.
_TOML_WORDS: Final = {"`object`": "a table", "`array`": "an array"}


class Problem(NamedTuple):
    """One thing wrong with the config: where it is and what is wrong."""

    path: KeyPath
    message: str


def check_tree(value: object, tp: object, path: KeyPath = ()) -> list[Problem]:
    """Return every problem of ``value`` as an instance of ``tp``.

    Structs are checked key by key (unknown keys, missing keys), tagged unions by
    their tag, dicts and lists entry by entry; leaves are handed to msgspec. A
    struct may list hints for keys it does not have in a ``key_hints`` class
    variable (key -> message); a leaf type annotated with
    ``msgspec.Meta(description=...)`` is reported as "must be <description>".
    """
    inner = _unannotated(tp)
    if isinstance(value, dict):
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            return _check_struct(value, inner, path)
        members = _tagged_members(inner)
        if members:
            return _check_tagged(value, members, path)
    found = _check_items(value, inner, path)
    return found or _check_leaf(value, tp, path)


def _check_items(value: object, tp: object, path: KeyPath) -> list[Problem]:
    """Check each entry of a dict or list against the item type of ``tp``."""
    args = typing.get_args(tp)
    if isinstance(value, dict) and typing.get_origin(tp) is dict:
        return [p for k, v in value.items() for p in check_tree(v, args[1], (*path, k))]
    if isinstance(value, list) and typing.get_origin(tp) is list:
        return [
            p for i, v in enumerate(value) for p in check_tree(v, args[0], (*path, i))
        ]
    return []


def _check_leaf(value: object, tp: object, path: KeyPath) -> list[Problem]:
    try:
        msgspec.convert(value, type=tp)
    except msgspec.ValidationError as exc:
        wanted = _description(tp)
        # The value itself is never echoed: a key pasted by mistake stays unprinted.
        return [
            Problem(path, f"must be {wanted}")
            if wanted
            else from_validation_error(exc, path)
        ]
    return []


def from_validation_error(exc: msgspec.ValidationError, base: KeyPath) -> Problem:
    """Turn msgspec's ``message - at `$.a[0]``` into a ``Problem`` under ``base``."""
    text, sep, where = str(exc).rpartition(" - at `$")
    if not sep:
        text, where = str(exc), ""
    path = (*base, *parse(where.rstrip("`")))
    unknown = _UNKNOWN_FIELD.fullmatch(text)
    if unknown:
        return Problem((*path, unknown.group(1)), "unknown key")
    for word, toml_word in _TOML_WORDS.items():
        text = text.replace(word, toml_word)
    return Problem(path, text)


def _unannotated(tp: object) -> object:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _description(tp: object) -> str | None:
    """Return the ``Meta.description`` of ``tp`` (or of ``tp | None``), if any."""
    if typing.get_origin(tp) in {typing.Union, types.UnionType}:
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        tp = members[0] if len(members) == 1 else tp
    if typing.get_origin(tp) is not Annotated:
        return None
    metas = [m for m in typing.get_args(tp)[1:] if isinstance(m, msgspec.Meta)]
    return next((m.description for m in metas if m.description), None)


def _tagged_members(tp: object) -> tuple[type[msgspec.Struct], ...]:
    """Return the members of a union of tagged structs, else ``()``."""
    if typing.get_origin(tp) not in {typing.Union, types.UnionType}:
        return ()
    members = typing.get_args(tp)
    if all(
        isinstance(m, type)
        and issubclass(m, msgspec.Struct)
        and m.__struct_config__.tag_field
        for m in members
    ):
        return members
    return ()


def _check_struct(
    value: dict[str, Any], cls: type[msgspec.Struct], path: KeyPath
) -> list[Problem]:
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    tag_field = cls.__struct_config__.tag_field
    problems = [
        Problem((*path, key), _unknown_key(cls, key, fields))
        for key in value
        if key not in fields and key != tag_field
    ]
    for name, field in fields.items():
        if name in value:
            problems += check_tree(value[name], field.type, (*path, name))
        elif field.required:
            problems.append(Problem((*path, name), "required key is missing"))
    return problems


def _check_tagged(
    value: dict[str, Any], members: tuple[type[msgspec.Struct], ...], path: KeyPath
) -> list[Problem]:
    tag_field = str(members[0].__struct_config__.tag_field)
    by_tag = {m.__struct_config__.tag: m for m in members}
    tag = value.get(tag_field)
    cls = by_tag.get(tag) if isinstance(tag, str) else None
    if cls is None:
        expected = ", ".join(f'"{t}"' for t in by_tag)
        what = (
            "required key is missing" if tag is None else f"unknown {tag_field} {tag!r}"
        )
        return [Problem((*path, tag_field), f"{what} (expected one of {expected})")]
    return _check_struct(value, cls, path)


def _unknown_key(cls: type[msgspec.Struct], key: str, fields: Mapping[str, Any]) -> str:
    hints: Mapping[str, str] = getattr(cls, "key_hints", {})
    if key in hints:
        return f"unknown key: {hints[key]}"
    close = difflib.get_close_matches(key, list(fields), n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
