"""Rewrite a MindSpore-exported ONNX graph into the shape PyTorch's exporter gives arcface_torch models.

Downloads are impossible here, so the import tests start from our own exported model (which
already has PReLU as single ``PRelu`` nodes, see ``facekit.apis.export.fuse_prelu``) and make it
look like an InsightFace file: BatchNorm folded into the preceding conv (torch eval-mode export),
opaque weight names, optionally Gemm as MatMul + Add and input normalization baked in as Sub/Mul.
"""
import numpy as np
import onnx
from onnx import helper, numpy_helper


def _consumers(graph):
    out = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _values(graph):
    vals = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == 'Constant':
            vals[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return vals


def _rebuild(graph, remove, replace):
    gone = {id(n) for n in remove if n is not None}
    nodes = []
    for n in graph.node:
        if id(n) in replace:
            nodes.append(replace[id(n)])
        elif id(n) not in gone:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)


def _fold_bn(graph):
    cons, vals = _consumers(graph), _values(graph)
    remove, replace, inits = [], {}, []
    for conv in [n for n in graph.node if n.op_type == 'Conv']:
        users = cons.get(conv.output[0], [])
        if len(users) != 1 or users[0].op_type != 'BatchNormalization':
            continue
        bn = users[0]
        g, b, m, v = (vals[i] for i in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == 'epsilon'), 1e-5)
        k = g / np.sqrt(v + eps)
        w = vals[conv.input[1]] * k[:, None, None, None]
        bias = b - m * k
        wn, bname = f'{conv.output[0]}_w', f'{conv.output[0]}_b'
        inits += [numpy_helper.from_array(w.astype(np.float32), wn), numpy_helper.from_array(bias.astype(np.float32), bname)]
        new = helper.make_node('Conv', [conv.input[0], wn, bname], [bn.output[0]], name=conv.name)
        new.attribute.extend(conv.attribute)
        replace[id(conv)] = new
        remove.append(bn)
    _rebuild(graph, remove, replace)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + inits)


def _gemm_to_matmul(graph):
    vals = _values(graph)
    replace, extra, inits = {}, {}, []
    for gemm in [n for n in graph.node if n.op_type == 'Gemm']:
        w = vals[gemm.input[1]]
        trans_b = next((a.i for a in gemm.attribute if a.name == 'transB'), 0)
        wt = (w.T if trans_b else w).astype(np.float32)
        wn = f'{gemm.output[0]}_wt'
        inits.append(numpy_helper.from_array(wt, wn))
        if len(gemm.input) > 2:
            mid = f'{gemm.output[0]}_mm'
            replace[id(gemm)] = helper.make_node('MatMul', [gemm.input[0], wn], [mid], name=f'{gemm.name}_mm')
            extra[id(gemm)] = helper.make_node('Add', [mid, gemm.input[2]], [gemm.output[0]], name=f'{gemm.name}_add')
        else:
            replace[id(gemm)] = helper.make_node('MatMul', [gemm.input[0], wn], [gemm.output[0]], name=gemm.name)
    nodes = []
    for n in graph.node:
        nodes.append(replace.get(id(n), n))
        if id(n) in extra:
            nodes.append(extra[id(n)])
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + inits)


def _rename_weights(graph):
    mapping = {i.name: f'onnx::W_{k}' for k, i in enumerate(graph.initializer)}
    for i in graph.initializer:
        i.name = mapping[i.name]
    for n in graph.node:
        n.input[:] = [mapping.get(x, x) for x in n.input]


def _bake_normalization(graph):
    old = graph.input[0].name
    raw = 'input.1'
    graph.initializer.extend([numpy_helper.from_array(np.array(127.5, np.float32), 'norm_mean'),
                              numpy_helper.from_array(np.array(1 / 127.5, np.float32), 'norm_scale')])
    sub = helper.make_node('Sub', [raw, 'norm_mean'], ['centred'], name='Sub_0')
    mul = helper.make_node('Mul', ['centred', 'norm_scale'], [old], name='Mul_1')
    nodes = [sub, mul] + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input[0].name = raw


def torchify(model, fold_bn=True, matmul=False, bake_normalization=False):
    """Return a rewritten copy of ``model`` (``onnx.ModelProto``); see the module docstring."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    if fold_bn:
        _fold_bn(g)
    if matmul:
        _gemm_to_matmul(g)
    _rename_weights(g)
    if bake_normalization:
        _bake_normalization(g)
    del g.value_info[:]
    onnx.checker.check_model(model)
    return model
