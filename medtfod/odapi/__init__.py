"""Wrappers around the TF Object Detection API: the only package that imports `object_detection`.

`protos` reads and writes the OD API's protobuf messages (no TensorFlow needed); `runtime`
applies the compatibility fixes and loads the OD API's TF2 modules; `train`, `evaluate`,
`export` and `checks` call the OD API's own train loop, eval loop, exporter and model builder.
"""
