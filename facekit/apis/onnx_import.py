"""Import weights from an ONNX face model (InsightFace arcface_torch exports) into a facekit backbone.

The field's public models (insightface model zoo: ``w600k_r50.onnx``, ``glint360k_r100.onnx``,
arcface_torch's ``torch2onnx.py`` output for r18/r34/r50/r100/r200/mbf) are ONNX graphs of
Conv / BatchNormalization / PRelu / Gemm (or MatMul + Add) / Flatten / Add. Their parameter
names are exporter-generated (``onnx::Conv_683``), so the mapping is structural: the graph's
parameterised layers in node (topological) order are paired with the facekit backbone's
parameterised cells in execution order, checking kind and shape at every step.

PyTorch's exporter folds a BatchNorm into the preceding convolution in eval mode (the conv
gains a bias); facekit keeps conv (no bias) + BN, so a folded pair becomes the conv weight plus
an identity BN carrying the bias (gamma 1, beta = bias, mean 0, var = 1 - eps). Unfolded BNs are
copied, with the variance shifted when the epsilon differs. Input normalization baked into the
graph (Sub 127.5 / Mul s before the first conv) is folded into the first convolution when it is
the same up to scale, and refused otherwise.

Vision Transformers (arcface_torch ``vit_t/s/b/l`` through ``torch2onnx.py``, opset 11) add four
patterns, each mapped onto facekit's ``VisionTransformer``:

- LayerNorm, which opset 11 spells ReduceMean -> Sub -> Pow 2 -> ReduceMean -> Add eps -> Sqrt ->
  Div -> Mul gamma -> Add beta over the last axis: read as one layer with its epsilon, which must
  equal facekit's (an epsilon cannot be moved into the weights exactly, so a mismatch is refused).
- the position embedding: a (1, N, D) initializer added to the patch tokens after the patch conv.
- attention: qkv MatMul [+ Add] -> Reshape (B, N, 3, heads, head_dim) -> ... -> MatMul q k^T ->
  Mul/Div by a scale -> Softmax over the last axis -> ... -> proj. The head count (from the Reshape)
  and the scale must equal facekit's, since neither is a weight.
- the MLP activation after fc1 (Clip 0..6 = ReLU6, Relu, or the Erf form of GELU) must be the one
  facekit's Mlp applies.

``mask_token`` acts only in training (masked tokens), so an eval graph has no trace of it: it is set
to zeros.
"""
import numpy as np

PARAM_KINDS = ('conv', 'bn', 'prelu', 'linear', 'layernorm', 'posembed')
# Parameters a backbone cell holds itself rather than through a layer cell (facekit's ViT): the
# position embedding enters the graph as an Add right after the patch-embedding conv; the mask token
# replaces masked tokens in training only, so no eval graph contains it.
_TOKEN_PARAMS = ('pos_embed', 'mask_token')
_SHAPE_ONLY = ('Reshape', 'Unsqueeze', 'Squeeze', 'Flatten', 'Identity')


class ConversionError(ValueError):
    """The ONNX graph does not fit the facekit backbone."""


class OnnxLayer:
    """One parameterised layer of the source graph.

    Attributes:
        kind: 'conv' | 'bn' | 'prelu' | 'linear' | 'layernorm' | 'posembed'.
        name: the ONNX node name (for messages).
        input / output: tensor names in the graph.
        arrays: dict of float32 ndarrays: conv ``weight`` (O, I/g, kh, kw) [+ ``bias``]; bn ``scale``,
            ``bias``, ``mean``, ``var``; prelu ``slope`` (C,); linear ``weight`` (out, in) [+ ``bias``];
            layernorm [``weight`` (D,), ``bias`` (D,)]; posembed ``value`` (1, N, D).
        attrs: conv ``group``/``strides``/``pads``, bn and layernorm ``epsilon``; a linear layer may carry
            ``activation`` (applied to its output), ``heads``/``head_dim`` and ``softmax`` (axis, scale)
            when it is an attention qkv projection.
    """

    def __init__(self, kind, name, input, output, arrays, attrs=None):
        self.kind, self.name, self.input, self.output = kind, name, input, output
        self.arrays = arrays
        self.attrs = attrs or {}

    def describe(self):
        shapes = ', '.join(f'{k}{tuple(v.shape)}' for k, v in self.arrays.items())
        return f'{self.kind} {self.name!r} [{shapes}]'


def _attr(node, name, default=None):
    from onnx import helper
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constants(graph):
    """(values, origin): name -> ndarray for initializers, Constant nodes and Identity of those;
    name -> the initializer or Constant it is an Identity of (PyTorch's exporter shares equal
    tensors, e.g. all-ones LayerNorm weights, through Identity nodes)."""
    from onnx import numpy_helper
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    origin = {}
    for node in graph.node:
        if node.op_type == 'Constant':
            t = _attr(node, 'value')
            if t is not None:
                values[node.output[0]] = numpy_helper.to_array(t)
        elif node.op_type == 'Identity' and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
            origin[node.output[0]] = origin.get(node.input[0], node.input[0])
    return values, origin


def _input_affine(graph, values):
    """Fold leading Sub/Add/Mul/Div scalar nodes on the graph input into (scale, shift, first tensor).

    Returns (a, b, tensor) meaning ``tensor = a * input + b``; (1, 0, input) if there are none.
    """
    name = graph.input[0].name
    if name in values:  # old exporters list initializers as inputs too
        name = next(i.name for i in graph.input if i.name not in values)
    a, b = 1.0, 0.0
    consumers = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    while True:
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type not in ('Sub', 'Add', 'Mul', 'Div'):
            return a, b, name
        node = users[0]
        other = node.input[1] if node.input[0] == name else node.input[0]
        if other not in values or np.asarray(values[other]).size != 1 or node.input[0] != name:
            return a, b, name
        c = float(np.asarray(values[other]).reshape(()))
        if node.op_type == 'Sub':
            b -= c
        elif node.op_type == 'Add':
            b += c
        elif node.op_type == 'Mul':
            a, b = a * c, b * c
        else:
            a, b = a / c, b / c
        name = node.output[0]


def _scalar(values, name):
    """The value of a one-element constant as a float, or None."""
    if name not in values or np.asarray(values[name]).size != 1:
        return None
    return float(np.asarray(values[name]).reshape(()))


def _match_layernorm(node, consumers, values):
    """The opset-11 spelling of LayerNorm that starts at ``node`` (a ReduceMean), or None.

    Pattern over the last axis: m = ReduceMean(x); d = x - m; v = ReduceMean(d ** 2);
    y = d / Sqrt(v + eps) [* gamma + beta]. Returns dict(nodes, input, output, epsilon, weight, bias)
    with ``weight``/``bias`` the constant names or None (LayerNorm without affine parameters).
    """
    def only(name, op):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def over_last_axis(n):
        return list(_attr(n, 'axes', [])) == [-1] and int(_attr(n, 'keepdims', 1)) == 1

    def other_input(n, name):
        rest = [i for i in n.input if i != name]
        return rest[0] if len(rest) == 1 and len(n.input) == 2 else None

    x = node.input[0]
    sub = only(node.output[0], 'Sub')
    if not over_last_axis(node) or sub is None or list(sub.input) != [x, node.output[0]]:
        return None
    users = consumers.get(sub.output[0], [])
    pow_ = next((u for u in users if u.op_type == 'Pow'), None)
    div = next((u for u in users if u.op_type == 'Div'), None)
    if len(users) != 2 or pow_ is None or div is None or _scalar(values, pow_.input[1]) != 2.0:
        return None
    mean2 = only(pow_.output[0], 'ReduceMean')
    add = only(mean2.output[0], 'Add') if mean2 is not None and over_last_axis(mean2) else None
    eps = _scalar(values, other_input(add, mean2.output[0])) if add is not None else None
    sqrt = only(add.output[0], 'Sqrt') if add is not None else None
    if eps is None or sqrt is None or list(div.input) != [sub.output[0], sqrt.output[0]]:
        return None
    found = dict(nodes=[node, sub, pow_, mean2, add, sqrt, div], input=x, output=div.output[0], epsilon=eps,
                 weight=None, bias=None)
    for op, key in (('Mul', 'weight'), ('Add', 'bias')):
        nxt = only(found['output'], op)
        const = other_input(nxt, found['output']) if nxt is not None else None
        if const is None or const not in values or (key == 'bias' and found['weight'] is None):
            break
        found[key] = const
        found['nodes'].append(nxt)
        found['output'] = nxt.output[0]
    return found


def _activation(node, values, producers):
    """(name, input tensor) of an activation node: 'relu6' / 'clip(lo,hi)' for Clip, 'relu', or 'gelu' for
    the Erf form x * 0.5 * (1 + erf(x / sqrt 2)) (the Erf's input is x / sqrt 2)."""
    op = node.op_type
    if op == 'Relu':
        return 'relu', node.input[0]
    if op == 'Clip':
        lo = _scalar(values, node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, 'min')
        hi = _scalar(values, node.input[2]) if len(node.input) > 2 and node.input[2] else _attr(node, 'max')
        return ('relu6' if (lo, hi) == (0.0, 6.0) else f'clip({lo}, {hi})'), node.input[0]
    scaled = producers.get(node.input[0])
    if scaled is not None and scaled.op_type in ('Div', 'Mul'):
        c = _scalar(values, scaled.input[1])
        if c is not None and np.isclose(c if scaled.op_type == 'Div' else 1.0 / c, np.sqrt(2.0), rtol=1e-4):
            return 'gelu', scaled.input[0]
    return 'erf', node.input[0]


def _attention_scale(node, values, producers):
    """The factor applied to the scores a Softmax reads (Mul c or Div c right before it); 1.0 if none."""
    p = producers.get(node.input[0])
    if p is None or p.op_type not in ('Mul', 'Div'):
        return 1.0
    consts = [c for c in (_scalar(values, i) for i in p.input) if c is not None]
    if len(consts) != 1:
        return 1.0
    return consts[0] if p.op_type == 'Mul' else 1.0 / consts[0]


def read_onnx_layers(model):
    """The parameterised layers of an ONNX model in node order, plus its input normalization.

    Args:
        model: ``onnx.ModelProto`` or a path.
    Returns:
        (layers, (a, b)): list of ``OnnxLayer``; the graph computes ``a * input + b`` before its
        first layer (a=1, b=0 when the graph expects already normalized input).
    """
    import onnx
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    values, origin = _constants(graph)
    a, b, _ = _input_affine(graph, values)
    used = set()
    layers = []
    nodes = list(graph.node)
    consumers = {}
    for node in nodes:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def const(name, node):
        if name not in values:
            raise ConversionError(f'node {node.name!r} ({node.op_type}): input {name!r} is not a constant; '
                                  'only weights stored in the file can be imported')
        used.add(origin.get(name, name))
        return np.asarray(values[name], dtype=np.float32)

    producers = {o: n for n in nodes for o in n.output}

    def source(name):
        # Look through shape-only ops so 'BN right after this layer' survives MindSpore's
        # Reshape-BN-Reshape for BatchNorm1d.
        while name in producers and producers[name].op_type in _SHAPE_ONLY:
            name = producers[name].input[0]
        return name

    skip = set()
    for idx, node in enumerate(nodes):
        if id(node) in skip:
            continue
        op = node.op_type
        if op == 'Conv':
            arrays = {'weight': const(node.input[1], node)}
            if len(node.input) > 2 and node.input[2]:
                arrays['bias'] = const(node.input[2], node)
            attrs = {'group': int(_attr(node, 'group', 1)), 'strides': list(_attr(node, 'strides', [1, 1])),
                     'pads': list(_attr(node, 'pads', [0, 0, 0, 0]))}
            layers.append(OnnxLayer('conv', node.name, node.input[0], node.output[0], arrays, attrs))
        elif op == 'BatchNormalization':
            arrays = {k: const(n, node) for k, n in zip(('scale', 'bias', 'mean', 'var'), node.input[1:5])}
            layers.append(OnnxLayer('bn', node.name, source(node.input[0]), node.output[0], arrays,
                                    {'epsilon': float(_attr(node, 'epsilon', 1e-5))}))
        elif op == 'PRelu':
            slope = const(node.input[1], node).reshape(-1)
            layers.append(OnnxLayer('prelu', node.name, node.input[0], node.output[0], {'slope': slope}))
        elif op == 'ReduceMean':
            ln = _match_layernorm(node, consumers, values)
            if ln is None:
                raise ConversionError(f'ReduceMean {node.name!r} is not the start of a LayerNorm over the last axis '
                                      '(ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div[, Mul, Add]); '
                                      'no facekit layer computes it')
            skip.update(id(n) for n in ln['nodes'])
            arrays = {k: const(ln[k], node) for k in ('weight', 'bias') if ln[k] is not None}
            layers.append(OnnxLayer('layernorm', node.name, ln['input'], ln['output'], arrays,
                                    {'epsilon': ln['epsilon']}))
        elif op == 'Add' and sum(i in values and np.asarray(values[i]).ndim >= 3 for i in node.input) == 1 \
                and not all(i in values for i in node.input):
            # A (1, N, D) constant added to the tokens: the ViT position embedding.
            name = next(i for i in node.input if i in values)
            data = next(i for i in node.input if i not in values)
            layers.append(OnnxLayer('posembed', node.name, data, node.output[0], {'value': const(name, node)}))
        elif op == 'Reshape' and layers and layers[-1].kind == 'linear' and node.input[0] == layers[-1].output \
                and node.input[1] in values and np.asarray(values[node.input[1]]).shape == (5,):
            # qkv projection split as (B, N, 3, heads, head_dim): the head count is no weight, so keep it.
            shape = [int(v) for v in np.asarray(values[node.input[1]])]
            if shape[2] == 3:
                layers[-1].attrs.update(heads=shape[3], head_dim=shape[4])
        elif op == 'Softmax':
            qkv = next((t for t in reversed(layers) if 'heads' in t.attrs), None)
            if qkv is None or 'softmax' in qkv.attrs:
                raise ConversionError(f'Softmax {node.name!r} does not follow a qkv projection split into heads')
            qkv.attrs['softmax'] = dict(axis=int(_attr(node, 'axis', 1)),
                                        scale=_attention_scale(node, values, producers))
        elif op in ('Clip', 'Relu', 'Erf'):
            act, source_name = _activation(node, values, producers)
            if layers and layers[-1].kind == 'linear' and source_name == layers[-1].output:
                layers[-1].attrs['activation'] = act
        elif op == 'Gemm':
            w = const(node.input[1], node)
            if float(_attr(node, 'alpha', 1.0)) != 1.0 or float(_attr(node, 'beta', 1.0)) != 1.0 \
                    or int(_attr(node, 'transA', 0)):
                raise ConversionError(f'Gemm {node.name!r}: only alpha=beta=1, transA=0 is supported')
            arrays = {'weight': w if int(_attr(node, 'transB', 0)) else w.T}
            if len(node.input) > 2 and node.input[2]:
                arrays['bias'] = const(node.input[2], node)
            layers.append(OnnxLayer('linear', node.name, node.input[0], node.output[0], arrays))
        elif op == 'MatMul' and node.input[1] in values:
            arrays = {'weight': const(node.input[1], node).T}
            out = node.output[0]
            users = consumers.get(out, [])
            if len(users) == 1 and users[0].op_type == 'Add':
                add = users[0]
                other = add.input[1] if add.input[0] == out else add.input[0]
                if other in values:
                    arrays['bias'] = const(other, add)
                    out = add.output[0]
                    skip.add(id(add))
            layers.append(OnnxLayer('linear', node.name, node.input[0], out, arrays))
    # Every float tensor of the file must have gone somewhere: a weight that no rule read means
    # an operation this importer does not understand, and silently dropping it would be wrong.
    leftovers = [n for n, v in values.items()
                 if n not in used and np.asarray(v).dtype.kind == 'f' and np.asarray(v).size > 1
                 and n in {i.name for i in graph.initializer}]
    if leftovers:
        raise ConversionError(f'{len(leftovers)} weight tensors are used by unsupported operations: '
                              f"{', '.join(leftovers[:10])}")
    return layers, (a, b)


def facekit_layers(backbone, input_size=112):
    """facekit's parameterised leaf cells in execution order: list of (name, cell, kind).

    One eval-mode forward in PyNative mode records the order (execution order is what an exported
    graph's node order follows; definition order need not match it).
    """
    import mindspore as ms
    from mindspore import nn

    def kind_of(cell):
        if isinstance(cell, nn.Conv2d):
            return 'conv'
        if isinstance(cell, (nn.BatchNorm2d, nn.BatchNorm1d)):
            return 'bn'
        if isinstance(cell, nn.Dense):
            return 'linear'
        if isinstance(cell, nn.LayerNorm):
            return 'layernorm'
        if type(cell).__name__ == 'PReLU':
            return 'prelu'
        return None

    owned = {}
    pos_embeds = []
    for name, cell in backbone.cells_and_names():
        direct = [p for p in cell.get_parameters(expand=False)]
        kind = kind_of(cell)
        if kind is not None:
            owned[id(cell)] = (name, cell, kind)
        elif direct and {p.name.rpartition('.')[2] for p in direct} <= set(_TOKEN_PARAMS):
            if hasattr(cell, 'pos_embed'):
                pos_embeds.append((name, cell))
        elif direct:
            raise ConversionError(f'{type(backbone).__name__}{"." + name if name else ""} ({type(cell).__name__}) holds parameters '
                                  f"{[p.name for p in direct]} of a kind ONNX import does not map "
                                  '(supported: Conv2d, BatchNorm, PReLU, Dense, LayerNorm and the ViT '
                                  'position embedding)')
    order = []
    handles = []

    def hook(cell, inputs):
        entry = owned[id(cell)]
        if entry not in order:
            order.append(entry)

    previous = ms.get_context('mode')
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        backbone.set_train(False)
        for _, cell, _ in owned.values():
            handles.append(cell.register_forward_pre_hook(hook))
        backbone(ms.Tensor(np.zeros((1, 3, input_size, input_size), np.float32)))
    finally:
        for h in handles:
            h.remove()
        ms.set_context(mode=previous)
    missing = [n for n, _, _ in owned.values() if all(n != o[0] for o in order)]
    if missing:
        raise ConversionError(f'cells never called in the forward pass: {missing}')
    for prefix, holder in pos_embeds:
        join = (prefix + '.') if prefix else ''
        at = next((k for k, o in enumerate(order) if o[0] == join + 'patch_embed'), None)
        if at is None:
            raise ConversionError(f'{join}pos_embed: no {join}patch_embed convolution to place it after')
        order.insert(at + 1, (join + 'pos_embed', holder, 'posembed'))
    return order


def _context_problem(cell, parent, layer):
    """Why the graph around linear ``layer`` computes something else than facekit around ``cell``, or None.

    Weights fix the projections; these are the parts that are no weight: the attention's head count,
    scale and softmax axis after a qkv projection, the MLP activation after fc1.
    """
    from mindspore import nn
    from ..models.backbones.vit import Attention, Mlp
    if isinstance(parent, Attention) and cell is parent.qkv:
        heads, softmax = layer.attrs.get('heads'), layer.attrs.get('softmax')
        if heads is None or softmax is None:
            return 'the graph has no multi-head attention (Reshape to heads, Softmax) after this projection'
        if (heads, layer.attrs['head_dim']) != (parent.num_heads, parent.head_dim):
            return (f'{parent.num_heads} heads of width {parent.head_dim} in facekit vs {heads} of width '
                    f"{layer.attrs['head_dim']} in the graph")
        if softmax['axis'] not in (-1, 3):
            return f"the graph's attention softmax runs over axis {softmax['axis']}, not the keys (last axis)"
        if not np.isclose(softmax['scale'], parent.scale, rtol=1e-5):
            return f"attention scale {parent.scale:.6g} in facekit vs {softmax['scale']:.6g} in the graph"
    if isinstance(parent, Mlp) and cell is parent.fc1:
        ours = {nn.ReLU6: 'relu6', nn.GELU: 'gelu', nn.ReLU: 'relu'}.get(type(parent.act), type(parent.act).__name__)
        theirs = layer.attrs.get('activation', 'none found')
        if theirs != ours:
            return f'MLP activation {ours} in facekit vs {theirs} in the graph'
    return None


def map_layers(backbone, layers, input_affine=(1.0, 0.0), input_size=112):
    """Pair ONNX layers with backbone cells and compute the backbone's parameter values.

    Args:
        backbone: the facekit backbone to fill (its shapes define the expected layers).
        layers: from ``read_onnx_layers``.
        input_affine: (a, b) normalization baked into the graph, ``a * pixel + b``.
    Returns:
        dict: backbone parameter name -> float32 ndarray (every parameter of the backbone).
    """
    ours = facekit_layers(backbone, input_size)
    cells = dict(backbone.cells_and_names())
    a, b = input_affine
    # facekit feeds v = (pixel - 127.5) / 127.5; the graph's first layer sees a * pixel + b
    # = 127.5 a v + (127.5 a + b). A zero offset is a pure scale, exact to fold into the first
    # conv (zero padding stays zero); a non-zero offset would change the border pixels.
    in_scale, in_offset = 127.5 * a, 127.5 * a + b
    if (a, b) != (1.0, 0.0) and abs(in_offset) > 1e-3 * max(1.0, abs(in_scale)):
        raise ConversionError(f'the graph normalizes its input as {a:.6g} * x + {b:.6g}, which is not '
                              '(x - 127.5) * s; feed it facekit-normalized input instead and re-export')
    if (a, b) == (1.0, 0.0):
        in_scale = 1.0
    out = {}
    theirs = list(layers)
    j = 0
    i = 0

    def fail(msg):
        ctx = ', '.join(t.describe() for t in theirs[max(0, j - 1):j + 2])
        raise ConversionError(f'{msg} (ONNX layers near #{j}: {ctx})')

    def set_bn(prefix, cell, gamma, beta, mean, var):
        out[f'{prefix}.gamma'] = gamma
        out[f'{prefix}.beta'] = beta
        out[f'{prefix}.moving_mean'] = mean
        out[f'{prefix}.moving_variance'] = var

    def next_is_attached_bn(layer):
        return (j + 1 < len(theirs) and theirs[j + 1].kind == 'bn' and theirs[j + 1].input == layer.output)

    while i < len(ours):
        name, cell, kind = ours[i]
        if j >= len(theirs):
            fail(f'the ONNX graph ends before facekit layer {name} ({kind})')
        t = theirs[j]
        if t.kind != kind:
            fail(f'facekit layer {name} is a {kind}, the next ONNX layer is a {t.kind}')
        if kind == 'conv':
            w = t.arrays['weight']
            if tuple(w.shape) != tuple(cell.weight.shape) or t.attrs['group'] != cell.group:
                fail(f'{name}: weight {tuple(cell.weight.shape)} group {cell.group} vs ONNX '
                     f"{tuple(w.shape)} group {t.attrs['group']}")
            if in_scale != 1.0 and not out:
                w = w * np.float32(in_scale)
            out[f'{name}.weight'] = w
            bias = t.arrays.get('bias')
            if cell.bias is not None:
                out[f'{name}.bias'] = bias if bias is not None else np.zeros(w.shape[0], np.float32)
            elif bias is not None:
                nxt = ours[i + 1] if i + 1 < len(ours) else None
                if nxt is None or nxt[2] != 'bn':
                    fail(f'{name} has no bias and no BatchNorm after it, but the ONNX conv has a bias')
                bn_name, bn_cell, _ = nxt
                if next_is_attached_bn(t):
                    # conv bias followed by a kept BN: shift the BN's mean instead.
                    bn = theirs[j + 1]
                    eps_shift = bn.attrs['epsilon'] - bn_cell.eps
                    set_bn(bn_name, bn_cell, bn.arrays['scale'], bn.arrays['bias'],
                           bn.arrays['mean'] - bias, bn.arrays['var'] + np.float32(eps_shift))
                    j += 1
                else:
                    # BN folded into the conv by the exporter: identity BN that adds the bias.
                    c = bias.shape[0]
                    set_bn(bn_name, bn_cell, np.ones(c, np.float32), bias.astype(np.float32),
                           np.zeros(c, np.float32), np.full(c, 1.0 - bn_cell.eps, np.float32))
                i += 1
        elif kind == 'bn':
            arr = t.arrays
            if arr['scale'].shape[0] != cell.gamma.shape[0]:
                fail(f'{name}: {cell.gamma.shape[0]} channels vs ONNX {arr["scale"].shape[0]}')
            # Keep var + eps equal when the epsilons differ (e.g. 2e-5 vs 1e-5).
            var = arr['var'] + np.float32(t.attrs['epsilon'] - cell.eps)
            set_bn(name, cell, arr['scale'], arr['bias'], arr['mean'], var)
        elif kind == 'prelu':
            slope = t.arrays['slope']
            if slope.shape[0] == 1:
                # One shared slope (torch nn.PReLU() without num_parameters): ONNX broadcasts it.
                slope = np.full(cell.w.shape[0], slope[0], np.float32)
            if slope.shape[0] != cell.w.shape[0]:
                fail(f'{name}: {cell.w.shape[0]} slopes vs ONNX {slope.shape[0]}')
            out[f'{name}.w'] = slope
        elif kind == 'layernorm':
            d = cell.gamma.shape[0]
            gamma = t.arrays.get('weight', np.ones(d, np.float32))
            beta = t.arrays.get('bias', np.zeros(d, np.float32))
            if gamma.shape != (d,) or beta.shape != (d,):
                fail(f'{name}: LayerNorm over {d} vs ONNX weight {gamma.shape} bias {beta.shape}')
            # (x - m) / sqrt(v + eps) has no weight that could absorb another eps: refuse a mismatch.
            if not np.isclose(t.attrs['epsilon'], cell.epsilon, rtol=1e-5, atol=0.0):
                fail(f"{name}: LayerNorm epsilon {cell.epsilon:g} in facekit vs {t.attrs['epsilon']:g} in the graph; "
                     'an epsilon is not a weight, so the conversion would not be exact')
            out[f'{name}.gamma'] = gamma
            out[f'{name}.beta'] = beta
        elif kind == 'posembed':
            value = t.arrays['value']
            if tuple(value.shape) != tuple(cell.pos_embed.shape):
                fail(f'{name}: {tuple(cell.pos_embed.shape)} vs ONNX {tuple(value.shape)}')
            out[name] = value
        else:  # linear
            w = t.arrays['weight']
            if tuple(w.shape) != tuple(cell.weight.shape):
                fail(f'{name}: weight {tuple(cell.weight.shape)} vs ONNX {tuple(w.shape)}')
            problem = _context_problem(cell, cells.get(name.rpartition('.')[0]), t)
            if problem:
                fail(f'{name}: {problem}')
            out[f'{name}.weight'] = w
            bias = t.arrays.get('bias')
            if cell.bias is not None:
                out[f'{name}.bias'] = bias if bias is not None else np.zeros(w.shape[0], np.float32)
            elif bias is not None:
                nxt = ours[i + 1] if i + 1 < len(ours) else None
                if nxt is None or nxt[2] != 'bn' or not next_is_attached_bn(t):
                    fail(f'{name} has no bias but the ONNX linear layer has one')
                bn_name, bn_cell, _ = nxt
                bn = theirs[j + 1]
                set_bn(bn_name, bn_cell, bn.arrays['scale'], bn.arrays['bias'], bn.arrays['mean'] - bias,
                       bn.arrays['var'] + np.float32(bn.attrs['epsilon'] - bn_cell.eps))
                i += 1
                j += 1
        i += 1
        j += 1
    if j != len(theirs):
        extra = ', '.join(t.describe() for t in theirs[j:j + 5])
        raise ConversionError(f'{len(theirs) - j} ONNX layers are left after the last facekit layer: {extra}')
    for pname, p in backbone.parameters_and_names():
        if pname.rpartition('.')[2] == 'mask_token' and pname not in out:
            out[pname] = np.zeros(p.shape, np.float32)  # training-only; see _TOKEN_PARAMS
    expected = {n for n, _ in backbone.parameters_and_names()}
    missing = sorted(expected - set(out))
    if missing:
        raise ConversionError(f'no ONNX values for facekit parameters: {missing[:10]}')
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def convert_onnx_to_backbone(onnx_path, backbone, input_size=112):
    """Fill ``backbone`` from an ONNX file.

    Returns:
        (params, input_affine): the parameter dict (names of ``backbone``) that was loaded, and the
        (a, b) input normalization found in the graph.
    """
    import mindspore as ms
    layers, affine = read_onnx_layers(onnx_path)
    params = map_layers(backbone, layers, affine, input_size)
    for name, p in backbone.parameters_and_names():
        p.set_data(ms.Tensor(params[name]).astype(p.dtype))
    return params, affine


def onnx_reference_output(onnx_path, batch, input_affine):
    """Run the ONNX file on the facekit-normalized ``batch`` (N, 3, H, W), converting the input to the
    graph's own convention (raw pixels when normalization is baked in). Returns (N, E) float32.

    Images run one by one: PyTorch's exporter bakes the example's batch (1) into Reshape constants
    (arcface_torch's ViT: (1, 144, 3, 8, 32)) even where ``torch2onnx.py`` names the input's batch
    dimension 'None', and in eval mode an embedding does not depend on the rest of the batch.
    """
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    x = np.asarray(batch, np.float32)
    if tuple(input_affine) != (1.0, 0.0):
        x = x * 127.5 + 127.5  # back to pixels; the graph normalizes itself
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[k:k + 1]})[0] for k in range(len(x))])
