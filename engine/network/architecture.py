"""The 3DMM-CNN network (MSRA ResNet-101 with a 198-way regression head) as plain data.

One description that everything else is derived from: the Caffe layer list that a
prototxt must match, the blob shapes a .caffemodel must hold, the parameter names of
the PyTorch module and of our weight file, the numpy forward and the ONNX graph.

Facts of the release's deploy_network.prototxt:
- 104 convolutions, none with bias; each is followed by BatchNorm (use_global_stats,
  eps 1e-5) and Scale (with bias). In our own formats that pair is one "bn" entry.
- stride 2 on conv1, on each projection shortcut of res3a/res4a/res5a and on the 1x1
  `branch2a` convolution of those blocks (the MSRA variant, not torchvision's).
- pool1 MAX 3x3/2 with Caffe's ceil rounding (112 -> 56); pool5 AVE 7x7 (global at 224).
- fc_ftnew: InnerProduct 2048 -> 198 with bias.
"""
from __future__ import annotations

from dataclasses import dataclass

INPUT_SIZE = 224
NUM_COEFFS = 198
BN_EPS = 1e-5  # Caffe's BatchNorm default; the prototxt does not override it
# Channel means of the release's mean image (B, G, R): the synthetic weights' mean, and a
# converted model's only when its user asks for it (convert --channel-mean).
CHANNEL_MEAN_BGR = (85.245, 96.971, 119.065)

# (stage, number of blocks, bottleneck width, output width, stride of the first block)
_STAGES = ((2, 3, 64, 256, 1), (3, 4, 128, 512, 2), (4, 23, 256, 1024, 2), (5, 3, 512, 2048, 2))


@dataclass(frozen=True)
class ConvSpec:
    """One convolution followed by Caffe BatchNorm + Scale."""

    conv: str  # Caffe Convolution layer name, e.g. "res4b10_branch2a"
    bn: str  # Caffe BatchNorm layer name, e.g. "bn4b10_branch2a"
    scale: str  # Caffe Scale layer name, e.g. "scale4b10_branch2a"
    cin: int
    cout: int
    kernel: int
    stride: int
    pad: int

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.cout, self.cin, self.kernel, self.kernel)


@dataclass(frozen=True)
class BlockSpec:
    """A bottleneck residual block: branch2a (1x1) -> 2b (3x3) -> 2c (1x1), plus shortcut."""

    name: str  # e.g. "res4b10"
    branch1: ConvSpec | None  # projection shortcut, or None for identity
    branch2: tuple[ConvSpec, ConvSpec, ConvSpec]


def _block_names(stage: int, count: int) -> list[str]:
    # res2a..res2c and res5a..res5c use letters; res3 and res4 use a, b1, b2, ...
    if stage in (2, 5):
        return [f"res{stage}{chr(ord('a') + i)}" for i in range(count)]
    return [f"res{stage}a"] + [f"res{stage}b{i}" for i in range(1, count)]


def _conv(name: str, cin: int, cout: int, k: int, stride: int) -> ConvSpec:
    if name == "conv1":
        bn, scale = "bn_conv1", "scale_conv1"
    else:
        suffix = name[len("res"):]  # "4b10_branch2a"
        bn, scale = f"bn{suffix}", f"scale{suffix}"
    return ConvSpec(name, bn, scale, cin, cout, k, stride, k // 2)


def _build():
    stem = _conv("conv1", 3, 64, 7, 2)
    blocks = []
    cin = 64
    for stage, count, mid, cout, first_stride in _STAGES:
        for i, name in enumerate(_block_names(stage, count)):
            stride = first_stride if i == 0 else 1
            branch1 = _conv(f"{name}_branch1", cin, cout, 1, stride) if i == 0 else None
            branch2 = (
                _conv(f"{name}_branch2a", cin, mid, 1, stride),
                _conv(f"{name}_branch2b", mid, mid, 3, 1),
                _conv(f"{name}_branch2c", mid, cout, 1, 1),
            )
            blocks.append(BlockSpec(name, branch1, branch2))
            cin = cout
    return stem, tuple(blocks)


STEM, BLOCKS = _build()
FC_NAME = "fc_ftnew"
FC_IN = 2048


def all_convs() -> list[ConvSpec]:
    """Every convolution in forward order (shortcut before branch2, as in the prototxt)."""
    out = [STEM]
    for b in BLOCKS:
        if b.branch1 is not None:
            out.append(b.branch1)
        out.extend(b.branch2)
    return out


def expected_caffe_blobs() -> dict[str, list[tuple[int, ...]]]:
    """Caffe layer name -> shapes of its blobs, for every layer that has weights."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    for c in all_convs():
        shapes[c.conv] = [c.weight_shape]
        # BatchNorm blobs: running mean, running variance, and the moving-average
        # scale factor that both must be divided by (Caffe stores unnormalised sums).
        shapes[c.bn] = [(c.cout,), (c.cout,), (1,)]
        shapes[c.scale] = [(c.cout,), (c.cout,)]  # gamma, beta
    shapes[FC_NAME] = [(NUM_COEFFS, FC_IN), (NUM_COEFFS,)]
    return shapes


def expected_caffe_layers() -> list[tuple[str, str]]:
    """(name, type) of every layer of the deploy prototxt, in order."""
    layers: list[tuple[str, str]] = []

    def conv_bn(c: ConvSpec, relu: bool):
        layers.extend([(c.conv, "Convolution"), (c.bn, "BatchNorm"), (c.scale, "Scale")])
        if relu:
            layers.append((f"{c.conv}_relu", "ReLU"))

    conv_bn(STEM, relu=True)
    layers.append(("pool1", "Pooling"))
    for b in BLOCKS:
        if b.branch1 is not None:
            conv_bn(b.branch1, relu=False)
        conv_bn(b.branch2[0], relu=True)
        conv_bn(b.branch2[1], relu=True)
        conv_bn(b.branch2[2], relu=False)
        layers.append((b.name, "Eltwise"))
        layers.append((f"{b.name}_relu", "ReLU"))
    layers.append(("pool5", "Pooling"))
    layers.append((FC_NAME, "InnerProduct"))
    return layers


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Our canonical parameter names (PyTorch module and weight file) -> shapes.

    A conv is `<caffe conv name>.weight`; its BatchNorm+Scale pair is
    `<caffe conv name>.bn.{running_mean,running_var,weight,bias}` (variance already
    divided by Caffe's scale factor); the head is `fc_ftnew.{weight,bias}`.
    """
    out: dict[str, tuple[int, ...]] = {}
    for c in all_convs():
        out[f"{c.conv}.weight"] = c.weight_shape
        for k in ("running_mean", "running_var", "weight", "bias"):
            out[f"{c.conv}.bn.{k}"] = (c.cout,)
    out[f"{FC_NAME}.weight"] = (NUM_COEFFS, FC_IN)
    out[f"{FC_NAME}.bias"] = (NUM_COEFFS,)
    return out
