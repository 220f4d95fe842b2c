"""Plain Python values to and from what dbus-fast marshals (Variants, lists for structs).

Service objects and callers see plain values only: ``a{sv}`` is a plain dict, a struct a
tuple or list. The converters are built once per signature, so a call parses nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from dbus_fast import Message
from dbus_fast.signature import SignatureType, Variant, get_signature_tree


def variant(value: Any) -> Variant:
    """Wrap a plain value in a Variant: bool→b, int→x, float→d, str→s, bytes→ay,
    list[int]→ax, list[str]→as (also the empty list), list[dict]→aa{sv}, dict→a{sv}."""
    if isinstance(value, Variant):
        return value
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, str):
        return Variant("s", value)
    if isinstance(value, (bytes, bytearray)):
        return Variant("ay", bytes(value))
    if isinstance(value, dict):
        return Variant("a{sv}", variant_dict(value))
    if isinstance(value, (list, tuple)):
        items = list(value)
        if all(isinstance(v, str) for v in items):
            return Variant("as", items)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return Variant("ax", items)
        if all(isinstance(v, dict) for v in items):
            return Variant("aa{sv}", [variant_dict(v) for v in items])
        raise TypeError(f"cannot put a mixed list in a D-Bus variant: {value!r}")
    raise TypeError(f"cannot put {type(value).__name__} {value!r} in a D-Bus variant")


def variant_dict(d: Mapping[str, Any]) -> dict[str, Variant]:
    """An ``a{sv}`` value from a dict of plain values (see :func:`variant` for the types)."""
    return {str(k): variant(v) for k, v in d.items()}


def unwrap(value: Any) -> Any:
    """Variants (at any depth) back to plain Python values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def _identity(value: Any) -> Any:
    return value


def _converter(type_: SignatureType) -> Callable[[Any], Any]:
    """Plain Python → what dbus-fast marshals, for one complete type (None: nothing to do)."""
    token = type_.token
    if token == "v":
        return variant
    if token == "(":
        children = [_converter(c) for c in type_.children]
        if all(c is _identity for c in children):
            return list
        return lambda v: [c(x) for c, x in zip(children, v, strict=True)]
    if token == "a":
        child = type_.children[0]
        if child.token == "{":
            key, val = (_converter(c) for c in child.children)
            if key is _identity and val is _identity:
                return _identity
            return lambda v: {key(k): val(x) for k, x in v.items()}
        if child.token == "y":
            return _identity
        item = _converter(child)
        if item is _identity:
            return lambda v: v if isinstance(v, list) else list(v)
        return lambda v: [item(x) for x in v]
    return _identity


def body_converter(signature: str) -> Callable[[list[Any]], list[Any]]:
    tree = get_signature_tree(signature)
    converters = [_converter(t) for t in tree.types]
    if all(c is _identity for c in converters):

        def check(body: list[Any]) -> list[Any]:
            tree.verify(body)
            return body

        return check

    def convert(body: list[Any]) -> list[Any]:
        out = [c(v) for c, v in zip(converters, body, strict=True)]
        tree.verify(out)
        return out

    return convert


def to_dbus(signature: str, body: list[Any]) -> list[Any]:
    """Plain values (tuples for structs, plain dicts for ``a{sv}``) to a body of ``signature``.

    Raises TypeError/ValueError (dbus-fast's SignatureBodyMismatchError) when they don't fit.
    """
    return _cached_converter(signature)(body)


_cached_converter = functools.lru_cache(maxsize=256)(body_converter)


def reply_body(reply: Message) -> list[Any]:
    return unwrap(reply.body) if "v" in reply.signature else reply.body
