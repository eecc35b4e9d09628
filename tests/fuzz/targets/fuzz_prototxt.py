"""Fuzz target: the prototxt reader and the network-structure check
(engine.network.caffe_io.read_prototxt, validate_prototxt / engine.network.caffe_net)."""
from __future__ import annotations

from _caffe import SHARED, scratch
from engine.errors import ModelFileError
from engine.network import caffe_io

EXPECTED = (ModelFileError,)

TINY = b'''name: "tiny"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 224 input_dim: 224
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 64 kernel_size: 7 stride: 2 pad: 3 bias_term: false } }
layer { name: "bn_conv1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "scale_conv1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "split" type: "Split" bottom: "pool1" top: "a" top: "b" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: 1 } }
layer { name: "fc_ftnew" type: "InnerProduct" bottom: "sum" top: "fc_ftnew" inner_product_param { num_output: 198 } }
'''


def seeds() -> list[bytes]:
    """A tiny net using most of the syntax the check reads, and the release's prototxt (90 KB)
    when ../shared/cnn3dmm is present."""
    out = [TINY]
    if (SHARED / "deploy_network.prototxt").is_file():
        out.append((SHARED / "deploy_network.prototxt").read_bytes())
    return out


def one_input(data: bytes) -> None:
    path = scratch() / "deploy.prototxt"
    path.write_bytes(data)
    caffe_io.validate_prototxt(caffe_io.read_prototxt(path), path)
