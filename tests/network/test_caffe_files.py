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
from engine.network.caffe_schema import messages

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
    with pytest.raises(ModelFileError, match=r"expected shape \[1, 3, 224, 224\] or \[3, 224, 224\] .*"
                                             r"found \[1, 3, 100, 100\]"):
        caffe_io.read_mean(tmp_path / "m.binaryproto")


def _blob_bytes(values: np.ndarray, dims=None, legacy=None) -> bytes:
    """A serialized BlobProto with `values` and the given `shape` dims or legacy (n, c, h, w)."""
    blob = messages()["BlobProto"]()
    if dims is not None:
        blob.shape.SetInParent()
        blob.shape.dim.extend(dims)
    if legacy is not None:
        blob.num, blob.channels, blob.height, blob.width = legacy
    blob.data.extend(np.asarray(values, np.float32).ravel().tolist())
    return blob.SerializeToString()


@pytest.mark.parametrize("dims, legacy", [((3, 224, 224), None), ((1, 3, 224, 224), None), (None, (1, 3, 224, 224))])
def test_mean_in_caffe_layout_is_read_with_or_without_a_leading_1(shared_dir, tmp_path, dims, legacy):
    real = caffe_io.read_mean(shared_dir / "mean.binaryproto")
    (tmp_path / "m.binaryproto").write_bytes(_blob_bytes(real, dims, legacy))
    assert np.array_equal(caffe_io.read_mean(tmp_path / "m.binaryproto"), real)


@pytest.mark.parametrize("dims, legacy, found", [
    ((1, 224, 224, 3), None, "[1, 224, 224, 3]"),  # an HWC image of the same size: never reshaped
    ((224, 224, 3), None, "[224, 224, 3]"),
    ((3, 224, 224, 1), None, "[3, 224, 224, 1]"),
    ((1, 1, 3, 224, 224), None, "[1, 1, 3, 224, 224]"),
    ((150528,), None, "[150528]"),
    (None, (1, 224, 224, 3), "[1, 224, 224, 3]"),
    (None, (3, 224, 224, 1), "[3, 224, 224, 1]"),
])
def test_mean_of_the_right_size_in_another_layout_is_refused(shared_dir, tmp_path, dims, legacy, found):
    real = caffe_io.read_mean(shared_dir / "mean.binaryproto")
    # the real mean laid out as HWC: read as CHW it would be off by up to 127 grey levels
    (tmp_path / "m.binaryproto").write_bytes(_blob_bytes(real[0].transpose(1, 2, 0), dims, legacy))
    with pytest.raises(ModelFileError) as err:
        caffe_io.read_mean(tmp_path / "m.binaryproto")
    assert f"found {found}" in str(err.value) and "m.binaryproto" in str(err.value)


# Sizes that pass a size check and then fail a reshape (issue 13, finding 3): every case is
# a ModelFileError naming what is wrong, in the mean reader and in the caffemodel reader.
BAD_BLOBS = {
    "empty shape": (b"\x3a\x00", "empty shape"),
    "no shape at all": (b"\x2d\x00\x00\x80\x3f", "declares no shape"),
    "product overflows int64 to 0": (_blob_bytes([], dims=(2**32, 2**32)), "out of range"),
    "product wraps to the data length": (_blob_bytes(np.arange(6), dims=(2**61 + 1, 2**62 + 6)), "out of range"),
    "product above INT_MAX": (_blob_bytes(np.arange(6), dims=(65536, 65536)), "more than Caffe's limit"),
    "negative dimensions": (_blob_bytes(np.arange(6), dims=(-2, -3)), "dimension -2 out of range"),
    "negative legacy dimensions": (_blob_bytes(np.arange(6), legacy=(-1, -6, 1, 1)), "dimension -1 out of range"),
    "too many axes": (_blob_bytes([1.0], dims=(1,) * 33), "at most 32"),
    "count differs from data": (_blob_bytes(np.arange(5), dims=(2, 3)), "holds 5 values"),
}


@pytest.mark.parametrize("case", sorted(BAD_BLOBS))
def test_bad_blob_sizes_are_model_file_errors_in_the_mean_reader(case, tmp_path):
    data, message = BAD_BLOBS[case]
    (tmp_path / "m.binaryproto").write_bytes(data)
    with pytest.raises(ModelFileError, match=message):
        caffe_io.read_mean(tmp_path / "m.binaryproto")


@pytest.mark.parametrize("case", sorted(BAD_BLOBS))
def test_bad_blob_sizes_are_model_file_errors_in_the_caffemodel_reader(case, tmp_path):
    data, message = BAD_BLOBS[case]
    layer = b"\x0a\x01x" + b"\x3a" + caffe_io._varint(len(data)) + data  # name "x", blobs {...}
    net = b"\xa2\x06" + caffe_io._varint(len(layer)) + layer  # NetParameter.layer (field 100)
    if case == "empty shape":
        assert len(net) == 10  # the 10-byte caffemodel of the issue
    (tmp_path / "w.caffemodel").write_bytes(net)
    with pytest.raises(ModelFileError, match=message) as err:
        caffe_io.read_caffemodel(tmp_path / "w.caffemodel")
    assert "layer 'x' blob 0" in str(err.value)


def test_double_data_is_preferred_as_caffe_does(tmp_path):
    blob = messages()["BlobProto"]()
    blob.shape.dim.extend([2])
    blob.data.extend([9.0, 9.0, 9.0])  # Caffe reads double_data when it holds values
    blob.double_data.extend([1.5, 2.5])
    assert np.array_equal(caffe_io.blob_to_array(blob, "b"), np.array([1.5, 2.5], np.float32))


def test_oversized_text_and_mean_files_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.prototxt"
    with open(big, "wb") as f:
        f.truncate(caffe_io.MAX_TEXT_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ModelFileError, match="more than any such file can be"):
        caffe_io.read_prototxt(big)
    with pytest.raises(ModelFileError, match="is a folder"):
        caffe_io.read_mean(tmp_path)
    with pytest.raises(ModelFileError, match="is not a regular file"):
        caffe_io.read_caffemodel("/dev/zero")  # would never end


@pytest.mark.parametrize("reader, data", [
    ("read_caffemodel", b"\xa3\x06" * 100_000),  # groups nested 100,000 deep
    ("read_mean", b"\x9b\x3e" * 100_000),
    ("read_caffemodel", b"\xa2\x06\xff\xff\xff\xff\x0f"),  # a length of 4 GB in a 7-byte file
    ("read_prototxt", b"layer { " * 100_000 + b"}" * 100_000),
    ("read_prototxt", "name: 'caf\u00e9' # \u00e9\n".encode("latin-1")),  # not UTF-8
])
def test_hostile_nesting_lengths_and_encodings_are_model_file_errors(tmp_path, reader, data):
    (tmp_path / "f").write_bytes(data)
    with pytest.raises(ModelFileError, match=str(tmp_path / "f")):
        net = getattr(caffe_io, reader)(tmp_path / "f")
        caffe_io.validate_prototxt(net, tmp_path / "f")


def test_schema_is_caffes_own_caffe_proto():
    """The message classes come from Caffe's caffe.proto (engine.network.caffe_proto),
    turned into a descriptor by our small reader; protoc (grpcio-tools 1.85.1,
    `--descriptor_set_out`) made the same descriptor from the same file: its bytes, with
    protoc's json_name fields cleared, hash to the value below."""
    import hashlib

    from engine.network.caffe_proto import CAFFE_PROTO
    from engine.network.caffe_schema import file_descriptor

    assert hashlib.sha256(CAFFE_PROTO.encode()).hexdigest() == \
        "ce91ef2dea9acc73d6bee6cd960604e47d2a3472339269b8709f0d2a2a0eda43"  # BVLC/caffe, byte for byte
    assert hashlib.sha256(file_descriptor().SerializeToString(deterministic=True)).hexdigest() == \
        "11a7ed63a2a69b6a9bf52d29c4e738bc7497f77fc405fde1478af0a799de423b"
    layer = messages()["LayerParameter"].DESCRIPTOR
    assert layer.fields_by_name["batch_norm_param"].number == 139 and len(layer.fields) == 60


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


def test_missing_and_misshaped_layers_in_one_error(random_blobs):
    blobs = dict(random_blobs)
    del blobs["res4b3_branch2b"], blobs["scale5c_branch2c"]
    blobs["fc_extra"] = [np.zeros((3, 3), np.float32)]  # not used by the network: ignored, as Caffe does
    blobs["res2a_branch1"] = [np.zeros((256, 64, 3, 3), np.float32)]
    blobs["bn2a_branch1"] = blobs["bn2a_branch1"][:2]
    with pytest.raises(ModelFileError) as err:
        W.from_caffe_blobs(blobs, "my.caffemodel")
    msg = str(err.value)
    for part in ("my.caffemodel", "missing (2): res4b3_branch2b, scale5c_branch2c",
                 "wrong shape (2): res2a_branch1 (expected blobs [[256, 64, 1, 1]], found [[256, 64, 3, 3]])",
                 "bn2a_branch1 (expected blobs [[256], [256], [1]], found [[256], [256]])"):
        assert part in msg
    assert "fc_extra" not in msg


def test_layers_the_network_does_not_use_are_ignored_and_listed(random_blobs, tmp_path, caplog):
    """A caffemodel saved from training holds a classifier head and a loss: Caffe copies
    weights by layer name and ignores the rest (CopyTrainedLayersFrom); so do we."""
    blobs = dict(random_blobs)
    blobs["fc1000"] = [np.ones((1000, 2048), np.float32), np.ones(1000, np.float32)]
    blobs["loss_weights"] = [np.array([np.nan], np.float32)]  # never read, so never checked
    path = tmp_path / "trained.caffemodel"
    caffe_io.write_caffemodel(path, blobs)
    with caplog.at_level("INFO", logger="engine.network"):
        got = caffe_io.read_caffemodel(path, layers=set(random_blobs))
        weights = W.from_caffe_blobs(got, str(path))
    assert set(got) == set(random_blobs)
    assert np.array_equal(weights["fc_ftnew.weight"], random_blobs["fc_ftnew"][0])
    ignored = [r for r in caplog.records if "ignoring 2 layer(s)" in r.getMessage()]
    assert len(ignored) == 1 and ignored[0].levelname == "INFO" and "fc1000, loss_weights" in ignored[0].getMessage()
    with caplog.at_level("INFO", logger="engine.network"):  # a caller passing every layer gets the same list
        caplog.clear()
        W.from_caffe_blobs(caffe_io.read_caffemodel(path), str(path))
    assert any("ignoring 2 layer(s)" in r.getMessage() and r.levelname == "INFO" for r in caplog.records)


def test_weights_are_read_under_the_prototxts_layer_names(random_blobs):
    names = {n: f"renamed/{n}" for n in arch.expected_caffe_blobs()}
    blobs = {names[n]: a for n, a in random_blobs.items()}
    a, b = W.from_caffe_blobs(blobs, "x", names), W.from_caffe_blobs(random_blobs, "x")
    assert all(np.array_equal(a[k], b[k]) for k in b)
    del blobs["renamed/res3a_branch1"]
    with pytest.raises(ModelFileError, match=r"missing \(1\): renamed/res3a_branch1 \(the architecture's res3a_branch1\)"):
        W.from_caffe_blobs(blobs, "x", names)


@pytest.mark.parametrize("name, shape, ok", [
    ("fc_ftnew", (1, 1, 198, 2048), True),  # legacy 4-D padding: leading 1s
    ("fc_ftnew", (2048, 198), False),  # the transposed matrix: same size, another layout
    ("fc_ftnew", (198, 1, 2048), False),  # a 1 in the middle is not Caffe's padding
    ("fc_ftnew", (198, 2048, 1, 1), False),  # nor trailing 1s
    ("bn_conv1", (1, 1, 1, 64), True),
    ("bn_conv1", (1, 64, 1, 1), False),
    ("conv1", (64, 3, 7, 7), True),
    ("conv1", (64, 7, 7, 3), False),  # HWC-ordered kernels
])
def test_only_the_legacy_padding_of_a_blob_is_accepted(random_blobs, name, shape, ok):
    blobs = dict(random_blobs)
    first = blobs[name][0]
    blobs[name] = [np.zeros(shape, np.float32) if first.size == np.prod(shape) else None] + blobs[name][1:]
    assert blobs[name][0] is not None
    if ok:
        W.from_caffe_blobs(blobs)
    else:
        with pytest.raises(ModelFileError, match=rf"wrong shape \(1\): {name} "):
            W.from_caffe_blobs(blobs)


def test_non_finite_weights_and_impossible_statistics_are_refused(random_blobs):
    blobs = dict(random_blobs)
    blobs["scale4b2_branch2a"] = [blobs["scale4b2_branch2a"][0].copy(), blobs["scale4b2_branch2a"][1]]
    blobs["scale4b2_branch2a"][0][3] = np.inf
    with pytest.raises(ModelFileError, match="NaN or infinite weights: scale4b2_branch2a"):
        W.from_caffe_blobs(blobs, "w.caffemodel")
    blobs = dict(random_blobs)
    mean, var, factor = blobs["bn3a_branch1"]
    blobs["bn3a_branch1"] = [mean, -np.abs(var) - 1, factor]  # Caffe would take sqrt of a negative number
    with pytest.raises(ModelFileError, match="variance plus eps is not positive.*bn3a_branch1"):
        W.from_caffe_blobs(blobs, "w.caffemodel")


def test_layer_names_that_are_not_utf8_do_not_break_the_reader(random_blobs, tmp_path):
    blobs = dict(random_blobs)
    path = tmp_path / "w.caffemodel"
    caffe_io.write_caffemodel(path, blobs)
    extra = b"\x0a\x02\xff\xfe\x3a\x0a\x3a\x02\x08\x01\x2a\x04\x00\x00\x80\x3f"  # name b"\xff\xfe", one blob [1]
    path.write_bytes(path.read_bytes() + b"\xa2\x06" + caffe_io._varint(len(extra)) + extra)
    got = caffe_io.read_caffemodel(path)
    assert "\\xff\\xfe" in got and all(isinstance(k, str) for k in got)
    W.from_caffe_blobs(got)


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
