"""Caffe's file formats as protobuf messages, built from Caffe's own caffe.proto.

The schema is Caffe's, verbatim (engine.network.caffe_proto), so a prototxt parses here
exactly when Caffe's text parser accepts it, and every field of a binary file has the
number Caffe gives it. Binary files may still hold fields that caffe.proto does not
declare (forks add their own): protobuf keeps them as unknown fields and ignores them.

caffe.proto uses a small part of the proto2 language (messages, enums, nested enums,
optional/repeated/required scalar, enum and message fields, [default = ...] and
[packed = true]); `_parse` reads exactly that part and refuses anything else, so an
unexpected construct can never be skipped silently. The result is an ordinary
FileDescriptorProto, added to a private descriptor pool: a real caffe_pb2 that a user
imported in the same process never collides with it.
"""
from __future__ import annotations

import functools
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64, "sint32": _F.TYPE_SINT32, "sint64": _F.TYPE_SINT64,
    "fixed32": _F.TYPE_FIXED32, "fixed64": _F.TYPE_FIXED64, "sfixed32": _F.TYPE_SFIXED32,
    "sfixed64": _F.TYPE_SFIXED64, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
}
_LABELS = {"optional": _F.LABEL_OPTIONAL, "repeated": _F.LABEL_REPEATED, "required": _F.LABEL_REQUIRED}
# comments, quoted strings, words/numbers, single punctuation characters
_TOKEN = re.compile(r"""//[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[\w.+-]+|[{}\[\]=;,]|\S""", re.S)


class SchemaError(Exception):
    """caffe.proto holds something this reader does not understand (a programming error)."""


class _Tokens:
    def __init__(self, text: str):
        self.items = [t for t in _TOKEN.findall(text) if not t.startswith(("//", "/*"))]
        self.pos = 0

    def peek(self) -> str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise SchemaError(f"caffe.proto: expected {expected or 'a token'!r} at token {self.pos}, found {tok!r}")
        self.pos += 1
        return tok


def _unquote(tok: str) -> str:
    if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "'\"":
        return tok[1:-1]
    raise SchemaError(f"caffe.proto: expected a quoted string, found {tok!r}")


def _parse_enum(toks: _Tokens, edp: descriptor_pb2.EnumDescriptorProto) -> None:
    edp.name = toks.take()
    toks.take("{")
    while toks.peek() != "}":
        name = toks.take()
        toks.take("=")
        edp.value.add(name=name, number=int(toks.take()))
        toks.take(";")
    toks.take("}")


def _parse_message(toks: _Tokens, mdp: descriptor_pb2.DescriptorProto, fields: list) -> None:
    mdp.name = toks.take()
    toks.take("{")
    while toks.peek() != "}":
        word = toks.take()
        if word == "enum":
            _parse_enum(toks, mdp.enum_type.add())
            continue
        if word not in _LABELS:
            raise SchemaError(f"caffe.proto: message {mdp.name}: unsupported statement {word!r}")
        ftype, name = toks.take(), toks.take()
        toks.take("=")
        fd = mdp.field.add(name=name, number=int(toks.take()), label=_LABELS[word])
        options: dict[str, str] = {}
        if toks.peek() == "[":
            toks.take("[")
            while True:
                key = toks.take()
                toks.take("=")
                options[key] = toks.take()
                if toks.peek() != ",":
                    break
                toks.take(",")
            toks.take("]")
        toks.take(";")
        unknown = set(options) - {"default", "packed"}
        if unknown:
            raise SchemaError(f"caffe.proto: {mdp.name}.{name}: unsupported option {sorted(unknown)}")
        if options.get("packed") == "true":
            fd.options.packed = True
        fields.append((mdp.name, fd, ftype, options.get("default")))
    toks.take("}")


def _default_text(ftype: int, raw: str) -> str:
    """A default as FileDescriptorProto spells it (what protoc would write)."""
    if ftype == _F.TYPE_STRING or ftype == _F.TYPE_BYTES:
        return _unquote(raw)
    if ftype in (_F.TYPE_FLOAT, _F.TYPE_DOUBLE):
        value = float(raw)  # caffe.proto writes ".999", "1.", "1e-5"
        return str(int(value)) if value == int(value) and "e" not in raw.lower() else repr(value)
    if ftype == _F.TYPE_BOOL:
        if raw not in ("true", "false"):
            raise SchemaError(f"caffe.proto: bool default {raw!r}")
        return raw
    if ftype == _F.TYPE_ENUM:
        return raw
    return str(int(raw))


def _parse(text: str) -> descriptor_pb2.FileDescriptorProto:
    toks = _Tokens(text)
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe.proto")  # no syntax: proto2, as protoc writes it
    fields: list = []
    while toks.peek() is not None:
        word = toks.take()
        if word == "syntax":
            toks.take("=")
            if _unquote(toks.take()) != "proto2":
                raise SchemaError("caffe.proto: expected syntax proto2")
            toks.take(";")
        elif word == "package":
            fdp.package = toks.take()
            toks.take(";")
        elif word == "message":
            _parse_message(toks, fdp.message_type.add(), fields)
        elif word == "enum":
            _parse_enum(toks, fdp.enum_type.add())
        else:
            raise SchemaError(f"caffe.proto: unsupported top-level statement {word!r}")
    # Resolve field types: a nested enum of the field's own message first, then top level.
    messages = {m.name for m in fdp.message_type}
    enums = {e.name for e in fdp.enum_type} | {f"{m.name}.{e.name}" for m in fdp.message_type for e in m.enum_type}
    for owner, fd, ftype, default in fields:
        if ftype in _SCALARS:
            fd.type = _SCALARS[ftype]
        else:
            for candidate in (f"{owner}.{ftype}", ftype):
                if candidate in enums or candidate in messages:
                    fd.type = _F.TYPE_ENUM if candidate in enums else _F.TYPE_MESSAGE
                    fd.type_name = f".{fdp.package}.{candidate}"
                    break
            else:
                raise SchemaError(f"caffe.proto: {owner}.{fd.name}: unknown type {ftype!r}")
        if default is not None:
            fd.default_value = _default_text(fd.type, default)
    return fdp


@functools.lru_cache(maxsize=1)
def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """caffe.proto as a FileDescriptorProto."""
    from engine.network.caffe_proto import CAFFE_PROTO

    return _parse(CAFFE_PROTO)


@functools.lru_cache(maxsize=1)
def messages() -> dict[str, type]:
    """Message classes by name: NetParameter, LayerParameter, V1LayerParameter, BlobProto, ..."""
    fdp = file_descriptor()
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{fdp.package}.{m.name}"))
            for m in fdp.message_type}
