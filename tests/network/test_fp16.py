"""float16 that cannot overflow (issue 8, section 3), and the mean image of a conversion.

A caffemodel whose folded BatchNorm bias exceeds float16's largest value (65504) still
gives finite float16 outputs, within the float16 tolerance of float32: the layers that
would overflow stay float32, named in the log, the weights' metadata and the ONNX
metadata. Without that plan the same float16 graph gives inf/NaN.
"""
from __future__ import annotations

import numpy as np
import pytest

from caffe_reference import to_caffe_blobs
from engine.network import caffe_io, fp16
from engine.network import weights as W

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FP16_TOL_SD = 0.05  # the float16 budget of tests/network/test_onnx.py
BIG = 7.0e4  # > 65504
HOT, COOL = "res3b1_branch2b", "res3b1_branch2c"


def _session(path_or_model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    data = path_or_model.SerializeToString() if hasattr(path_or_model, "SerializeToString") else str(path_or_model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def test_plan_of_the_synthetic_weights_keeps_everything_in_float16(synthetic_model, onnx_paths):
    plan = synthetic_model.fp16_plan()
    assert plan.fp32 == frozenset() and 0 < plan.peak < fp16.LIMIT
    assert "real faces" in plan.calibration  # scikit-image is installed here
    from engine.network.onnx_export import read_metadata

    meta = read_metadata(onnx_paths["fp16"])
    assert meta["fp16_fp32_ops"] == "" and "every layer fits float16" in meta["fp16_check"]
    assert "fp16_fp32_ops" not in read_metadata(onnx_paths["fp32"])


def test_plan_json_round_trips_and_refuses_other_versions():
    plan = fp16.Fp16Plan(frozenset({"res2a", "conv1"}), {"conv1": "bias reaches 7e+04"}, "faces", 123.0)
    back = fp16.Fp16Plan.from_json(plan.to_json())
    assert back == plan and fp16.ordered(back.fp32) == ["conv1", "res2a"]
    assert fp16.Fp16Plan.from_json(plan.to_json().replace('"version": 1', '"version": 0')) is None
    assert fp16.Fp16Plan.from_json("not json") is None and fp16.Fp16Plan.from_json("") is None


@pytest.fixture(scope="module")
def hot_weights(synthetic_model):
    """The synthetic weights with a folded bias of 7e4 on channel 0 of res3b1_branch2b; the
    next BatchNorm's running mean absorbs the shift, so the network stays well-behaved in
    float32 (the ReLU now passes channel 0 whole, which changes the function slightly)."""
    w = {k: np.array(v) for k, v in synthetic_model.weights.items()}
    w[f"{HOT}.bn.bias"][0] += BIG
    w[f"{COOL}.bn.running_mean"] += (BIG * w[f"{COOL}.weight"][:, 0, 0, 0]).astype(np.float32)
    return w


@pytest.fixture(scope="module")
def hot_card(hot_weights, shared_dir, tmp_path_factory):
    """hot_weights written as a caffemodel and converted with the release's prototxt and mean."""
    from engine.network import convert_caffe

    folder = tmp_path_factory.mktemp("hot")
    caffe_io.write_caffemodel(folder / "hot.caffemodel", to_caffe_blobs(hot_weights, factor=2.0))
    card = folder / "card"
    card.mkdir()
    paths = convert_caffe(shared_dir / "deploy_network.prototxt", folder / "hot.caffemodel",
                          shared_dir / "mean.binaryproto", card)
    return card, paths, hot_weights


@pytest.mark.slow
def test_bias_beyond_float16_stays_float32_and_outputs_stay_finite(hot_card, crops, caplog):
    from engine.network.onnx_export import build_onnx, read_metadata
    from engine.network.resolve import resolve_model

    card, paths, w = hot_card
    fused = W.fuse(w)
    assert np.abs(fused[f"{HOT}.bias"]).max() > 65504  # a folded BatchNorm bias float16 cannot hold
    model = resolve_model(card, allow_synthetic=False)
    plan = model.fp16_plan()
    assert plan.fp32 == {HOT, COOL}, plan.summary()
    assert "bias reaches 7e+04" in plan.reasons[HOT] and "input reaches" in plan.reasons[COOL]
    meta = read_metadata(paths["onnx_fp16"])
    assert meta["fp16_fp32_ops"] == f"{HOT},{COOL}" and HOT in meta["fp16_check"]
    assert "fp16_plan" in model.metadata  # stored with the weights: `info` and the runners read it
    faces, _ = fp16.calibration_faces()
    x = np.concatenate([faces, crops])
    ref = _session(paths["onnx_fp32"]).run(None, {"crops": x})[0]
    got = _session(paths["onnx_fp16"]).run(None, {"crops": x})[0]
    sd = float(np.std(ref))
    assert np.isfinite(ref).all() and 0.1 < sd < 100
    assert np.isfinite(got).all() and np.abs(got - ref).max() < FP16_TOL_SD * sd
    # the same graph with every layer in float16 (no plan) overflows: the test can fail
    with np.errstate(over="ignore"):  # the cast of 7e4 to float16 is the point here
        naive = build_onnx(fused, model.mean, "fp16", fp16_plan=fp16.Fp16Plan())
    assert not np.isfinite(_session(naive).run(None, {"crops": x[:2]})[0]).all()
    # the export names the float32 layers in the log, as a warning
    from engine.network.resolve import export_onnx

    with caplog.at_level("INFO", logger="engine.network"):
        export_onnx(model, "fp16", card / "again.onnx")
    assert any(r.levelname == "WARNING" and f"{HOT} (" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_torch_float16_trunk_follows_the_plan(hot_card, crops):
    torch = pytest.importorskip("torch")
    from engine.network import torch_model
    from engine.network.resolve import resolve_model

    card, _, _ = hot_card
    model = resolve_model(card, allow_synthetic=False)
    net = torch_model.build(model.weights, model.mean, fused=True, synthetic=False)
    with torch.inference_mode():
        ref = net(torch.from_numpy(crops[:1])).numpy()
        torch_model.set_trunk_dtype(net, torch.float16, model.fp16_plan())
        got = net(torch.from_numpy(crops[:1])).numpy()
    assert net.blocks["res3b1"].branch2b.conv.weight.dtype == torch.float32
    assert net.blocks["res3b1"].branch2a.conv.weight.dtype == torch.float16
    sd = float(np.std(ref))
    assert np.isfinite(got).all() and np.abs(got - ref).max() < FP16_TOL_SD * sd
    with pytest.raises(ValueError, match="float16 needs fp16_plan"):
        torch_model.set_trunk_dtype(net, torch.float16)


@pytest.mark.slow
def test_channel_mean_conversion_says_so_everywhere(hot_card, shared_dir, synthetic_model, tmp_path, caplog):
    """Asked for explicitly, the per-channel mean is used, and the weights' metadata,
    describe(), the runners and every result's provenance say so."""
    from engine.network import convert_caffe
    from engine.network.resolve import resolve_model
    from engine.pipeline.reconstructor import Reconstructor
    from engine.runners import create_runner

    caffemodel = hot_card[0].parent / "hot.caffemodel"
    with caplog.at_level("WARNING", logger="engine.network"):
        convert_caffe(shared_dir / "deploy_network.prototxt", caffemodel, None, tmp_path, onnx=False,
                      channel_mean=True)
    assert any("per-channel mean" in r.getMessage() for r in caplog.records)
    model = resolve_model(tmp_path, allow_synthetic=False)
    assert model.mean_kind == "per-channel" and "PER-CHANNEL MEAN" in model.describe()
    assert np.array_equal(model.mean, W.channel_mean_image())
    assert model.metadata["source"]["mean"]["file"] is None
    from engine.runners import available_runners

    name = "torch-cpu" if "torch-cpu" in available_runners() else "onnxruntime"
    with create_runner(name, tmp_path) as runner, Reconstructor(runner=runner, detector=None) as rec:
        assert runner.mean_kind == "per-channel"
        assert rec.provenance["network_mean"] == "per-channel" and "PER-CHANNEL MEAN" in rec.provenance["network"]
    # ... and what the command line writes: summary.json of reconstruct, provenance.json of embed.
    import json

    from PIL import Image
    from skimage import data

    from engine.cli import main

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[:224, 140:364]).save(photo)
    assert main(["reconstruct", str(photo), "--cropped", "--no-mesh", "--network-dir", str(tmp_path),
                 "--runner", name, "-o", str(tmp_path / "rec"), "-q"]) == 0
    summary = json.loads((tmp_path / "rec" / "summary.json").read_text())
    assert summary["provenance"]["network_mean"] == "per-channel"
    assert main(["embed", str(photo), "--cropped", "--network-dir", str(tmp_path), "--runner", name,
                 "-o", str(tmp_path / "emb"), "-q"]) == 0
    assert json.loads((tmp_path / "emb" / "provenance.json").read_text())["network_mean"] == "per-channel"


@pytest.mark.cuda
def test_torch_cuda_float16_runner_stays_finite(hot_weights, crops, tmp_path):
    """The GPU path (float16 trunk, channels-last, CUDA graphs) on the same weights."""
    from engine.runners import create_runner

    W.save_weights(tmp_path / "cnn3dmm.safetensors", hot_weights, W.channel_mean_image(),
                   {"synthetic": False, "source": "test", "mean_kind": "per-channel"})
    faces, _ = fp16.calibration_faces()
    x = np.concatenate([faces, crops])
    with create_runner("torch-cuda", tmp_path, precision="fp32") as r32:
        ref = r32.run(x)
    for graphs in (False, True):
        with create_runner("torch-cuda", tmp_path, precision="fp16", cuda_graphs=graphs) as r16:
            got = r16.run(x)
            assert r16.fp32_ops == (HOT, COOL)
        sd = float(np.std(ref))
        assert np.isfinite(got).all() and np.abs(got - ref).max() < FP16_TOL_SD * sd, graphs


@pytest.mark.tensorrt
def test_tensorrt_float16_engine_stays_finite(hot_weights, crops, tmp_path):
    """TensorRT builds its strongly typed engine from the fp16 ONNX graph, float32 layers included."""
    from engine.runners import create_runner

    W.save_weights(tmp_path / "cnn3dmm.safetensors", hot_weights, W.channel_mean_image(),
                   {"synthetic": False, "source": "test", "mean_kind": "per-channel"})
    x = np.concatenate([fp16.calibration_faces()[0], crops])
    with create_runner("torch-cuda", tmp_path, precision="fp32") as r32:
        ref = r32.run(x)
    with create_runner("tensorrt", tmp_path, precision="fp16", max_batch=16) as trt:
        got = trt.run(x)
        assert trt.fp32_ops == (HOT, COOL)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < FP16_TOL_SD * float(np.std(ref))
