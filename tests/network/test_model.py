"""The converted network equals a plain numpy interpretation of the Caffe layer
definitions; synthetic weights; our own weight file; convert_caffe end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from caffe_reference import caffe_forward, to_caffe_blobs
from engine.errors import ModelFileError
from engine.network import architecture as arch
from engine.network import caffe_io, numpy_forward
from engine.network import weights as W
from engine.network.synthetic import make_synthetic

torch = pytest.importorskip("torch")
from engine.network import torch_model  # noqa: E402  (needs torch)


@pytest.fixture(scope="module")
def caffe_case(shared_dir, synthetic_model):
    """Synthetic weights as Caffe blobs (BN statistics times a factor of 4, as Caffe stores
    them), the real prototxt and the real mean. File round trips are tested elsewhere."""
    net = caffe_io.read_prototxt(shared_dir / "deploy_network.prototxt")
    mean = caffe_io.read_mean(shared_dir / "mean.binaryproto")
    return net, to_caffe_blobs(synthetic_model.weights, factor=4.0), mean


@pytest.fixture(scope="module")
def caffe_tops(caffe_case, crops):
    net, blobs, mean = caffe_case
    # Caffe's data transformer subtracts the mean outside the network
    return caffe_forward(net, blobs, crops[:2].astype(np.float64) - mean)


def test_converted_torch_model_equals_numpy_caffe_interpretation(caffe_case, caffe_tops, crops):
    net, blobs, mean = caffe_case
    x = crops[:2]
    ref = caffe_tops["fc_ftnew"]
    model = torch_model.build(W.from_caffe_blobs(blobs), mean, fused=False, synthetic=False)
    with torch.inference_mode():
        got = model(torch.from_numpy(x)).numpy()
    scale = ref.std()
    assert scale > 0.1
    assert np.abs(got - ref).max() < 1e-4 * scale


def test_intermediate_shapes_follow_caffe_rounding(caffe_tops):
    assert caffe_tops["conv1"].shape == (2, 64, 112, 112)
    assert caffe_tops["pool1"].shape == (2, 64, 56, 56)  # ceil: 112 -> 56 (floor would give 55)
    assert caffe_tops["res3a"].shape == (2, 512, 28, 28) and caffe_tops["res5c"].shape == (2, 2048, 7, 7)
    assert caffe_tops["pool5"].shape == (2, 2048, 1, 1)


def test_fused_module_and_numpy_forward_equal_the_exact_module(synthetic_model, crops, torch_reference, coeff_sd):
    fused = torch_model.build(synthetic_model.weights, synthetic_model.mean, fused=True, synthetic=True)
    with torch.inference_mode():
        got = fused(torch.from_numpy(crops)).numpy()
    assert np.abs(got - torch_reference).max() < 1e-4 * coeff_sd
    ref = numpy_forward.forward(synthetic_model.weights, synthetic_model.mean, crops[:1])
    assert np.abs(ref - torch_reference[:1]).max() < 1e-4 * coeff_sd


def test_module_parameter_names_are_the_canonical_ones():
    net = torch_model.Cnn3dmmNet()
    names = {net._canonical(k): tuple(v.shape) for k, v in net.state_dict().items() if k != "mean"}
    assert names == arch.state_dict_shapes()


def test_loading_wrong_weights_lists_every_problem(synthetic_model):
    w = dict(synthetic_model.weights)
    del w["res5c_branch2c.bn.bias"]
    w["extra.weight"] = np.zeros(3, np.float32)
    w["fc_ftnew.bias"] = np.zeros(99, np.float32)
    with pytest.raises(ModelFileError) as err:
        torch_model.Cnn3dmmNet().load_numpy(w, "x.safetensors")
    msg = str(err.value)
    assert "missing (1): res5c_branch2c.bn.bias" in msg and "unexpected (1): extra.weight" in msg
    assert "fc_ftnew.bias (expected [198], found [99])" in msg


def test_synthetic_weights_are_deterministic_and_in_range(synthetic_model, torch_reference):
    w1, _, meta = make_synthetic(seed=0)
    assert meta["synthetic"] is True and "synthetic" in meta["source"]
    assert all(np.array_equal(w1[k], synthetic_model.weights[k]) for k in w1)
    # pseudo-face crops other than the calibration ones land roughly in [-3, 3]
    assert np.abs(torch_reference).max() < 5 and 0.3 < torch_reference.std() < 3
    assert np.abs(torch_reference.mean()) < 0.5


def test_own_weight_file_round_trips_with_metadata(synthetic_model, tmp_path):
    path = tmp_path / "w.safetensors"
    W.save_weights(path, synthetic_model.weights, synthetic_model.mean, {"synthetic": True, "source": "test", "seed": 0})
    w, mean, meta = W.load_weights(path)
    assert meta["synthetic"] is True and meta["source"] == "test" and meta["seed"] == "0"
    assert np.array_equal(mean, synthetic_model.mean)
    assert all(np.array_equal(w[k], synthetic_model.weights[k]) for k in w)


def test_torch_model_loads_from_our_weight_file(synthetic_model, crops, torch_reference, coeff_sd, tmp_path):
    W.save_weights(tmp_path / "cnn3dmm.safetensors", synthetic_model.weights, synthetic_model.mean,
                   {"synthetic": False, "source": "test"})
    net = torch_model.load_torch_model(tmp_path, fused=False)
    assert net.synthetic is False and isinstance(net, torch_model.Cnn3dmmNet)
    with torch.inference_mode():
        assert np.abs(net(torch.from_numpy(crops[:1])).numpy() - torch_reference[:1]).max() < 1e-5 * coeff_sd


def test_broken_own_weight_file_is_a_model_file_error(synthetic_model, tmp_path):
    path = tmp_path / "w.safetensors"
    W.save_weights(path, synthetic_model.weights, synthetic_model.mean, {"synthetic": True, "source": "t"})
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="cut.safetensors"):
        W.load_weights(tmp_path / "cut.safetensors")
    from safetensors.numpy import save_file

    save_file({"conv1.weight": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="metadata 'format'"):
        W.load_weights(tmp_path / "other.safetensors")


@pytest.mark.slow
def test_convert_caffe_writes_the_card_artifacts(shared_dir, synthetic_model, tmp_path):
    from engine.network import convert_caffe, resolve_model
    from engine.network.onnx_export import read_metadata
    from engine.validate import validate_variants

    cm = tmp_path / "3dmm_cnn_resnet_101.caffemodel"
    caffe_io.write_caffemodel(cm, to_caffe_blobs(synthetic_model.weights, factor=2.0))
    out = tmp_path / "card"
    out.mkdir()
    paths = convert_caffe(shared_dir / "deploy_network.prototxt", cm, shared_dir / "mean.binaryproto", out)
    assert set(paths) == {"weights", "onnx_fp32", "onnx_fp16"}
    assert {p.name for p in out.iterdir()} == {"cnn3dmm.safetensors", "cnn3dmm.fp32.onnx", "cnn3dmm.fp16.onnx"}
    # then the CPU variants are built and validated on the new weights, as `convert` does next (issue 12)
    variants = validate_variants(resolve_model(out, allow_synthetic=False)).path
    assert {p.name for p in out.iterdir()} == {"cnn3dmm.safetensors", "cnn3dmm.fp32.onnx", "cnn3dmm.fp16.onnx",
                                               "cnn3dmm.int8.onnx", "cnn3dmm.variants.json"}
    model = resolve_model(out)
    card = json.loads(variants.read_text())
    assert card["weights_sha256"] == model.fingerprint and card["synthetic"] is False
    assert {(e["runner"], e["precision"]) for e in card["variants"] if e["status"] == "ok"} >= {
        ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    assert not model.synthetic and model.weights_path == paths["weights"]
    assert "converted" in model.describe()
    # factor 2 is exact in binary: the weights come back bit for bit
    assert all(np.array_equal(model.weights[k], synthetic_model.weights[k]) for k in model.weights)
    assert np.array_equal(model.mean, caffe_io.read_mean(shared_dir / "mean.binaryproto"))
    src = model.metadata["source"]
    assert src["prototxt"]["sha256"] == "c8ed5e80b212399494d8a0e81b0e694bb729cebce0e87ba873163cd5839c8545"
    assert src["mean"]["sha256"] == "bbada1be647a623972f25077e9083738418152efc8284ccf8bba872e095dba22"
    meta = read_metadata(paths["onnx_fp16"])
    assert meta["synthetic"] == "false" and meta["weights_sha256"] == model.fingerprint


def test_manifest_agrees_with_the_code():
    from pathlib import Path

    from engine.network.convert import OFFICIAL_SHA256

    card = Path(__file__).resolve().parents[2] / "models" / "cnn3dmm"
    manifest = json.loads((card / "manifest.json").read_text())
    assert manifest["input"]["name"] == "crops" and manifest["input"]["shape"] == ["B", 3, 224, 224]
    assert manifest["output"]["name"] == "coeffs" and manifest["output"]["shape"] == ["B", 198]
    files = {f["name"]: f for f in manifest["source_files"]}
    for name, sha in OFFICIAL_SHA256.items():
        assert files[name]["sha256"] == sha
    assert files["3dmm_cnn_resnet_101.caffemodel"]["sha256"] is None
    assert (card / "README.md").is_file()


def test_synthetic_weights_stay_in_range_on_real_photos(synthetic_model, torch_reference):
    # The synthetic set stands in for the trained network in demos: real photos (a face,
    # and non-faces) must give coefficients of order one, not the tens that an
    # uncalibrated random network gives.
    skimage_data = pytest.importorskip("skimage.data")
    from engine.crop import crop_face
    from engine.images import as_rgb

    crops = []
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        img = as_rgb(getattr(skimage_data, name)())
        h, w = img.shape[:2]
        box = (179, 87, 272, 178) if name == "astronaut" else (w / 3, h / 3, 2 * w / 3, 2 * h / 3)
        crops.append(crop_face(img, box))
    net = torch_model.build(synthetic_model.weights, synthetic_model.mean, fused=True, synthetic=True)
    with torch.inference_mode():
        out = net(torch.from_numpy(np.stack(crops))).numpy()
    assert np.abs(out).max() < 10
    assert (out.std(axis=1) < 3).all()
