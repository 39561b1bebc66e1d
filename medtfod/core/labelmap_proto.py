"""The label map's text format read without the OD API: the light ONNX install (`bootstrap.py
install --runtime`) has protobuf but not `object_detection`'s generated `string_int_label_map_pb2`.

A message type with the fields medtfod reads (`item { name: 1, id: 2, display_name: 3 }`, the
OD API's own field numbers) is built here from a descriptor, and the text is parsed by protobuf's
`text_format`, so quoting, `item {` vs `item: {` and comments follow the same rules as with the OD
API's proto. Fields medtfod does not read (keypoints, ancestor ids, frequency) are skipped.
"""
from __future__ import annotations

import functools

from .errors import UserError


@functools.lru_cache(maxsize=1)
def _message_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="medtfod_label_map.proto", package="medtfod_label_map",
                                              syntax="proto2")
    item = file.message_type.add(name="StringIntLabelMapItem")
    for number, (name, kind) in enumerate((("name", "TYPE_STRING"), ("id", "TYPE_INT32"),
                                           ("display_name", "TYPE_STRING")), start=1):
        item.field.add(name=name, number=number, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                       type=getattr(descriptor_pb2.FieldDescriptorProto, kind))
    label_map = file.message_type.add(name="StringIntLabelMap")
    label_map.field.add(name="item", number=1, label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
                        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                        type_name=".medtfod_label_map.StringIntLabelMapItem")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("medtfod_label_map.StringIntLabelMap"))


def read_label_map_proto(path: str):
    """The label map file at `path` as a message with repeated `item` (name, id, display_name).

    Raises:
      UserError: not valid label-map text (the message names the file and line).
    """
    from google.protobuf import text_format
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return text_format.Parse(text, _message_class()(), allow_unknown_field=True)
    except text_format.ParseError as e:
        raise UserError(f"{path}: {e}") from None
