"""Reading Caffe files with the engine's own schema: the real prototxt and mean, written
caffemodels (V1 and V2, shape and legacy dims), and every way a file can be wrong."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.errors import ModelFileError
from engine.network import architecture as arch
from engine.network import caffe_io
from engine.network import weights as W

STRIDE2 = {"conv1", "res3a_branch1", "res3a_branch2a", "res4a_branch1", "res4a_branch2a",
           "res5a_branch1", "res5a_branch2a"}


def test_real_prototxt_parses_to_exactly_the_network(shared_dir):
    net = caffe_io.read_prototxt(shared_dir / "deploy_network.prototxt")
    assert list(net.input) == ["data"] and list(net.input_dim) == [1, 3, 224, 224]
    counts = Counter(l.type for l in net.layer)
    assert counts == {"Convolution": 104, "BatchNorm": 104, "Scale": 104, "ReLU": 100, "Eltwise": 33,
                      "Pooling": 2, "InnerProduct": 1}
    assert [(l.name, l.type) for l in net.layer] == arch.expected_caffe_layers()
    blocks = [l.name for l in net.layer if l.type == "Eltwise"]
    assert blocks[:4] == ["res2a", "res2b", "res2c", "res3a"] and blocks[-1] == "res5c" and "res4b22" in blocks
    convs = {l.name: l.convolution_param for l in net.layer if l.type == "Convolution"}
    assert {n for n, p in convs.items() if p.stride and p.stride[0] == 2} == STRIDE2
    assert not any(p.bias_term for p in convs.values())
    bns = [l.batch_norm_param for l in net.layer if l.type == "BatchNorm"]
    assert all(b.use_global_stats and b.eps == pytest.approx(1e-5) for b in bns)
    assert all(l.scale_param.bias_term for l in net.layer if l.type == "Scale")
    pools = {l.name: l.pooling_param for l in net.layer if l.type == "Pooling"}
    assert (pools["pool1"].pool, pools["pool1"].kernel_size, pools["pool1"].stride) == (0, 3, 2)
    assert (pools["pool5"].pool, pools["pool5"].kernel_size, pools["pool5"].stride) == (1, 7, 1)
    assert net.layer[-1].inner_product_param.num_output == 198
    caffe_io.validate_prototxt(net)


def test_prototxt_that_is_another_network_is_rejected(shared_dir, tmp_path):
    text = (shared_dir / "deploy_network.prototxt").read_text().replace("num_output: 198", "num_output: 10")
    (tmp_path / "other.prototxt").write_text(text)
    net = caffe_io.read_prototxt(tmp_path / "other.prototxt")
    with pytest.raises(ModelFileError, match="fc_ftnew: num_output expected 198, found 10"):
        caffe_io.validate_prototxt(net, tmp_path / "other.prototxt")


def test_garbage_prototxt_is_a_model_file_error(tmp_path):
    (tmp_path / "bad.prototxt").write_text("layer { name: 'x' dilation_typo: 3 }")
    with pytest.raises(ModelFileError, match="bad.prototxt"):
        caffe_io.read_prototxt(tmp_path / "bad.prototxt")


def test_real_mean_has_the_documented_shape_and_channel_means(shared_dir):
    mean = caffe_io.read_mean(shared_dir / "mean.binaryproto")
    assert mean.shape == (1, 3, 224, 224) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.mean(axis=(0, 2, 3)), [85.245, 96.971, 119.065], atol=2e-3)
    assert mean.min() == pytest.approx(54.79, abs=0.01) and mean.max() == pytest.approx(196.08, abs=0.01)


def test_mean_of_wrong_shape_is_rejected(tmp_path):
    caffe_io.write_mean(tmp_path / "m.binaryproto", np.zeros((1, 3, 100, 100), np.float32))
    with pytest.raises(ModelFileError, match=r"expected shape \[1, 3, 224, 224\], found \[1, 3, 100, 100\]"):
        caffe_io.read_mean(tmp_path / "m.binaryproto")


@pytest.fixture(scope="module")
def random_blobs():
    """Known random Caffe blobs for the whole network (BN factor 999.98 as after training)."""
    rng = np.random.default_rng(7)
    blobs = {n: [rng.standard_normal(s).astype(np.float32) for s in shapes]
             for n, shapes in arch.expected_caffe_blobs().items()}
    for c in arch.all_convs():
        blobs[c.bn][1] = np.abs(blobs[c.bn][1])
        blobs[c.bn][2] = np.array([999.98], np.float32)
    return blobs


@pytest.fixture(scope="module")
def v2_caffemodel(random_blobs, tmp_path_factory):
    path = tmp_path_factory.mktemp("caffe") / "v2.caffemodel"
    caffe_io.write_caffemodel(path, random_blobs, layout="v2", types=dict(arch.expected_caffe_layers()))
    return path


def _assert_identical(got, want):
    assert got.keys() == want.keys()
    for name in want:
        assert len(got[name]) == len(want[name])
        for g, w in zip(got[name], want[name]):
            assert g.dtype == np.float32 and g.shape == w.shape and np.array_equal(g, w), name


def test_v2_caffemodel_round_trips(v2_caffemodel, random_blobs):
    _assert_identical(caffe_io.read_caffemodel(v2_caffemodel), random_blobs)


def test_v1_caffemodel_with_legacy_dims_round_trips(random_blobs, tmp_path):
    path = tmp_path / "v1.caffemodel"
    caffe_io.write_caffemodel(path, random_blobs, layout="v1", types=dict(arch.expected_caffe_layers()),
                              legacy_shapes=True)
    got = caffe_io.read_caffemodel(path)
    # legacy blobs are 4-D (a 198x2048 matrix is 1x1x198x2048) ...
    assert got["fc_ftnew"][0].shape == (1, 1, 198, 2048) and got["bn_conv1"][0].shape == (1, 1, 1, 64)
    for name, arrays in random_blobs.items():
        for g, w in zip(got[name], arrays):
            assert np.array_equal(g.reshape(w.shape), w)
    # ... and the weight mapping accepts them as the same tensors as the V2 file
    a, b = W.from_caffe_blobs(got), W.from_caffe_blobs(random_blobs)
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_double_data_blobs_are_read(tmp_path):
    from engine.network.caffe_schema import messages

    net = messages()["NetParameter"]()
    layer = net.layer.add(name="fc_ftnew", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.double_data.extend([0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    (tmp_path / "d.caffemodel").write_bytes(net.SerializeToString())
    got = caffe_io.read_caffemodel(tmp_path / "d.caffemodel")
    np.testing.assert_array_equal(got["fc_ftnew"][0], np.arange(6).reshape(2, 3) + 0.5)


def test_batchnorm_statistics_are_divided_by_the_scale_factor(random_blobs):
    w = W.from_caffe_blobs(random_blobs)
    mean, var, factor = random_blobs["bn4b7_branch2b"]
    np.testing.assert_allclose(w["res4b7_branch2b.bn.running_mean"], mean / factor[0], rtol=1e-6)
    np.testing.assert_allclose(w["res4b7_branch2b.bn.running_var"], var / factor[0], rtol=1e-6)
    assert np.array_equal(w["res4b7_branch2b.bn.weight"], random_blobs["scale4b7_branch2b"][0])
    zero = dict(random_blobs)
    zero["bn_conv1"] = [mean[:64], var[:64], np.zeros(1, np.float32)]  # Caffe: factor 0 -> statistics 0
    w0 = W.from_caffe_blobs(zero)
    assert not w0["conv1.bn.running_mean"].any() and not w0["conv1.bn.running_var"].any()


def test_missing_unexpected_and_misshaped_layers_in_one_error(random_blobs):
    blobs = dict(random_blobs)
    del blobs["res4b3_branch2b"], blobs["scale5c_branch2c"]
    blobs["fc_extra"] = [np.zeros((3, 3), np.float32)]
    blobs["res2a_branch1"] = [np.zeros((256, 64, 3, 3), np.float32)]
    with pytest.raises(ModelFileError) as err:
        W.from_caffe_blobs(blobs, "my.caffemodel")
    msg = str(err.value)
    for part in ("my.caffemodel", "missing (2): res4b3_branch2b, scale5c_branch2c", "unexpected (1): fc_extra",
                 "wrong shape (1): res2a_branch1 (expected blobs [[256, 64, 1, 1]], found [[256, 64, 3, 3]])"):
        assert part in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing", "prototxt"])
def test_broken_caffemodel_is_a_model_file_error(damage, v2_caffemodel, tmp_path, shared_dir):
    path = tmp_path / "broken.caffemodel"
    data = v2_caffemodel.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2 + 3])
    elif damage == "garbage":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "prototxt":  # the text file passed where the binary one belongs
        path.write_bytes((shared_dir / "deploy_network.prototxt").read_bytes())
    with pytest.raises(ModelFileError, match="broken.caffemodel"):
        W.from_caffe_blobs(caffe_io.read_caffemodel(path), str(path))
