"""The OD API's protobuf messages (pipeline config, label map), read and written as text.

Only protobuf and the OD API's generated `*_pb2` modules are imported here, not TensorFlow,
so rendering a config or reading a label map is fast.
"""
from __future__ import annotations

from google.protobuf import text_format

from object_detection.protos import pipeline_pb2, preprocessor_pb2, string_int_label_map_pb2

from ..core.errors import UserError

TrainEvalPipelineConfig = pipeline_pb2.TrainEvalPipelineConfig
StringIntLabelMap = string_int_label_map_pb2.StringIntLabelMap
PreprocessingStep = preprocessor_pb2.PreprocessingStep


def parse_text(text: str, message, source: str):
    """Merge protobuf text into `message`; a syntax or field error names `source` and the line."""
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as e:
        raise UserError(f"{source}: {e}") from None
    return message


def to_text(message) -> str:
    return text_format.MessageToString(message)


def read_pipeline_config(path: str) -> TrainEvalPipelineConfig:
    with open(path, encoding="utf-8") as f:
        return parse_text(f.read(), TrainEvalPipelineConfig(), path)


def read_label_map_proto(path: str) -> StringIntLabelMap:
    with open(path, encoding="utf-8") as f:
        return parse_text(f.read(), StringIntLabelMap(), path)
