"""Reading what a newer release wrote: fields this release does not know are ignored.

The models refuse unknown fields (``forbid_unknown_fields=True``), so an import or an admin
request with a misspelt field is refused and its author hears about it. A record written by
a newer release is another matter: an SDK reading a newer server's snapshot, or an older
server reading a store a newer one shares, must keep serving what it understands. New fields
on existing records are additive with defaults (docs/adr/0011-upgrades.md), so a record
without them reads as it always did.

The tolerant types are made from the models themselves (never written twice by hand): the
same fields, types and defaults, without ``forbid_unknown_fields``, at every depth.
"""

from __future__ import annotations

import typing
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["TolerantDecoder"]

T = TypeVar("T")

#: The origins of ``Union[a, b]`` and of ``a | b`` (``types.UnionType``, without importing
#: ``types``: the engine imports an allow-list of modules only).
_UNIONS: tuple[Any, ...] = (typing.Union, type(int | None))

#: Struct type -> its tolerant copy (itself when it already ignores unknown fields); ``None``
#: while the copy is being made.
_copies: dict[type[msgspec.Struct], type[msgspec.Struct] | None] = {}


class TolerantDecoder(Generic[T]):
    """A JSON decoder (and converter of decoded builtins) for ``model`` that ignores unknown
    fields at any depth and otherwise checks what ``msgspec.json.Decoder(model)`` (and
    ``msgspec.convert(..., strict=True)``) checks: a wrong type is still an error.

    A body without unknown fields costs one strict decode, as before. One with them (from a
    newer release) is decoded again into the tolerant copy of ``model`` and converted to
    ``model``: about four times the cost, paid only while releases are mixed.
    """

    __slots__ = ("_strict", "_tolerant", "_tolerant_model", "model")

    def __init__(self, model: type[T]) -> None:
        self.model = model
        self._strict = msgspec.json.Decoder(model)
        tolerant = _tolerant(model)
        self._tolerant_model: Any = None if tolerant is model else tolerant
        self._tolerant = None if tolerant is model else msgspec.json.Decoder(tolerant)

    def decode(self, data: bytes | str) -> T:
        """``data`` as ``model``. :raises msgspec.DecodeError: not JSON, or not a ``model``
        once unknown fields are ignored (``msgspec.ValidationError``)."""
        try:
            return self._strict.decode(data)
        except msgspec.ValidationError:
            if self._tolerant is None:
                raise
            relaxed = self._tolerant.decode(data)
        return msgspec.convert(relaxed, self.model, from_attributes=True)

    def convert(self, obj: Any) -> T:
        """``obj`` (what a JSON or YAML parser gave) as ``model``, as
        ``msgspec.convert(obj, model, strict=True)`` but ignoring unknown fields.
        :raises msgspec.ValidationError: not a ``model`` once unknown fields are ignored."""
        try:
            return msgspec.convert(obj, self.model, strict=True)
        except msgspec.ValidationError:
            if self._tolerant_model is None:
                raise
            relaxed = msgspec.convert(obj, self._tolerant_model, strict=True)
        return msgspec.convert(relaxed, self.model, from_attributes=True)


def _tolerant(annotation: Any) -> Any:
    """``annotation`` with every Struct type in it replaced by its tolerant copy; the
    annotation itself when nothing in it refuses unknown fields."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _tolerant_struct(annotation)
    args = typing.get_args(annotation)
    if not args:
        return annotation
    relaxed = tuple(_tolerant(arg) for arg in args)
    if all(new is old for new, old in zip(relaxed, args, strict=True)):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in _UNIONS:
        return typing.Union[relaxed]  # noqa: UP007 - made from a tuple of members
    return origin[relaxed]


def _tolerant_struct(struct: type[msgspec.Struct]) -> type[msgspec.Struct]:
    if struct in _copies:
        copy = _copies[struct]
        if copy is None:
            raise TypeError(f"{struct.__name__} refers to itself: no tolerant copy is made")
        return copy
    _copies[struct] = None
    try:
        fields = msgspec.structs.fields(struct)
        types_ = [_tolerant(field.type) for field in fields]
        config = struct.__struct_config__
        if not config.forbid_unknown_fields and all(
            new is field.type for new, field in zip(types_, fields, strict=True)
        ):
            copy = struct
        else:
            copy = msgspec.defstruct(
                f"Tolerant{struct.__name__}",
                [_definition(field, new) for field, new in zip(fields, types_, strict=True)],
                kw_only=True,  # keeps the fields in their order whatever their defaults
                rename={field.name: field.encode_name for field in fields},
                tag=config.tag,
                tag_field=config.tag_field,
                array_like=config.array_like,
                module=__name__,
            )
    except BaseException:
        del _copies[struct]
        raise
    _copies[struct] = copy
    return copy


def _definition(field: msgspec.structs.FieldInfo, annotation: Any) -> tuple[Any, ...]:
    if field.default is not msgspec.NODEFAULT:
        return (field.name, annotation, field.default)
    if field.default_factory is not msgspec.NODEFAULT:
        return (field.name, annotation, msgspec.field(default_factory=field.default_factory))
    return (field.name, annotation)
