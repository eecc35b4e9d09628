"""A minimal protobuf schema for Caffe's file formats, written by this project.

Only the messages and fields that the 3DMM-CNN release files use (plus the few
that change the meaning of a layer, so that a prototxt using them fails loudly
instead of being misread). Field numbers are those of Caffe's public schema
(caffe/src/caffe/proto/caffe.proto); names follow it so text prototxts parse.

Binary files may hold fields this schema does not declare: protobuf keeps them as
unknown fields and ignores them, which is what we want for solver state, data
layers and other training-only content of a .caffemodel.
"""
from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "engine3dmm.caffe"

# (name, number, type, label, type_name-or-None, default-or-None, packed)
_OPT = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REP = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_T = descriptor_pb2.FieldDescriptorProto
STRING, FLOAT, DOUBLE, BOOL = _T.TYPE_STRING, _T.TYPE_FLOAT, _T.TYPE_DOUBLE, _T.TYPE_BOOL
INT32, INT64, UINT32 = _T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_UINT32
MSG, ENUM = _T.TYPE_MESSAGE, _T.TYPE_ENUM


def _f(name, number, ftype, label=_OPT, type_name=None, default=None, packed=False):
    return (name, number, ftype, label, type_name, default, packed)


_MESSAGES: dict[str, list] = {
    "BlobShape": [_f("dim", 1, INT64, _REP, packed=True)],
    "BlobProto": [
        _f("shape", 7, MSG, type_name="BlobShape"),
        _f("data", 5, FLOAT, _REP, packed=True),
        _f("diff", 6, FLOAT, _REP, packed=True),
        _f("double_data", 8, DOUBLE, _REP, packed=True),
        _f("double_diff", 9, DOUBLE, _REP, packed=True),
        # legacy 4-D shape, used when `shape` is absent
        _f("num", 1, INT32, default="0"),
        _f("channels", 2, INT32, default="0"),
        _f("height", 3, INT32, default="0"),
        _f("width", 4, INT32, default="0"),
    ],
    "FillerParameter": [
        _f("type", 1, STRING, default="constant"),
        _f("value", 2, FLOAT, default="0"),
        _f("min", 3, FLOAT, default="0"),
        _f("max", 4, FLOAT, default="1"),
        _f("mean", 5, FLOAT, default="0"),
        _f("std", 6, FLOAT, default="1"),
        _f("sparse", 7, INT32, default="-1"),
    ],
    "ParamSpec": [
        _f("name", 1, STRING),
        _f("lr_mult", 3, FLOAT, default="1"),
        _f("decay_mult", 4, FLOAT, default="1"),
    ],
    "ConvolutionParameter": [
        _f("num_output", 1, UINT32),
        _f("bias_term", 2, BOOL, default="true"),
        _f("pad", 3, UINT32, _REP),
        _f("kernel_size", 4, UINT32, _REP),
        _f("stride", 6, UINT32, _REP),
        _f("dilation", 18, UINT32, _REP),
        _f("pad_h", 9, UINT32, default="0"),
        _f("pad_w", 10, UINT32, default="0"),
        _f("kernel_h", 11, UINT32),
        _f("kernel_w", 12, UINT32),
        _f("stride_h", 13, UINT32),
        _f("stride_w", 14, UINT32),
        _f("group", 5, UINT32, default="1"),
        _f("weight_filler", 7, MSG, type_name="FillerParameter"),
        _f("bias_filler", 8, MSG, type_name="FillerParameter"),
        _f("axis", 16, INT32, default="1"),
    ],
    "BatchNormParameter": [
        _f("use_global_stats", 1, BOOL),
        _f("moving_average_fraction", 2, FLOAT, default="0.999"),
        _f("eps", 3, FLOAT, default="1e-05"),
    ],
    "ScaleParameter": [
        _f("axis", 1, INT32, default="1"),
        _f("num_axes", 2, INT32, default="1"),
        _f("filler", 3, MSG, type_name="FillerParameter"),
        _f("bias_term", 4, BOOL, default="false"),
        _f("bias_filler", 5, MSG, type_name="FillerParameter"),
    ],
    "PoolingParameter": [
        _f("pool", 1, ENUM, type_name="PoolingParameter.PoolMethod", default="MAX"),
        _f("pad", 4, UINT32, default="0"),
        _f("pad_h", 9, UINT32, default="0"),
        _f("pad_w", 10, UINT32, default="0"),
        _f("kernel_size", 2, UINT32),
        _f("kernel_h", 5, UINT32),
        _f("kernel_w", 6, UINT32),
        _f("stride", 3, UINT32, default="1"),
        _f("stride_h", 7, UINT32),
        _f("stride_w", 8, UINT32),
        _f("global_pooling", 12, BOOL, default="false"),
        _f("round_mode", 13, ENUM, type_name="PoolingParameter.RoundMode", default="CEIL"),
    ],
    "EltwiseParameter": [
        _f("operation", 1, ENUM, type_name="EltwiseParameter.EltwiseOp", default="SUM"),
        _f("coeff", 2, FLOAT, _REP),
    ],
    "InnerProductParameter": [
        _f("num_output", 1, UINT32),
        _f("bias_term", 2, BOOL, default="true"),
        _f("weight_filler", 3, MSG, type_name="FillerParameter"),
        _f("bias_filler", 4, MSG, type_name="FillerParameter"),
        _f("axis", 5, INT32, default="1"),
        _f("transpose", 6, BOOL, default="false"),
    ],
    "ReLUParameter": [_f("negative_slope", 1, FLOAT, default="0")],
    "InputParameter": [_f("shape", 1, MSG, _REP, type_name="BlobShape")],
    "LayerParameter": [
        _f("name", 1, STRING),
        _f("type", 2, STRING),
        _f("bottom", 3, STRING, _REP),
        _f("top", 4, STRING, _REP),
        _f("param", 6, MSG, _REP, type_name="ParamSpec"),
        _f("blobs", 7, MSG, _REP, type_name="BlobProto"),
        _f("convolution_param", 106, MSG, type_name="ConvolutionParameter"),
        _f("eltwise_param", 110, MSG, type_name="EltwiseParameter"),
        _f("inner_product_param", 117, MSG, type_name="InnerProductParameter"),
        _f("pooling_param", 121, MSG, type_name="PoolingParameter"),
        _f("relu_param", 123, MSG, type_name="ReLUParameter"),
        _f("batch_norm_param", 139, MSG, type_name="BatchNormParameter"),
        _f("scale_param", 142, MSG, type_name="ScaleParameter"),
        _f("input_param", 143, MSG, type_name="InputParameter"),
    ],
    # The legacy (pre-2015) layer message, still found in old .caffemodel files.
    "V1LayerParameter": [
        _f("bottom", 2, STRING, _REP),
        _f("top", 3, STRING, _REP),
        _f("name", 4, STRING),
        _f("type", 5, ENUM, type_name="V1LayerParameter.LayerType", default="NONE"),
        _f("blobs", 6, MSG, _REP, type_name="BlobProto"),
        _f("convolution_param", 10, MSG, type_name="ConvolutionParameter"),
        _f("eltwise_param", 24, MSG, type_name="EltwiseParameter"),
        _f("inner_product_param", 17, MSG, type_name="InnerProductParameter"),
        _f("pooling_param", 19, MSG, type_name="PoolingParameter"),
        _f("relu_param", 30, MSG, type_name="ReLUParameter"),
    ],
    "NetParameter": [
        _f("name", 1, STRING),
        _f("input", 3, STRING, _REP),
        _f("input_shape", 8, MSG, _REP, type_name="BlobShape"),
        _f("input_dim", 4, INT32, _REP),
        _f("force_backward", 5, BOOL, default="false"),
        _f("layer", 100, MSG, _REP, type_name="LayerParameter"),
        _f("layers", 2, MSG, _REP, type_name="V1LayerParameter"),
    ],
}

_ENUMS: dict[str, list[tuple[str, int]]] = {
    "PoolingParameter.PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
    "PoolingParameter.RoundMode": [("CEIL", 0), ("FLOOR", 1)],
    "EltwiseParameter.EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)],
    # V1 layer types used by ResNet-like nets (the V1 enum predates BatchNorm/Scale).
    "V1LayerParameter.LayerType": [
        ("NONE", 0), ("CONCAT", 3), ("CONVOLUTION", 4), ("DATA", 5), ("DROPOUT", 6),
        ("INNER_PRODUCT", 14), ("POOLING", 17), ("RELU", 18), ("SOFTMAX", 20),
        ("SPLIT", 22), ("ELTWISE", 25),
    ],
}


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="engine3dmm_caffe.proto", package=_PACKAGE, syntax="proto2")
    nested_enums: dict[str, list] = {}
    for full, values in _ENUMS.items():
        owner, enum_name = full.split(".")
        nested_enums.setdefault(owner, []).append((enum_name, values))
    for msg_name, fields in _MESSAGES.items():
        mdp = fdp.message_type.add(name=msg_name)
        for enum_name, values in nested_enums.get(msg_name, []):
            edp = mdp.enum_type.add(name=enum_name)
            for vname, vnum in values:
                edp.value.add(name=vname, number=vnum)
        for name, number, ftype, label, type_name, default, packed in fields:
            fd = mdp.field.add(name=name, number=number, type=ftype, label=label)
            if type_name is not None:
                fd.type_name = f".{_PACKAGE}.{type_name}"
            if default is not None:
                fd.default_value = default
            if packed:
                fd.options.packed = True
    return fdp


@functools.lru_cache(maxsize=1)
def messages() -> dict[str, type]:
    """Message classes by name: NetParameter, LayerParameter, V1LayerParameter, BlobProto, ..."""
    # A private pool, so that our schema never collides with a real caffe_pb2 that a
    # user may have imported in the same process.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_build_file())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in _MESSAGES}
