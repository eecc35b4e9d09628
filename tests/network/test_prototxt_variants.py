"""Any prototxt Caffe accepts for this network is accepted; what changes the function is
refused, naming the layer and the field. Every variant is built from the release's real
deploy_network.prototxt (../shared/cnn3dmm), rewritten the way people do rewrite it."""
from __future__ import annotations

import copy
import re

import pytest
from google.protobuf import text_format

from engine.errors import ModelFileError
from engine.network import architecture as arch
from engine.network import caffe_io
from engine.network.caffe_schema import messages


@pytest.fixture(scope="module")
def real_text(shared_dir) -> str:
    return (shared_dir / "deploy_network.prototxt").read_text()


@pytest.fixture(scope="module")
def real_net(shared_dir):
    return caffe_io.read_prototxt(shared_dir / "deploy_network.prototxt")


def check_text(tmp_path, text: str, name: str = "variant.prototxt"):
    """What convert does: read the file, then validate it."""
    path = tmp_path / name
    path.write_text(text)
    return caffe_io.validate_prototxt(caffe_io.read_prototxt(path), path)


def check_net(tmp_path, net):
    return check_text(tmp_path, text_format.MessageToString(net))


def layer(net, name):
    return next(l for l in net.layer if l.name == name)


def insert_after(net, name, new_layer):
    """A copy of the layer list with `new_layer` right after layer `name`."""
    layers = list(net.layer)
    i = [l.name for l in layers].index(name)
    out = copy.deepcopy(net)
    del out.layer[:]
    for l in layers[:i + 1] + [new_layer] + layers[i + 1:]:
        out.layer.add().CopyFrom(l)
    return out


def new_layer(**fields):
    l = messages()["LayerParameter"]()
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(l, k).extend(v)
        else:
            setattr(l, k, v)
    return l


def test_the_real_file_matches_under_its_own_names(real_net):
    m = caffe_io.validate_prototxt(real_net)
    assert m.renamed == {} and m.output_blob == "fc_ftnew" and m.off_path == ()
    assert set(m.layer_names) == set(arch.expected_caffe_blobs())


# --------------------------------------------------------------- accepted variants


def test_renamed_net_layers_and_blobs(real_net, tmp_path):
    net = copy.deepcopy(real_net)
    net.name = "my-resnet"
    net.input[0] = "image"
    for l in net.layer:
        l.name = f"L_{l.name}"
        for field in (l.bottom, l.top):
            renamed = ["image" if b == "data" else f"B_{b}" for b in field]
            del field[:]
            field.extend(renamed)
    m = check_net(tmp_path, net)
    assert m.layer_names["res4b7_branch2b"] == "L_res4b7_branch2b" and m.layer_names["bn_conv1"] == "L_bn_conv1"
    assert m.layer_names["fc_ftnew"] == "L_fc_ftnew" and m.output_blob == "B_fc_ftnew"


def test_reordered_fields_and_comments(real_text, tmp_path):
    # Inside each layer block, put `type` and `name` last and the params first; add comments.
    def reorder(block: re.Match) -> str:
        body = block.group(1)
        lines = body.split("\n")
        head = [x for x in lines if re.match(r"\t(name|type):", x)]  # the layer's own, not a filler's
        rest = [x for x in lines if x not in head]
        return "layer { # reordered\n" + "\n".join(rest + head) + "\n}"
    text = re.sub(r"layer \{\n(.*?)\n\}", reorder, real_text, flags=re.S)
    assert text != real_text
    check_text(tmp_path, "# a comment with a non-ASCII character: \u00e9\n" + text)


def test_serialised_by_protobuf_in_field_number_order(real_net, tmp_path):
    # MessageToString writes fields in field-number order (bottom, top, name, type...):
    # not the release's order.
    check_net(tmp_path, real_net)


@pytest.mark.parametrize("form", ["input_shape", "input_layer", "input_layer_named_differently"])
def test_input_given_other_ways(real_net, tmp_path, form):
    net = copy.deepcopy(real_net)
    del net.input_dim[:]
    if form == "input_shape":
        net.input_shape.add().dim.extend([10, 3, 224, 224])  # any batch size
    else:
        del net.input[:]
        inp = new_layer(name="data_in", type="Input", top=["data"])
        inp.input_param.shape.add().dim.extend([1, 3, 224, 224])
        layers = [inp] + list(net.layer)
        del net.layer[:]
        for l in layers:
            net.layer.add().CopyFrom(l)
        if form.endswith("differently"):
            net.layer[0].top[0] = "pixels"
            net.layer[1].bottom[0] = "pixels"
    check_net(tmp_path, net)


def test_relus_not_in_place(real_net, tmp_path):
    net = copy.deepcopy(real_net)
    renamed: dict[str, str] = {}
    for l in net.layer:
        for i, b in enumerate(l.bottom):
            l.bottom[i] = renamed.get(b, b)
        if l.type == "ReLU":
            out = f"{l.top[0]}_relu_out"
            renamed[l.top[0]] = out
            l.top[0] = out
    check_net(tmp_path, net)


def test_batchnorm_and_scale_not_in_place(real_net, tmp_path):
    net = copy.deepcopy(real_net)
    renamed: dict[str, str] = {}
    for l in net.layer:
        original = list(l.bottom)
        for i, b in enumerate(l.bottom):
            l.bottom[i] = renamed.get(b, b)
        if l.type in ("BatchNorm", "Scale"):
            out = f"{l.name}_out"
            renamed[l.top[0]] = out
            l.top[0] = out
        elif len(l.top) and original and l.top[0] == original[0]:  # the ReLUs stay in place, on the new blob
            l.top[0] = l.bottom[0]
    check_net(tmp_path, net)


def test_other_topological_order_and_swapped_eltwise_bottoms(real_net, tmp_path):
    """Caffe runs layers in file order and only needs each bottom made earlier: move every
    shortcut branch after the main branch, and swap the bottoms of each residual sum."""
    net = copy.deepcopy(real_net)
    layers = list(net.layer)
    out = []
    pending = []
    for l in layers:
        if "_branch1" in l.name or l.name.startswith(("bn", "scale")) and l.name.endswith("_branch1"):
            pending.append(l)
            continue
        if l.type == "Eltwise":
            out.extend(pending)
            pending = []
            bottoms = list(l.bottom)[::-1]
            del l.bottom[:]
            l.bottom.extend(bottoms)
        out.append(l)
    assert [l.name for l in out] != [l.name for l in layers]
    del net.layer[:]
    for l in out:
        net.layer.add().CopyFrom(l)
    check_net(tmp_path, net)


def test_parameter_spellings(real_net, tmp_path):
    net = copy.deepcopy(real_net)
    for l in net.layer:
        if l.type == "Convolution":
            p = l.convolution_param
            k, s, pad = p.kernel_size[0], (p.stride[0] if p.stride else 1), (p.pad[0] if p.pad else 0)
            del p.kernel_size[:], p.stride[:], p.pad[:]
            if l.name.endswith("2b"):  # kernel_h/kernel_w, stride_h/stride_w, pad_h/pad_w
                p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w = k, k, s, s, pad, pad
            else:  # two repeated values, and explicit defaults
                p.kernel_size.extend([k, k])
                p.stride.extend([s, s])
                p.pad.extend([pad, pad])
                p.dilation.append(1)
                p.group = 1
                p.axis = 1
            p.engine = p.CAFFE
        elif l.type == "BatchNorm":
            l.batch_norm_param.ClearField("use_global_stats")  # TEST phase: global statistics anyway
            l.batch_norm_param.eps = 1e-5
            del l.param[:]
        elif l.type == "Pooling" and l.name == "pool5":
            p = l.pooling_param
            p.ClearField("kernel_size")
            p.ClearField("stride")
            p.global_pooling = True
        elif l.type == "Pooling":
            p = l.pooling_param
            p.ClearField("kernel_size")
            p.kernel_h = p.kernel_w = 3
            p.round_mode = p.CEIL
        elif l.type == "Eltwise":
            l.eltwise_param.operation = l.eltwise_param.SUM
            l.eltwise_param.coeff.extend([1, 1])
        elif l.type == "InnerProduct":
            l.inner_product_param.axis = 1
            l.inner_product_param.bias_term = True
    check_net(tmp_path, net)


def test_harmless_extra_layers(real_net, tmp_path):
    net = copy.deepcopy(real_net)
    # a Split and a Dropout before the head, a Flatten, layers after the output, a
    # TRAIN-only branch that the TEST phase drops, and phase rules on the real layers
    net = insert_after(net, "pool5", new_layer(name="split5", type="Split", bottom=["pool5"], top=["p5a", "p5b"]))
    net = insert_after(net, "split5", new_layer(name="drop5", type="Dropout", bottom=["p5a"], top=["p5a"]))
    net = insert_after(net, "drop5", new_layer(name="flat5", type="Flatten", bottom=["p5a"], top=["p5flat"]))
    layer(net, "fc_ftnew").bottom[0] = "p5flat"
    layer(net, "fc_ftnew").include.add().phase = 1  # TEST
    for extra in (new_layer(name="prob", type="Softmax", bottom=["fc_ftnew"], top=["prob"]),
                  new_layer(name="silence", type="Silence", bottom=["p5b"]),
                  new_layer(name="loss", type="EuclideanLoss", bottom=["fc_ftnew", "label"], top=["loss"])):
        net.layer.add().CopyFrom(extra)
    net.layer[-1].include.add().phase = 0  # TRAIN only: "label" does not exist at test time
    m = check_net(tmp_path, net)
    assert m.off_path == ("prob", "silence") and m.output_blob == "fc_ftnew"


def test_v1_layers_format_cannot_describe_batchnorm(tmp_path):
    with pytest.raises(ModelFileError, match="legacy V1 `layers` format.*no BatchNorm or Scale"):
        check_text(tmp_path, 'input: "data"\nlayers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" }')


# --------------------------------------------------------------- refused variants


def _set(name, field, value):
    def apply(net):
        param = layer(net, name)
        for part in field.split(".")[:-1]:
            param = getattr(param, part)
        attr = field.split(".")[-1]
        target = getattr(param, attr)
        if hasattr(target, "extend"):
            del target[:]
            target.extend(value if isinstance(value, list) else [value])
        else:
            setattr(param, attr, value)
    return apply


REFUSED = {
    "3x3 kernel made 5x5": (_set("res4b3_branch2b", "convolution_param.kernel_size", 5),
                            "res4b3_branch2b.*kernel expected 3x3, found 5x5"),
    "kernel_h only changed": (lambda n: (_set("res3a_branch2b", "convolution_param.kernel_size", [])(n),
                                         setattr(layer(n, "res3a_branch2b").convolution_param, "kernel_h", 1),
                                         setattr(layer(n, "res3a_branch2b").convolution_param, "kernel_w", 3)),
                              "res3a_branch2b.*kernel expected 3x3, found 1x3"),
    "stride moved to the 3x3 conv (torchvision)": (lambda n: (_set("res3a_branch2a", "convolution_param.stride", 1)(n),
                                                              _set("res3a_branch2b", "convolution_param.stride", 2)(n)),
                                                   "res3a_branch2b.*stride expected 1x1, found 2x2"),
    "pad changed": (_set("conv1", "convolution_param.pad", 2), "conv1.*pad expected 3x3, found 2x2"),
    "num_output changed": (_set("res5c_branch2a", "convolution_param.num_output", 256),
                           "res5c_branch2a.*num_output expected 512, found 256"),
    "conv with a bias": (_set("res2a_branch1", "convolution_param.bias_term", True),
                         "res2a_branch1.*bias_term expected False, found True"),
    "grouped conv": (_set("res2b_branch2b", "convolution_param.group", 2), "res2b_branch2b.*group expected 1, found 2"),
    "dilated 3x3": (_set("res2b_branch2b", "convolution_param.dilation", 2), "dilation expected 1x1, found 2x2"),
    "batch statistics": (_set("bn3b1_branch2a", "batch_norm_param.use_global_stats", False),
                         "bn3b1_branch2a.*use_global_stats false"),
    "other eps": (_set("bn_conv1", "batch_norm_param.eps", 1e-3), "bn_conv1.*eps expected"),
    "scale without bias": (_set("scale2a_branch1", "scale_param.bias_term", False),
                           "scale2a_branch1.*bias_term expected True, found False"),
    "pool1 average": (_set("pool1", "pooling_param.pool", 1), "pool1.*pool expected MAX, found AVE"),
    "pool1 floor rounding": (_set("pool1", "pooling_param.round_mode", 1), "pool1.*round_mode expected CEIL, found FLOOR"),
    "pool1 padded (torchvision)": (_set("pool1", "pooling_param.pad", 1), "pool1.*pad expected 0x0, found 1x1"),
    "pool5 max": (_set("pool5", "pooling_param.pool", 0), "pool5.*pool expected AVE, found MAX"),
    "eltwise product": (_set("res4b9", "eltwise_param.operation", 0), "res4b9.*operation expected SUM, found PROD"),
    "eltwise difference": (_set("res4b9", "eltwise_param.coeff", [1, -1]), r"res4b9.*coeff expected none or \[1, 1\]"),
    "leaky relu": (_set("res4b9_branch2a_relu", "relu_param.negative_slope", 0.1),
                   "res4b9_branch2a_relu.*negative_slope expected 0.0"),
    "fc size": (_set("fc_ftnew", "inner_product_param.num_output", 10), "fc_ftnew.*num_output expected 198, found 10"),
    "fc transposed": (_set("fc_ftnew", "inner_product_param.transpose", True), "fc_ftnew.*transpose expected False"),
    "fc without bias": (_set("fc_ftnew", "inner_product_param.bias_term", False), "fc_ftnew.*bias_term expected True"),
    "227 input": (lambda n: n.input_dim.__setitem__(2, 227), r"shape expected \[N, 3, 224, 224\], found \[1, 3, 227, 224\]"),
    "a ReLU removed": (lambda n: n.layer.remove(layer(n, "res3b2_branch2b_relu")),
                       "res3b2_branch2b_relu: expected a ReLU layer, found layer 'scale3b2_branch2b'"),
    "both kernel spellings": (lambda n: setattr(layer(n, "res2a_branch2b").convolution_param, "kernel_h", 3),
                              "both kernel_size and kernel_h/kernel_w given"),
    "unknown bottom": (_set("res2b_branch2a", "bottom", "nowhere"), "bottom 'nowhere' is not produced"),
    "a top made twice": (_set("res2a_branch2a", "top", "res2a_branch1"),
                         "top 'res2a_branch1' is already produced by layer 'scale2a_branch1'"),
    "in place on a value read twice": (_set("res2a_branch2a", "top", "pool1"),
                                       "computes 'pool1' in place, but that value is also read"),
    "weight sharing": (lambda n: [setattr(layer(n, x).param.add(), "name", "shared")
                                  for x in ("res2b_branch2a", "res2c_branch2a")],
                       r"parameter names shared between layers: \['shared'\]"),
    "duplicate weighted layer name": (_set("res2c_branch2a", "name", "res2b_branch2a"),
                                      "used by more than one layer"),
    "both include and exclude": (lambda n: (layer(n, "conv1").include.add(), layer(n, "conv1").exclude.add()),
                                 "both include and exclude rules"),
    "a needed layer only in TRAIN": (lambda n: setattr(layer(n, "res2a_branch2a").include.add(), "phase", 0),
                                     "res2a_branch2a"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_changes_of_function_are_refused_naming_layer_and_field(real_net, tmp_path, case):
    change, message = REFUSED[case]
    net = copy.deepcopy(real_net)
    change(net)
    with pytest.raises(ModelFileError, match=message) as err:
        check_net(tmp_path, net)
    assert "variant.prototxt" in str(err.value)


def test_a_layer_that_changes_values_on_the_path_is_refused(real_net, tmp_path):
    net = insert_after(real_net, "res3a", new_layer(name="boost", type="Power", bottom=["res3a"], top=["res3a"]))
    with pytest.raises(ModelFileError, match="found layer 'boost' \\(Power\\)"):
        check_net(tmp_path, net)


def test_output_overwritten_in_place_is_refused(real_net, tmp_path):
    net = copy.deepcopy(real_net)
    net.layer.add().CopyFrom(new_layer(name="prob", type="Softmax", bottom=["fc_ftnew"], top=["fc_ftnew"]))
    with pytest.raises(ModelFileError, match="output blob 'fc_ftnew' .* overwritten in place by layer 'prob'"):
        check_net(tmp_path, net)


def test_in_place_on_a_value_read_twice_is_refused_as_caffe_does(real_net, tmp_path):
    # pool1 feeds res2a_branch1 and res2a_branch2a; an in-place ReLU on pool1 between them
    # makes Caffe's split insertion break the in-place link ("produced by multiple sources").
    net = insert_after(real_net, "scale2a_branch1", new_layer(name="r", type="ReLU", bottom=["pool1"], top=["pool1"]))
    with pytest.raises(ModelFileError, match="layer 'r': computes 'pool1' in place, but that value is also read"):
        check_net(tmp_path, net)


@pytest.mark.parametrize("text, message", [
    ("layer { name: 'x' dilation_typo: 3 }", "not a Caffe network definition"),
    ("\x00\x01binary junk \xff", "not a Caffe network definition"),
    ("layer { convolution_param { kernel_size: -1 } }", "not a Caffe network definition"),
    ("input_dim: 99999999999999999999", "not a Caffe network definition"),
    ("", "no InnerProduct layer"),
    ('input: "data" input_dim: 1 input_dim: 3', "2 input_dim values for 1 inputs"),
])
def test_files_that_are_not_this_network(tmp_path, text, message):
    with pytest.raises(ModelFileError, match=message):
        check_text(tmp_path, text)
