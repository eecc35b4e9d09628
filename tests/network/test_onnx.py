"""ONNX export: graph validity, the input/output contract, fp32 and fp16 accuracy, and
the resolver's reuse and rebuild of derived ONNX files."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# fp16 graph vs fp32 graph, both run by ONNX Runtime on this CPU: measured max error
# 0.023 coefficient standard deviations on the synthetic weights (ORT's CPU provider
# runs float16 convolutions by casting to float32, so this is the cost of float16
# weights and float16 activations between layers, not of float16 arithmetic).
FP16_TOL_SD = 0.05


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_passes_checker_and_shape_inference(onnx_paths, precision):
    model = onnx.load(str(onnx_paths[precision]))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    (inp,), (out,) = inferred.graph.input, inferred.graph.output
    assert inp.name == "crops" and out.name == "coeffs"
    f32 = onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.elem_type == f32 and out.type.tensor_type.elem_type == f32
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 3, 224, 224] and out_dims == ["batch", 198]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["synthetic"] == "true" and meta["precision"] == precision
    types = {i.name: i.data_type for i in model.graph.initializer}
    conv_type = onnx.TensorProto.FLOAT16 if precision == "fp16" else f32
    assert types["res4b22_branch2b.weight"] == conv_type and types["conv1.bias"] == conv_type
    # mean subtraction and the head stay float32 in both variants
    assert types["mean"] == f32 and types["fc_ftnew.weight"] == f32
    assert model.graph.node[0].op_type == "Sub"


def test_ort_fp32_equals_torch_fp32(onnx_paths, crops, torch_reference, coeff_sd):
    s = _session(onnx_paths["fp32"])
    got = s.run(None, {"crops": crops})[0]
    assert got.shape == (3, 198) and got.dtype == np.float32
    assert np.abs(got - torch_reference).max() < 1e-4 * coeff_sd
    one = s.run(None, {"crops": crops[1:2]})[0]  # dynamic batch: batch 1 gives the same row
    assert np.abs(one - got[1:2]).max() < 1e-5 * coeff_sd


def test_fp16_graph_is_within_stated_tolerance(onnx_paths, crops, torch_reference, coeff_sd):
    got = _session(onnx_paths["fp16"]).run(None, {"crops": crops})[0]
    err_sd = np.abs(got - torch_reference).max() / coeff_sd
    assert got.dtype == np.float32
    assert 0 < err_sd < FP16_TOL_SD


def test_onnx_is_reused_then_rebuilt_when_weights_change(synthetic_model, onnx_paths, tmp_path):
    from engine.network.onnx_export import read_metadata
    from engine.network.resolve import ResolvedModel

    first = onnx_paths["fp32"].stat().st_mtime_ns
    assert synthetic_model.onnx_path("fp32").stat().st_mtime_ns == first  # reused, not rewritten
    # a model folder whose ONNX file was built from other weights gets a fresh one
    stale = tmp_path / onnx_paths["fp16"].name
    stale.write_bytes(onnx_paths["fp16"].read_bytes())
    model = ResolvedModel(tmp_path, True, dict(synthetic_model.weights), synthetic_model.mean,
                          dict(synthetic_model.metadata), "0" * 64)
    assert read_metadata(stale)["weights_sha256"] != model.fingerprint
    path = model.onnx_path("fp16")
    assert path == stale and read_metadata(path)["weights_sha256"] == "0" * 64


def test_unknown_precision_is_an_input_error(synthetic_model):
    from engine.errors import InputError
    from engine.network.onnx_export import build_onnx

    with pytest.raises(InputError, match="precision: expected one of"):
        build_onnx({}, synthetic_model.mean, "int8")


def test_import_without_torch_and_onnx_is_lazy():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "import engine, engine.network, engine.runners\n"
            "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules\n"
            "from engine.network import resolve_model, caffe_io\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_graph_built_without_pytorch_equals_the_pytorch_export(synthetic_model, onnx_paths, crops, coeff_sd, tmp_path):
    """The graph is written with onnx.helper (no PyTorch). The PyTorch module exported by
    PyTorch's own exporter, run by the same ONNX Runtime, gives the same coefficients:
    measured 2e-6 sd on these crops; required within 1e-5 sd."""
    torch = pytest.importorskip("torch")
    import warnings

    from engine.network.torch_model import build

    net = build(synthetic_model.weights, synthetic_model.mean, fused=True, synthetic=True)
    path = tmp_path / "torch_export.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(net, (torch.from_numpy(crops[:1]),), str(path), input_names=["crops"],
                          output_names=["coeffs"], dynamic_axes={"crops": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    ours = _session(onnx_paths["fp32"]).run(None, {"crops": crops})[0]
    theirs = _session(path).run(None, {"crops": crops})[0]
    assert np.abs(ours - theirs).max() < 1e-5 * coeff_sd
