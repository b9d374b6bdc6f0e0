"""Export a backbone to MindIR or ONNX for deployment, and check the file against the framework.

The exported model has one input and one output:
    data       (N, 3, 112, 112) float32, RGB, normalized (x / 255 - 0.5) / 0.5
    embedding  (N, E) float32, raw (not L2-normalized: normalize x / ||x|| before cosine similarity)
N is fixed (``batch=N``) or free (``batch='dynamic'``).

MindSpore names the ONNX input after the ``construct`` argument (hence ``ExportCell.construct(data)``)
but gives the output an internal name and writes only static shapes (it refuses a ``None`` batch
for ONNX), with the batch size baked into Reshape targets. ``finalize_onnx`` renames the output,
marks the batch dimension symbolic and rewrites batch-dependent Reshape targets; the exported
file is then run at two batch sizes against the framework before it is accepted.
"""
import os
import os.path as osp

import numpy as np

INPUT_NAME = 'data'
OUTPUT_NAME = 'embedding'
BATCH_DIM = 'batch'
# Sentinel batch for ONNX export when the batch must become dynamic: a prime no backbone uses as
# a width, so a Reshape target entry equal to it (or a multiple of it) is the batch.
_SENTINEL_BATCH = 13


def _export_cell_class():
    from mindspore import nn, ops
    import mindspore as ms

    class ExportCell(nn.Cell):
        """Backbone wrapper fixing the exported input name (``data``) and an fp32 output."""

        def __init__(self, backbone, fp16=False):
            super().__init__()
            self.backbone = backbone
            self.fp16 = bool(fp16)
            if self.fp16:
                self.backbone.to_float(ms.float16)

        def construct(self, data):
            out = self.backbone(data)
            return ops.cast(out, ms.float32)
    return ExportCell


def make_export_cell(backbone, fp16=False):
    """Wrap ``backbone`` (eval mode) for export: input argument ``data``, fp32 output.

    Args:
        backbone: a built backbone cell.
        fp16: run the backbone's layers in float16 (parameters stay stored in float32 and are
            cast in the graph; input and output stay float32). This converts ``backbone`` itself
            (``to_float``), so later calls of it compute in float16 too.
    """
    cell = _export_cell_class()(backbone, fp16=fp16)
    cell.set_train(False)
    return cell


def _constant_value(graph, name):
    """(node_or_initializer, ndarray) of a constant tensor named ``name``, or (None, None)."""
    from onnx import numpy_helper
    for init in graph.initializer:
        if init.name == name:
            return init, numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == 'Constant' and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == 'value':
                    return node, numpy_helper.to_array(attr.t)
    return None, None


def _set_constant(holder, value):
    from onnx import numpy_helper
    if hasattr(holder, 'op_type'):
        for attr in holder.attribute:
            if attr.name == 'value':
                attr.t.CopyFrom(numpy_helper.from_array(value, attr.t.name))
    else:
        holder.CopyFrom(numpy_helper.from_array(value, holder.name))


def finalize_onnx(model, export_batch, dynamic):
    """Rename the output to ``embedding`` and (if ``dynamic``) free the batch dimension.

    Args:
        model: ``onnx.ModelProto`` straight from ``mindspore.export`` with a static batch.
        export_batch: the batch size the model was exported with.
        dynamic: make dimension 0 of input and output symbolic (``batch``).
    Returns:
        the edited model (edited in place).
    """
    import onnx
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f'expected one input and one output, got inputs {[i.name for i in graph.input]} '
                         f'and outputs {[o.name for o in graph.output]}')
    if graph.input[0].name != INPUT_NAME:
        raise ValueError(f'exported input is named {graph.input[0].name!r}, expected {INPUT_NAME!r}')
    old_out = graph.output[0].name
    if old_out != OUTPUT_NAME:
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if o == old_out else o for o in node.output]
            node.input[:] = [OUTPUT_NAME if i == old_out else i for i in node.input]
        graph.output[0].name = OUTPUT_NAME
    if not dynamic:
        return model
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField('dim_value') else None for d in dims]
    for node in graph.node:
        if node.op_type != 'Reshape':
            continue
        holder, target = _constant_value(graph, node.input[1])
        if holder is None:
            continue  # a computed shape follows the input's batch already
        target = target.astype(np.int64).copy()
        src = shapes.get(node.input[0])
        if target[0] == export_batch and src and src[0] == export_batch:
            target[0] = 0  # ONNX Reshape: 0 copies the input's dimension (the batch)
        elif target[0] % export_batch == 0 and target[0] != 0 and -1 not in target:
            target[0] = -1  # batch folded with another dimension: let Reshape infer it
        else:
            continue
        _set_constant(holder, target)
    for vi in (graph.input[0], graph.output[0]):
        dim0 = vi.type.tensor_type.shape.dim[0]
        dim0.Clear()
        dim0.dim_param = BATCH_DIM
    # Intermediate shapes recorded with the export batch would contradict a dynamic one.
    del graph.value_info[:]
    return model


def fuse_prelu(model):
    """Replace MindSpore's PReLU pattern with single ``PRelu`` nodes (in place).

    facekit's PReLU is ``relu(x) - w * relu(-x)`` (faster to train on MindSpore CPU), which exports
    as Relu, Neg, Relu, Reshape(w), Mul, Sub. One ONNX ``PRelu`` computes the same function, is
    what other runtimes fuse and optimise, and is what ``tools/convert_weights.py`` reads, so
    facekit's own exports convert back. Returns the number of patterns replaced.
    """
    from onnx import helper, numpy_helper
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    users = {}
    for n in graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    inits = {i.name: i for i in graph.initializer}
    remove, replace, new_inits = set(), {}, []
    for sub in graph.node:
        if sub.op_type != 'Sub':
            continue
        pos, mul = producers.get(sub.input[0]), producers.get(sub.input[1])
        if pos is None or mul is None or pos.op_type != 'Relu' or mul.op_type != 'Mul':
            continue
        ins = [producers.get(i) for i in mul.input]
        reshape = next((p for p in ins if p is not None and p.op_type == 'Reshape'), None)
        neg_relu = next((p for p in ins if p is not None and p.op_type == 'Relu'), None)
        neg = producers.get(neg_relu.input[0]) if neg_relu is not None else None
        if reshape is None or neg is None or neg.op_type != 'Neg' or neg.input[0] != pos.input[0] \
                or reshape.input[0] not in inits:
            continue
        if any(users.get(t, 0) != 1 for t in (pos.output[0], mul.output[0], neg_relu.output[0],
                                                neg.output[0], reshape.output[0])):
            continue  # an intermediate is used elsewhere: not a private PReLU
        # The Reshape exists because x is NCHW: PRelu broadcasts a (C, 1, 1) slope the same way.
        slope = numpy_helper.to_array(inits[reshape.input[0]]).astype(np.float32).reshape(-1, 1, 1)
        name = f'{reshape.input[0]}.prelu_slope'
        new_inits.append(numpy_helper.from_array(slope, name))
        replace[id(sub)] = helper.make_node('PRelu', [pos.input[0], name], [sub.output[0]],
                                            name=f'PRelu_{len(new_inits)}')
        for n in (pos, mul, reshape, neg_relu, neg):
            remove.add(id(n))
        shape_src = producers.get(reshape.input[1])
        if shape_src is not None and shape_src.op_type == 'Constant' and users.get(reshape.input[1], 0) == 1:
            remove.add(id(shape_src))
    if not replace:
        return 0
    nodes = [replace.get(id(n), n) for n in graph.node if id(n) not in remove]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    return len(replace)


def run_onnx(path, batch):
    """Run an exported ONNX file with onnxruntime (CPU). batch: (N, 3, 112, 112) float32 -> (N, E)."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})[0]


def run_mindir(path, batch):
    """Run an exported MindIR file in MindSpore (``mindspore.load`` + ``nn.GraphCell``)."""
    import mindspore as ms
    from mindspore import nn
    cell = nn.GraphCell(ms.load(str(path)))
    return cell(ms.Tensor(np.ascontiguousarray(batch, np.float32))).asnumpy()


def export_backbone(backbone, path, fmt='onnx', batch='dynamic', fp16=False, input_size=112):
    """Write ``backbone`` to ``path`` in ``fmt``.

    Args:
        backbone: built backbone cell (weights loaded).
        path: output file; the extension is set to ``.onnx`` / ``.mindir``.
        fmt: 'onnx' or 'mindir'.
        batch: 'dynamic' or a fixed int batch size.
        fp16: compute in float16 (see ``make_export_cell``).
        input_size: input height/width in pixels.
    Returns:
        the written path.
    """
    import mindspore as ms
    fmt = str(fmt).lower()
    if fmt not in ('onnx', 'mindir'):
        raise ValueError(f"format must be 'onnx' or 'mindir', got {fmt!r}")
    dynamic = batch == 'dynamic'
    if not dynamic:
        batch = int(batch)
        if batch < 1:
            raise ValueError(f"batch must be 'dynamic' or a positive int, got {batch}")
    path = osp.splitext(str(path))[0]
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    cell = make_export_cell(backbone, fp16=fp16)
    shape = (_SENTINEL_BATCH if dynamic else batch, 3, input_size, input_size)
    if fmt == 'mindir':
        if dynamic:
            example = ms.Tensor(shape=[None, 3, input_size, input_size], dtype=ms.float32)
        else:
            example = ms.Tensor(np.zeros(shape, np.float32))
        ms.export(cell, example, file_name=path, file_format='MINDIR')
        return path + '.mindir'
    import onnx
    ms.export(cell, ms.Tensor(np.zeros(shape, np.float32)), file_name=path, file_format='ONNX')
    model = onnx.load(path + '.onnx')
    fuse_prelu(model)
    finalize_onnx(model, shape[0], dynamic)
    onnx.checker.check_model(model)
    onnx.save(model, path + '.onnx')
    return path + '.onnx'


def check_parity(backbone, paths, batch_sizes=(1, 2), fp16=False, seed=0, input_size=112):
    """Run exported files and the in-framework model on the same random batches.

    Args:
        backbone: the cell that was exported.
        paths: one ``.onnx`` / ``.mindir`` file or a list of them (the framework output is
            computed once per batch size and shared).
        batch_sizes: batches to try (a static export needs its own batch size here).
        fp16: compare with the fp16 framework model (as exported).
    Returns:
        for one path: dict batch size -> (max abs diff, max abs reference value);
        for a list: dict path -> such a dict.
    """
    import mindspore as ms
    single = isinstance(paths, (str, os.PathLike))
    paths = [str(paths)] if single else [str(p) for p in paths]
    cell = make_export_cell(backbone, fp16=fp16)
    rng = np.random.default_rng(seed)
    results = {p: {} for p in paths}
    for n in batch_sizes:
        x = rng.uniform(-1, 1, size=(n, 3, input_size, input_size)).astype(np.float32)
        ref = cell(ms.Tensor(x)).asnumpy()
        for path in paths:
            out = (run_onnx if path.endswith('.onnx') else run_mindir)(path, x)
            if out.shape != ref.shape:
                raise ValueError(f'{path}: output shape {out.shape} at batch {n}, framework gives {ref.shape}')
            results[path][n] = (float(np.abs(out - ref).max()), float(np.abs(ref).max()))
    return results[paths[0]] if single else results
