"""Build the ONNX graph of the network directly from fused numpy weights.

Written with onnx.helper rather than traced from PyTorch: it needs no PyTorch, takes
about a second instead of a minute of tracing, and gives a graph with exactly the
nodes we choose (Sub, Conv, Relu, Add, MaxPool, GlobalAveragePool, Flatten, Gemm), so
the ONNX Runtime vs PyTorch comparison checks two independent implementations.

Contract: input `crops` float32 [batch, 3, 224, 224], BGR, 0..255, NOT mean-subtracted
(the mean image is a constant in the graph); output `coeffs` float32 [batch, 198].
"fp16": weights and convolution/ReLU/Add/MaxPool compute in float16 (what TensorRT
builds a strongly typed engine from), except the operations an fp16.Fp16Plan keeps in
float32 because their values would not fit float16's range (Cast nodes at the
boundaries); input, mean subtraction, pool5 and fc_ftnew stay float32 (the 2048-term fc
dot products and the pool5 mean are where float16 loses most).
"""
from __future__ import annotations

import numpy as np

from engine.errors import InputError
from engine.network import architecture as arch

INPUT_NAME = "crops"
OUTPUT_NAME = "coeffs"
OPSET = 17
PRECISIONS = ("fp32", "fp16")
# Bumped when the graphs change (2: float16 layers that would overflow stay float32), so
# files exported by an older version are rebuilt, not reused.
EXPORT_VERSION = "2"


def build_onnx(fused: dict[str, np.ndarray], mean: np.ndarray, precision: str = "fp32",
               metadata: dict[str, str] | None = None, fp16_plan=None):
    """An onnx.ModelProto, checked with onnx.checker and full shape inference.

    `fp16_plan` (precision "fp16" only): the engine.network.fp16.Fp16Plan of these weights;
    None computes it (a numpy forward pass over the calibration faces, seconds). Its
    float32 operations and its summary go into the metadata (`fp16_fp32_ops`, `fp16_check`)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if precision not in PRECISIONS:
        raise InputError(f"precision: expected one of {PRECISIONS}, found {precision!r}")
    meta = {"precision": precision, "export_version": EXPORT_VERSION, **(metadata or {})}
    if precision == "fp16":
        from engine.network import fp16

        plan = fp16_plan if fp16_plan is not None else fp16.make_plan(fused, mean)
        meta["fp16_fp32_ops"] = ",".join(fp16.ordered(plan.fp32))
        meta["fp16_check"] = plan.summary()
    else:
        plan = None
    inits: list = []
    nodes: list = []
    onnx_type = {np.float16: TensorProto.FLOAT16, np.float32: TensorProto.FLOAT}
    # Every tensor of the trunk exists in the precision its producer ran in; a consumer in
    # the other precision reads it through one Cast, made once.
    versions: dict[str, dict] = {}

    def const(name: str, arr: np.ndarray, dtype) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), name))
        return name

    def made(name: str, dtype) -> str:
        versions[name] = {dtype: name}
        return name

    def read(name: str, dtype) -> str:
        have = versions[name]
        if dtype not in have:
            (src_dtype, src), = list(have.items())[:1]
            cast = f"{name}_as_{'fp16' if dtype is np.float16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [src], [cast], name=cast, to=onnx_type[dtype]))
            have[dtype] = cast
        return have[dtype]

    def dtype_of(op: str):
        return np.float16 if plan is not None and not plan.runs_fp32(op) else np.float32

    def conv(x: str, c: arch.ConvSpec, relu: bool) -> str:
        dt = dtype_of(c.conv)
        w = const(f"{c.conv}.weight", fused[f"{c.conv}.weight"], dt)
        b = const(f"{c.conv}.bias", fused[f"{c.conv}.bias"], dt)
        out = c.conv
        nodes.append(helper.make_node("Conv", [read(x, dt), w, b], [out], name=c.conv, kernel_shape=[c.kernel] * 2,
                                      strides=[c.stride] * 2, pads=[c.pad] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [f"{out}_relu"], name=f"{c.conv}_relu"))
            out = f"{out}_relu"
        return made(out, dt)

    nodes.append(helper.make_node("Sub", [INPUT_NAME, const("mean", mean, np.float32)], ["centred"], name="sub_mean"))
    x = made("centred", np.float32)
    x = conv(x, arch.STEM, relu=True)
    # Caffe's pool1 rounds up (112 -> 56): ceil_mode=1. It runs in conv1's precision.
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                                  ceil_mode=1))
    x = made("pool1", dtype_of(arch.STEM.conv))
    for b in arch.BLOCKS:
        short = x if b.branch1 is None else conv(x, b.branch1, relu=False)
        y = conv(x, b.branch2[0], relu=True)
        y = conv(y, b.branch2[1], relu=True)
        y = conv(y, b.branch2[2], relu=False)
        dt = dtype_of(b.name)
        nodes.append(helper.make_node("Add", [read(short, dt), read(y, dt)], [f"{b.name}_sum"], name=b.name))
        nodes.append(helper.make_node("Relu", [f"{b.name}_sum"], [b.name], name=f"{b.name}_relu"))
        x = made(b.name, dt)
    # pool5 is AVE 7x7 over the 7x7 res5c map (input fixed at 224): a global average.
    nodes.append(helper.make_node("GlobalAveragePool", [read(x, np.float32)], ["pool5"], name="pool5"))
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
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def read_metadata(path) -> dict[str, str]:
    """metadata_props of an ONNX file, without loading its weights."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}
