"""Which function a Caffe network definition computes, checked against the 3DMM-CNN ResNet-101.

A prototxt is accepted when Caffe would build from it the network this engine runs,
whatever its spelling: layer and blob names, field order, in-place or separate tops,
Split/Dropout/Flatten layers in between, `input:` + `input_dim`/`input_shape` or an
Input layer, kernel/stride/pad as `kernel_size` or `kernel_h`/`kernel_w`, layers in
any order Caffe accepts, and harmless layers off the path to the output (a Softmax
on the coefficients, a Silence...). What changes the function is refused, naming the
layer, the field, what was expected and what was found.

How (Caffe's own rules, from caffe/src/caffe/net.cpp, insert_splits.cpp, upgrade_proto.cpp
and the layers' LayerSetUp):
1. `input` fields become an Input layer (UpgradeNetInput); layers are filtered for the
   TEST phase at level 0 with no stages, as `caffe.Net(prototxt, weights, caffe.TEST)`
   does (FilterNet / StateMeetsRule).
2. The layers run in file order; a blob name always refers to the latest top of that
   name (what Caffe computes, in-place layers included). Each top becomes a node of a
   graph of values; Split, Dropout at test time and Flatten are the identity.
   Like Caffe, a bottom must be produced by an earlier layer, and a top may reuse a
   blob name only in place (same position as the bottom, which no other layer reads).
3. The graph is matched backwards from the 198-output InnerProduct against
   engine.network.architecture: fc <- pool5 <- 33 residual blocks <- pool1 <- conv1
   <- the 3x224x224 input. Residual sums match in either bottom order.
The match yields the prototxt's layer name for each layer of the architecture: Caffe
copies weights by layer name, so the weights are then read under those names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import ModelFileError
from engine.network import architecture as arch

# Caffe: NetState.phase TEST (the enum value), the phase of `caffe.Net(..., caffe.TEST)`.
PHASE_TEST = 1
# At test time Caffe's Dropout copies its input; Split shares it; Flatten keeps the values.
IDENTITY_TYPES = ("Split", "Dropout", "Flatten")
_TYPE_NAMES = {"input": "Input", "conv": "Convolution", "bn": "BatchNorm", "scale": "Scale", "relu": "ReLU",
               "pool": "Pooling", "eltwise": "Eltwise", "fc": "InnerProduct"}
_OPS = {v: k for k, v in _TYPE_NAMES.items()}


@dataclass(eq=False)
class Node:
    """One value of the network: the top of a layer (identity layers add none)."""

    op: str  # a key of _TYPE_NAMES, or "other"
    layer: object  # the LayerParameter (None for an input given by `input:` fields)
    name: str  # the layer's name
    inputs: tuple = ()
    shape: tuple = ()  # inputs only

    def describe(self) -> str:
        kind = self.layer.type if self.layer is not None else "Input"
        return f"layer {self.name!r} ({kind})"


@dataclass(frozen=True)
class NetMatch:
    """What `match_network` found."""

    layer_names: dict[str, str]  # architecture's Caffe layer name -> the prototxt's layer name
    output_blob: str  # the blob that holds the 198 coefficients
    off_path: tuple[str, ...] = field(default=())  # layers that do not feed the output (harmless)

    @property
    def renamed(self) -> dict[str, str]:
        return {k: v for k, v in self.layer_names.items() if k != v}


def _text(value) -> str:
    """A string field as text: proto2 strings that are not UTF-8 come back as bytes."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _rule_met(rule) -> bool:
    # StateMeetsRule with phase TEST, level 0 and no stages.
    if rule.HasField("phase") and rule.phase != PHASE_TEST:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    return not len(rule.stage)  # a required stage is never present; not_stage never excludes


def _included(layer, where: str) -> bool:
    if len(layer.include) and len(layer.exclude):
        raise ModelFileError(f"{where}: layer {_text(layer.name)!r}: both include and exclude rules "
                             "(Caffe refuses: 'Specify either include rules or exclude rules; not both')")
    if len(layer.include):
        return any(_rule_met(r) for r in layer.include)
    return not any(_rule_met(r) for r in layer.exclude)


class _Graph:
    """Runs the layers symbolically in file order (see the module docstring, step 2)."""

    def __init__(self, where: str):
        self.where = where
        self.current: dict[str, Node] = {}  # blob name -> its latest value
        self.version: dict[str, int] = {}  # blob name -> how many times a top of that name was made
        self.readers: dict[tuple, int] = {}  # (blob name, version) -> how many bottoms (and losses) read it
        self.producer: dict[str, str] = {}  # blob name -> layer that made its latest value
        self.layers: list = []  # every included layer, in order
        self.nodes: list[Node] = []  # every value computed by a layer, in order

    def fail(self, layer_name: str, message: str):
        raise ModelFileError(f"{self.where}: layer {layer_name!r}: {message}")

    def add_input(self, name: str, top: str, shape: tuple, layer=None):
        self._bind(name, [], top, 0, Node("input", layer, name, (), shape))

    def _bind(self, lname: str, bottoms: list[str], top: str, j: int, value: Node):
        if top in self.current:
            in_place = j < len(bottoms) and bottoms[j] == top
            if not in_place:
                self.fail(lname, f"top {top!r} is already produced by layer {self.producer[top]!r} and this "
                                 "layer does not compute it in place (Caffe refuses: 'produced by multiple sources')")
            if self.readers.get((top, self.version[top]), 0) > 1:
                # Caffe inserts a Split for a value read twice; the in-place layer then reads
                # a split copy, its top is no longer in place, and Caffe refuses the net.
                self.fail(lname, f"computes {top!r} in place, but that value is also read by another layer "
                                 "(Caffe refuses this: 'produced by multiple sources' after its split insertion)")
        self.current[top] = value
        self.producer[top] = lname
        self.version[top] = self.version.get(top, 0) + 1

    def _read(self, blob: str) -> None:
        key = (blob, self.version[blob])
        self.readers[key] = self.readers.get(key, 0) + 1

    def run(self, layer):
        lname, ltype = _text(layer.name), _text(layer.type)
        bottoms, tops = [_text(b) for b in layer.bottom], [_text(t) for t in layer.top]
        values = []
        for j, b in enumerate(bottoms):
            if b not in self.current:
                self.fail(lname, f"bottom {b!r} is not produced by any earlier layer (Caffe refuses: "
                                 "'Unknown bottom blob')")
            values.append(self.current[b])
            self._read(b)
        self.layers.append(layer)
        if ltype == "Input":
            shapes = list(layer.input_param.shape)
            if len(shapes) not in (1, len(tops)):
                self.fail(lname, f"Input: {len(shapes)} shapes for {len(tops)} tops (expected 1 or one per top)")
            for j, t in enumerate(tops):
                self._bind(lname, bottoms, t, j,
                           Node("input", layer, lname, (), tuple(shapes[0 if len(shapes) == 1 else j].dim)))
            return
        if ltype in IDENTITY_TYPES and len(values) == 1:
            if ltype == "Flatten" and not _flatten_keeps_values(layer.flatten_param):
                tops_values = [Node("other", layer, lname, tuple(values))] * len(tops)
            else:
                tops_values = [values[0]] * len(tops)
            for j, t in enumerate(tops):
                self._bind(lname, bottoms, t, j, tops_values[j])
            return
        op = _OPS.get(ltype, "other")
        for j, t in enumerate(tops):
            # A layer's second top (a MAX pooling's mask, say) is another value than its first.
            node = Node(op if j == 0 else "other", layer, lname, tuple(values))
            self.nodes.append(node)
            self._bind(lname, bottoms, t, j, node)
        for j in range(min(len(layer.loss_weight), len(tops))):
            if layer.loss_weight[j]:  # a loss counts as a reader (InsertSplits)
                self._read(tops[j])


def _flatten_keeps_values(p) -> bool:
    return p.axis in (1, -3) and p.end_axis in (-1, 3)


def _pair(repeated, h_field, w_field, has_h: bool, has_w: bool, default, what: str, layer, where) -> tuple:
    """Caffe's rule for kernel/stride/pad/dilation of a 2-D convolution: one value, two
    values (h, w), or the _h/_w fields; not both spellings."""
    if has_h or has_w:
        if len(repeated):
            hw = what.replace("_size", "")
            raise ModelFileError(f"{where}: layer {_text(layer.name)!r}: both {what} and {hw}_h/{hw}_w given "
                                 f"(Caffe refuses: 'Either {what} or {hw}_h/w should be specified; not both')")
        return (h_field, w_field)
    if len(repeated) == 0:
        return (default, default)
    if len(repeated) == 1:
        return (repeated[0], repeated[0])
    if len(repeated) == 2:
        return (repeated[0], repeated[1])
    raise ModelFileError(f"{where}: layer {_text(layer.name)!r}: {len(repeated)} values of {what} for a 2-D "
                         "convolution (expected 1 or 2)")


def conv_geometry(layer, where: str) -> dict:
    """A Convolution layer's parameters, normalised from any of Caffe's spellings."""
    p = layer.convolution_param
    kernel = _pair(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), p.HasField("kernel_w"),
                   None, "kernel_size", layer, where)
    stride = _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), p.HasField("stride_w"),
                   1, "stride", layer, where)
    pad = _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), p.HasField("pad_w"), 0, "pad", layer, where)
    dilation = _pair(p.dilation, 1, 1, False, False, 1, "dilation", layer, where)
    return {"num_output": p.num_output, "kernel": kernel, "stride": stride, "pad": pad, "dilation": dilation,
            "group": p.group, "bias_term": p.bias_term, "axis": p.axis}


def pool_geometry(layer) -> dict:
    p = layer.pooling_param
    kernel = (p.kernel_h, p.kernel_w) if (p.HasField("kernel_h") or p.HasField("kernel_w")) and \
        not p.HasField("kernel_size") else (p.kernel_size, p.kernel_size)
    stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") or p.HasField("stride_w") else (p.stride, p.stride)
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") or p.HasField("pad_w") else (p.pad, p.pad)
    method = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}.get(p.pool, str(p.pool))
    return {"pool": method, "kernel": kernel, "stride": stride, "pad": pad, "global": p.global_pooling,
            "round": {0: "CEIL", 1: "FLOOR"}.get(p.round_mode, str(p.round_mode)),
            "kernel_given": p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w")}


class _Mismatch(Exception):
    def __init__(self, depth: int, message: str):
        super().__init__(message)
        self.depth = depth


def _hw(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


class _Matcher:
    """Backward match of the value graph against the architecture (module docstring, step 3)."""

    def __init__(self, where: str):
        self.where = where
        self.names: dict[str, str] = {}
        self.visited: set[str] = set()
        self.depth = 0

    def fail(self, message: str):
        raise _Mismatch(self.depth, message)

    def expect(self, node: Node, op: str, role: str) -> Node:
        if node.op != op:
            self.fail(f"{role}: expected a {_TYPE_NAMES[op]} layer, found {node.describe()}")
        self.visited.add(node.name)
        return node

    def check(self, node: Node, role: str, what: str, found, expected):
        if found != expected:
            self.fail(f"{node.describe()}, {role}: {what} expected {expected}, found {found}")

    def one_bottom(self, node: Node, role: str) -> Node:
        if len(node.inputs) != 1:
            self.fail(f"{node.describe()}, {role}: expected 1 bottom, found {len(node.inputs)}")
        return node.inputs[0]

    def conv_bn(self, node: Node, spec: arch.ConvSpec) -> Node:
        """Scale(BatchNorm(Convolution(x))) of `spec`; returns x."""
        scale = self.expect(node, "scale", spec.scale)
        sp = scale.layer.scale_param
        self.check(scale, spec.scale, "bottoms (a learned scale)", len(scale.inputs), 1)
        self.check(scale, spec.scale, "bias_term", sp.bias_term, True)
        self.check(scale, spec.scale, "axis", sp.axis if sp.axis != -3 else 1, 1)
        self.check(scale, spec.scale, "num_axes", sp.num_axes, 1)
        bn = self.expect(scale.inputs[0], "bn", spec.bn)
        x = self.one_bottom(bn, spec.bn)
        bp = bn.layer.batch_norm_param
        if bp.HasField("use_global_stats") and not bp.use_global_stats:
            self.fail(f"{bn.describe()}, {spec.bn}: use_global_stats false normalises with each batch's own "
                      "statistics, not the stored ones (expected true or absent)")
        self.check(bn, spec.bn, "eps", bp.eps, _float32(arch.BN_EPS))
        conv = self.expect(x, "conv", spec.conv)
        g = conv_geometry(conv.layer, self.where)
        self.check(conv, spec.conv, "num_output", g["num_output"], spec.cout)
        self.check(conv, spec.conv, "kernel", _hw(g["kernel"]), _hw((spec.kernel, spec.kernel)))
        self.check(conv, spec.conv, "stride", _hw(g["stride"]), _hw((spec.stride, spec.stride)))
        self.check(conv, spec.conv, "pad", _hw(g["pad"]), _hw((spec.pad, spec.pad)))
        if spec.kernel > 1:  # a 1x1 kernel reads one pixel whatever its dilation
            self.check(conv, spec.conv, "dilation", _hw(g["dilation"]), "1x1")
        self.check(conv, spec.conv, "group", g["group"], 1)
        self.check(conv, spec.conv, "bias_term", g["bias_term"], False)
        self.check(conv, spec.conv, "axis", g["axis"] if g["axis"] != -3 else 1, 1)
        x = self.one_bottom(conv, spec.conv)
        for key, n in ((spec.conv, conv), (spec.bn, bn), (spec.scale, scale)):
            self.names[key] = n.name
        self.depth += 1
        return x

    def relu(self, node: Node, role: str) -> Node:
        relu = self.expect(node, "relu", role)
        self.check(relu, role, "negative_slope", relu.layer.relu_param.negative_slope, 0.0)
        return self.one_bottom(relu, role)

    def block(self, node: Node, spec: arch.BlockSpec) -> Node:
        """relu(shortcut + branch2) of `spec`; returns the block's input."""
        add = self.expect(self.relu(node, f"{spec.name}_relu"), "eltwise", spec.name)
        ep = add.layer.eltwise_param
        self.check(add, spec.name, "operation", {0: "PROD", 1: "SUM", 2: "MAX"}.get(ep.operation), "SUM")
        self.check(add, spec.name, "bottoms", len(add.inputs), 2)
        if len(ep.coeff) and list(ep.coeff) != [1.0, 1.0]:
            self.fail(f"{add.describe()}, {spec.name}: coeff expected none or [1, 1], found {list(ep.coeff)}")
        best = None
        for branch, short in ((add.inputs[1], add.inputs[0]), (add.inputs[0], add.inputs[1])):
            saved = (dict(self.names), set(self.visited), self.depth)
            try:
                x = self.conv_bn(branch, spec.branch2[2])
                x = self.conv_bn(self.relu(x, f"{spec.branch2[1].conv}_relu"), spec.branch2[1])
                x = self.conv_bn(self.relu(x, f"{spec.branch2[0].conv}_relu"), spec.branch2[0])
                s = short if spec.branch1 is None else self.conv_bn(short, spec.branch1)
                if s is not x:
                    what = "shortcut" if spec.branch1 is None else f"{spec.branch1.conv}'s bottom"
                    self.fail(f"{add.describe()}, {spec.name}: the {what} is not the block's input "
                              f"(the bottom of {spec.branch2[0].conv})")
                return x
            except _Mismatch as e:
                best = e if best is None or e.depth > best.depth else best
                self.names, self.visited, self.depth = saved
        raise best

    def network(self, head: Node) -> Node:
        """The whole architecture ending at `head`; returns the input node."""
        fc = self.expect(head, "fc", arch.FC_NAME)
        p = fc.layer.inner_product_param
        self.check(fc, arch.FC_NAME, "num_output", p.num_output, arch.NUM_COEFFS)
        self.check(fc, arch.FC_NAME, "bias_term", p.bias_term, True)
        self.check(fc, arch.FC_NAME, "axis", p.axis if p.axis != -3 else 1, 1)
        self.check(fc, arch.FC_NAME, "transpose", p.transpose, False)
        self.names[arch.FC_NAME] = fc.name
        pool5 = self.expect(self.one_bottom(fc, arch.FC_NAME), "pool", "pool5")
        g = pool_geometry(pool5.layer)
        self.check(pool5, "pool5", "pool", g["pool"], "AVE")
        # AVE over the whole 7x7 res5c map: kernel 7x7 (any stride gives one window) or global.
        if g["global"]:
            self.check(pool5, "pool5", "kernel_size with global_pooling (Caffe refuses both)", g["kernel_given"], False)
        else:
            self.check(pool5, "pool5", "kernel", _hw(g["kernel"]), "7x7")
        self.check(pool5, "pool5", "pad", _hw(g["pad"]), "0x0")
        x = self.one_bottom(pool5, "pool5")
        self.depth += 1
        for spec in reversed(arch.BLOCKS):
            x = self.block(x, spec)
        pool1 = self.expect(x, "pool", "pool1")
        g = pool_geometry(pool1.layer)
        for what, expected in (("pool", "MAX"), ("global", False), ("kernel", "3x3"), ("stride", "2x2"),
                               ("pad", "0x0"), ("round", "CEIL")):
            found = g[what] if what in ("pool", "global", "round") else _hw(g[what])
            self.check(pool1, "pool1", what if what != "round" else "round_mode", found, expected)
        x = self.conv_bn(self.relu(self.one_bottom(pool1, "pool1"), "conv1_relu"), arch.STEM)
        if x.op != "input":
            self.fail(f"conv1's bottom: expected the network input, found {x.describe()}")
        size = arch.INPUT_SIZE
        if len(x.shape) != 4 or tuple(x.shape[1:]) != (3, size, size) or x.shape[0] < 1:
            self.fail(f"input {x.name!r}: shape expected [N, 3, {size}, {size}], found {list(x.shape)}")
        return x


def _float32(v: float) -> float:
    import struct

    return struct.unpack("<f", struct.pack("<f", v))[0]


def _inputs_from_fields(net, graph: _Graph, where: str) -> None:
    """NetParameter `input` + `input_shape`/`input_dim` as Caffe's UpgradeNetInput makes them."""
    names = [_text(n) for n in net.input]
    if len(net.input_shape) and len(net.input_dim):
        raise ModelFileError(f"{where}: both input_shape and input_dim given (expected one of them)")
    if len(net.input_shape):
        if len(net.input_shape) != len(names):
            raise ModelFileError(f"{where}: {len(net.input_shape)} input_shape for {len(names)} inputs "
                                 "(Caffe: 'Exactly one input_shape must be specified per input')")
        shapes = [tuple(s.dim) for s in net.input_shape]
    elif len(net.input_dim):
        if len(net.input_dim) != 4 * len(names):
            raise ModelFileError(f"{where}: {len(net.input_dim)} input_dim values for {len(names)} inputs "
                                 "(Caffe: 'input_dim must be specified as 4 * number of inputs')")
        shapes = [tuple(net.input_dim[4 * i:4 * i + 4]) for i in range(len(names))]
    else:
        return  # a legacy caffemodel's bare input names: Caffe strips them
    for n, s in zip(names, shapes):
        graph.add_input("input", n, s)


def match_network(net, where: str = "prototxt") -> NetMatch:
    """Check that a parsed NetParameter computes the 3DMM-CNN ResNet-101; ModelFileError if not.

    Returns the prototxt's name of every weighted layer and the output blob."""
    where = str(where)
    if len(net.layers):
        raise ModelFileError(f"{where}: uses the legacy V1 `layers` format (Caffe before 2015), whose layer types "
                             "include no BatchNorm or Scale, so it cannot describe this network; expected `layer` "
                             "entries")
    graph = _Graph(where)
    _inputs_from_fields(net, graph, where)
    for layer in net.layer:
        if _included(layer, where):
            graph.run(layer)
    fcs = [v for v in graph.nodes if v.op == "fc"]
    candidates = [v for v in fcs if v.layer.inner_product_param.num_output == arch.NUM_COEFFS] or fcs
    if not candidates:
        raise ModelFileError(f"{where}: no InnerProduct layer: not the 3DMM-CNN ResNet-101 (its output is an "
                             f"InnerProduct with {arch.NUM_COEFFS} outputs)")
    found, best = [], None
    for head in candidates:
        m = _Matcher(where)
        try:
            m.network(head)
        except _Mismatch as e:
            best = e if best is None or e.depth > best.depth else best
            continue
        found.append((head, m))
    if not found:
        raise ModelFileError(f"{where}: not the 3DMM-CNN ResNet-101: {best}")
    if len(found) > 1:
        raise ModelFileError(f"{where}: {len(found)} InnerProduct layers each compute the whole network "
                             f"({', '.join(repr(h.name) for h, _ in found)}); expected one output")
    head, m = found[0]
    out_blobs = [b for b, v in graph.current.items() if v is head]
    if not out_blobs:
        top = _text(head.layer.top[0]) if len(head.layer.top) else "?"
        raise ModelFileError(f"{where}: the output blob {top!r} of layer {head.name!r} is overwritten in place by "
                             f"layer {graph.producer.get(top)!r} ({_type_of(graph, graph.producer.get(top))}), "
                             "which changes the network's output")
    _check_weight_names(graph, m, where)
    off = tuple(_text(l.name) for l in graph.layers
                if _text(l.name) not in m.visited and _text(l.type) not in IDENTITY_TYPES + ("Input",))
    return NetMatch(dict(m.names), out_blobs[0], off)


def _type_of(graph: _Graph, lname) -> str:
    for l in graph.layers:
        if _text(l.name) == lname:
            return _text(l.type)
    return "?"


def _check_weight_names(graph: _Graph, m: _Matcher, where: str) -> None:
    """Caffe copies weights by layer name into the last layer of that name, and shares
    blobs between layers whose `param` entries have the same name: either would give a
    layer of the network other weights than its own."""
    count: dict[str, int] = {}
    for l in graph.layers:
        count[_text(l.name)] = count.get(_text(l.name), 0) + 1
    dup = sorted({n for n in m.names.values() if count.get(n, 0) > 1})
    if dup:
        raise ModelFileError(f"{where}: layer names used by more than one layer: {dup}; Caffe copies weights "
                             "into only one of them")
    owners: dict[str, set] = {}
    for l in graph.layers:
        for p in l.param:
            if _text(p.name):
                owners.setdefault(_text(p.name), set()).add(_text(l.name))
    shared = sorted(n for n, ls in owners.items() if len(ls) > 1 and ls & set(m.names.values()))
    if shared:
        raise ModelFileError(f"{where}: parameter names shared between layers: {shared} (weight sharing is "
                             "not part of this network)")
