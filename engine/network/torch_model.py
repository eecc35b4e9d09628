"""The 3DMM-CNN ResNet-101 as PyTorch modules (imported only when PyTorch is used).

`Cnn3dmmNet`: the exact Caffe architecture, one FrozenBN per BatchNorm+Scale pair,
parameter names = `architecture.state_dict_shapes()`. `FusedCnn3dmmNet`: the same
function with every BatchNorm folded into its convolution (what the runners execute).
Both take raw crops: the mean image is a buffer subtracted inside forward().
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.network import architecture as arch
from engine.network import weights as W


class FrozenBN(nn.Module):
    """Caffe BatchNorm (use_global_stats) followed by Scale (with bias)."""

    def __init__(self, c: int):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("weight", torch.ones(c))
        self.register_buffer("bias", torch.zeros(c))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, arch.BN_EPS)


class ConvBN(nn.Module):
    def __init__(self, spec: arch.ConvSpec, fused: bool):
        super().__init__()
        self.conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.pad, bias=fused)
        self.bn = None if fused else FrozenBN(spec.cout)

    def forward(self, x):
        x = self.conv(x.to(self.conv.weight.dtype))  # a no-op unless a float16 plan mixes precisions
        return x if self.bn is None else self.bn(x)


class Bottleneck(nn.Module):
    def __init__(self, spec: arch.BlockSpec, fused: bool):
        super().__init__()
        self.branch1 = None if spec.branch1 is None else ConvBN(spec.branch1, fused)
        self.branch2a, self.branch2b, self.branch2c = (ConvBN(c, fused) for c in spec.branch2)
        self.sum_dtype = None  # set by set_trunk_dtype: the precision of the residual sum

    def forward(self, x):
        short = x if self.branch1 is None else self.branch1(x)
        y = F.relu(self.branch2a(x))
        y = self.branch2c(F.relu(self.branch2b(y)))
        if self.sum_dtype is not None:
            short, y = short.to(self.sum_dtype), y.to(self.sum_dtype)
        return F.relu(short + y)


class _Net(nn.Module):
    fused = False

    def __init__(self, mean: np.ndarray | None = None):
        super().__init__()
        m = W.channel_mean_image() if mean is None else mean
        self.register_buffer("mean", torch.tensor(np.asarray(m, np.float32)))
        self.conv1 = ConvBN(arch.STEM, self.fused)
        # Caffe rounds pooled sizes up (112 -> 56); PyTorch's ceil_mode does the same.
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.blocks = nn.ModuleDict({b.name: Bottleneck(b, self.fused) for b in arch.BLOCKS})
        self.fc_ftnew = nn.Linear(arch.FC_IN, arch.NUM_COEFFS)
        self.synthetic = True  # set by the loaders; the resolver says which weights these are

    def features(self, crops):
        """pool5 output [B, 2048] in float32 (the trunk may run in another dtype)."""
        x = crops - self.mean
        x = x.to(self.conv1.conv.weight.dtype)
        x = self.pool1(F.relu(self.conv1(x)))
        for block in self.blocks.values():
            x = block(x)
        # pool5 (AVE 7x7 at 224 input = global mean) in float32: a 49-term average of
        # large activations is where half precision would lose the most.
        return x.float().mean(dim=(2, 3))

    def forward(self, crops):
        f = self.features(crops)
        return F.linear(f, self.fc_ftnew.weight.float(), self.fc_ftnew.bias.float())

    def load_numpy(self, tensors: dict[str, np.ndarray], where: str = "weights"):
        """Load our canonical (or fused) weights, checked by name and shape."""
        own = {self._canonical(k): k for k in self.state_dict() if k != "mean"}
        sd = self.state_dict()
        missing = [c for c in own if c not in tensors]
        unexpected = [k for k in tensors if k not in own]
        misshaped = [f"{c} (expected {list(sd[own[c]].shape)}, found {list(tensors[c].shape)})"
                     for c in own if c in tensors and tuple(sd[own[c]].shape) != tuple(tensors[c].shape)]
        W.report_mismatch(where, missing, unexpected, misshaped)
        with torch.no_grad():
            for c, k in own.items():
                sd[k].copy_(torch.tensor(np.asarray(tensors[c])))
        return self

    @staticmethod
    def _canonical(key: str) -> str:
        """Module key ('blocks.res2a.branch2a.conv.weight') -> canonical ('res2a_branch2a.weight')."""
        parts = key.split(".")
        if parts[0] == "fc_ftnew":
            return key
        if parts[0] == "conv1":
            name, rest = "conv1", parts[1:]
        else:
            name, rest = f"{parts[1]}_{parts[2]}", parts[3:]
        if rest[0] == "conv":
            rest = rest[1:]
        return ".".join([name] + rest)


class Cnn3dmmNet(_Net):
    """The exact Caffe architecture (convolution, BatchNorm+Scale as FrozenBN)."""

    fused = False


class FusedCnn3dmmNet(_Net):
    """BatchNorm folded into the convolutions: same function, fewer passes over memory."""

    fused = True


def build(weights: dict[str, np.ndarray], mean: np.ndarray, *, fused: bool = True, synthetic: bool) -> _Net:
    """An eval-mode module from canonical numpy weights."""
    net = FusedCnn3dmmNet(mean) if fused else Cnn3dmmNet(mean)
    net.load_numpy(W.fuse(weights) if fused else weights)
    net.synthetic = synthetic
    return net.eval().requires_grad_(False)


def set_trunk_dtype(net: _Net, dtype: torch.dtype, fp16_plan=None) -> _Net:
    """Run the convolutional trunk in `dtype` (bf16/fp16); the mean subtraction, pool5
    and fc_ftnew stay float32 (forward() casts at those boundaries).

    float16 (65504 at most) needs the weights' engine.network.fp16.Fp16Plan (ResolvedModel.
    fp16_plan()): the convolutions and residual sums it names stay float32, so no value
    can overflow; each convolution casts its input to its own precision. bfloat16 has
    float32's range and needs none."""
    if dtype == torch.float16 and fp16_plan is None:
        raise ValueError("set_trunk_dtype: float16 needs fp16_plan (ResolvedModel.fp16_plan())")
    plan = fp16_plan if dtype == torch.float16 else None
    # Convolution by convolution, from float32: a weight float16 cannot hold must never
    # pass through float16 (it would come back as inf).
    for spec in arch.all_convs():
        _conv_module(net, spec.conv).to(torch.float32 if plan and plan.runs_fp32(spec.conv) else dtype)
    for name, block in net.blocks.items():
        block.sum_dtype = torch.float32 if plan and plan.runs_fp32(name) else dtype
    return net


def _conv_module(net: _Net, conv_name: str) -> ConvBN:
    """The ConvBN of a Caffe convolution name ('conv1', 'res4b3_branch2b')."""
    if conv_name == arch.STEM.conv:
        return net.conv1
    block, branch = conv_name.split("_")
    return getattr(net.blocks[block], branch)


def load_torch_model(model_dir=None, *, fused: bool = True) -> _Net:
    """The module for the weights `model_dir` resolves to (converted, else synthetic).

    `net.synthetic` says which; `fused=False` gives the exact Caffe structure."""
    from engine.network.resolve import resolve_model

    model = resolve_model(model_dir)
    return build(model.weights, model.mean, fused=fused, synthetic=model.synthetic)
