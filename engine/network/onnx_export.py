"""Build the ONNX graph of the network directly from fused numpy weights.

Written with onnx.helper rather than traced from PyTorch: it needs no PyTorch, takes
about a second instead of a minute of tracing, and gives a graph with exactly the
nodes we choose (Sub, Conv, Relu, Add, MaxPool, GlobalAveragePool, Flatten, Gemm), so
the ONNX Runtime vs PyTorch comparison checks two independent implementations.

Contract: input `crops` float32 [batch, 3, 224, 224], BGR, 0..255, NOT mean-subtracted
(the mean image is a constant in the graph); output `coeffs` float32 [batch, 198].
"fp16": weights and convolution/ReLU/Add/MaxPool compute in float16 (what TensorRT
builds a strongly typed engine from); input, mean subtraction, pool5 and fc_ftnew stay
float32 (the 2048-term fc dot products and the pool5 mean are where float16 loses most).
"""
from __future__ import annotations

import numpy as np

from engine.errors import InputError
from engine.network import architecture as arch

INPUT_NAME = "crops"
OUTPUT_NAME = "coeffs"
OPSET = 17
PRECISIONS = ("fp32", "fp16")


def build_onnx(fused: dict[str, np.ndarray], mean: np.ndarray, precision: str = "fp32",
               metadata: dict[str, str] | None = None):
    """An onnx.ModelProto, checked with onnx.checker and full shape inference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if precision not in PRECISIONS:
        raise InputError(f"precision: expected one of {PRECISIONS}, found {precision!r}")
    trunk_dtype = np.float16 if precision == "fp16" else np.float32
    inits: list = []
    nodes: list = []

    def const(name: str, arr: np.ndarray, dtype) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), name))
        return name

    def conv(x: str, c: arch.ConvSpec, relu: bool) -> str:
        w = const(f"{c.conv}.weight", fused[f"{c.conv}.weight"], trunk_dtype)
        b = const(f"{c.conv}.bias", fused[f"{c.conv}.bias"], trunk_dtype)
        out = c.conv
        nodes.append(helper.make_node("Conv", [x, w, b], [out], name=c.conv, kernel_shape=[c.kernel] * 2,
                                      strides=[c.stride] * 2, pads=[c.pad] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [f"{out}_relu"], name=f"{c.conv}_relu"))
            out = f"{out}_relu"
        return out

    nodes.append(helper.make_node("Sub", [INPUT_NAME, const("mean", mean, np.float32)], ["centred"], name="sub_mean"))
    x = "centred"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", [x], ["centred_fp16"], name="to_fp16", to=TensorProto.FLOAT16))
        x = "centred_fp16"
    x = conv(x, arch.STEM, relu=True)
    # Caffe's pool1 rounds up (112 -> 56): ceil_mode=1.
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                                  ceil_mode=1))
    x = "pool1"
    for b in arch.BLOCKS:
        short = x if b.branch1 is None else conv(x, b.branch1, relu=False)
        y = conv(x, b.branch2[0], relu=True)
        y = conv(y, b.branch2[1], relu=True)
        y = conv(y, b.branch2[2], relu=False)
        nodes.append(helper.make_node("Add", [short, y], [f"{b.name}_sum"], name=b.name))
        nodes.append(helper.make_node("Relu", [f"{b.name}_sum"], [b.name], name=f"{b.name}_relu"))
        x = b.name
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", [x], [f"{x}_fp32"], name="to_fp32", to=TensorProto.FLOAT))
        x = f"{x}_fp32"
    # pool5 is AVE 7x7 over the 7x7 res5c map (input fixed at 224): a global average.
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool5"], name="pool5"))
    nodes.append(helper.make_node("Flatten", ["pool5"], ["pool5_flat"], name="flatten", axis=1))
    fc_w = const(f"{arch.FC_NAME}.weight", fused[f"{arch.FC_NAME}.weight"], np.float32)
    fc_b = const(f"{arch.FC_NAME}.bias", fused[f"{arch.FC_NAME}.bias"], np.float32)
    nodes.append(helper.make_node("Gemm", ["pool5_flat", fc_w, fc_b], [OUTPUT_NAME], name=arch.FC_NAME, transB=1))

    size = arch.INPUT_SIZE
    graph = helper.make_graph(
        nodes, "cnn3dmm_resnet101",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", arch.NUM_COEFFS])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="engine3dmm", doc_string=(
                                  "3DMM-CNN ResNet-101. Input crops: float32 [batch,3,224,224], BGR, 0..255, "
                                  "not mean-subtracted (the mean image is inside). Output coeffs: float32 "
                                  "[batch,198] = 99 shape then 99 texture coefficients, in standard deviations."))
    model.ir_version = 8  # readable by ONNX Runtime >= 1.10 and TensorRT 8.6+
    meta = {"precision": precision, **(metadata or {})}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def read_metadata(path) -> dict[str, str]:
    """metadata_props of an ONNX file, without loading its weights."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}
