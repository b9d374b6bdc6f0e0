"""ONNX import of graphs facekit did not export: each mapping rule against onnxruntime on the same input.

Every model here is written node by node with ``onnx.helper`` and known random weights, in the
shapes PyTorch's exporter produces for arcface_torch backbones: BatchNormalization with epsilon
2e-5 (facekit's BNs use MindSpore's 1e-5), BNs folded into the convolution or kept, Linear as
Gemm or as MatMul + Add, PRelu with per-channel slopes of both signs. The reference is
onnxruntime running the file itself, never a facekit function.

The BN variances are small (2e-5 .. 6e-5) on purpose: there an epsilon of 2e-5 against 1e-5
changes sqrt(var + eps) by 8-20 %, so an importer that ignored the mismatch would be far off.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from facekit.apis.onnx_import import convert_onnx_to_backbone
from facekit.models.backbones.layers import PReLU
from facekit.registry import BACKBONES

from required import require_module

onnx = require_module('onnx')
ort = require_module('onnxruntime')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

C1, C2, EMB = 4, 5, 6
ONNX_EPS = 2e-5
X = np.random.default_rng(7).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)


@BACKBONES.register_module(name='_onnx_foreign_net', force=True)
class ForeignNet(nn.Cell):
    """conv 4x4/4 -> BN -> PReLU -> conv 4x4/4 -> BN -> PReLU -> flatten -> Linear -> BN1d: (B, 3, 112, 112) -> (B, 6)."""

    def __init__(self, fc_bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, C1, 4, stride=4, pad_mode='valid', has_bias=False)
        self.bn1 = nn.BatchNorm2d(C1)
        self.act1 = PReLU(C1)
        self.conv2 = nn.Conv2d(C1, C2, 4, stride=4, pad_mode='valid', has_bias=False)
        self.bn2 = nn.BatchNorm2d(C2)
        self.act2 = PReLU(C2)
        self.fc = nn.Dense(C2 * 7 * 7, EMB, has_bias=fc_bias)
        self.features = nn.BatchNorm1d(EMB)

    def construct(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.features(self.fc(ops.flatten(x, start_dim=1)))


def _weights(seed=0):
    rng = np.random.default_rng(seed)

    def bn(c):
        return dict(scale=rng.uniform(0.005, 0.02, c), bias=rng.normal(0, 0.1, c),
                    mean=rng.normal(0, 0.05, c), var=rng.uniform(2e-5, 6e-5, c))
    w = dict(conv1=rng.normal(0, 0.1, (C1, 3, 4, 4)), conv1_b=rng.normal(0, 0.1, C1), bn1=bn(C1),
             slope1=np.array([0.1, -0.3, 0.5, 2.0]),
             conv2=rng.normal(0, 0.1, (C2, C1, 4, 4)), conv2_b=rng.normal(0, 0.1, C2), bn2=bn(C2),
             slope2=np.array([0.25, 0.0, 1.5, -0.5, 0.7]),
             fc=rng.normal(0, 0.1, (EMB, C2 * 49)), fc_b=rng.normal(0, 0.1, EMB),
             bn3=dict(scale=rng.uniform(0.5, 2, EMB), bias=rng.normal(0, 0.1, EMB),
                      mean=rng.normal(0, 0.1, EMB), var=rng.uniform(2e-5, 6e-5, EMB)))
    return w


def _fold(w, b, bn):
    """Fold BN (eps 2e-5) into conv weight w and bias b, as torch.onnx.export does in eval mode."""
    k = bn['scale'] / np.sqrt(bn['var'] + ONNX_EPS)
    return w * k[:, None, None, None], (b - bn['mean']) * k + bn['bias']


def build_onnx(path, fold_bn=False, conv_bias=False, linear='gemm', shared_slope=False):
    """Write the ForeignNet graph to ``path``.

    Args:
        fold_bn: BN2d layers folded into their conv (conv gains a bias, no BN node).
        conv_bias: (unfolded) conv layers carry a bias followed by a kept BN.
        linear: 'gemm' (transB=1 with bias) or 'matmul_add' (MatMul on W^T then Add).
        shared_slope: the second PRelu has one slope (1,) for all channels (torch ``nn.PReLU()``).
    """
    w = _weights()
    if shared_slope:
        w['slope2'] = np.array([-0.4])
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def bn_node(x, name, p):
        names = [const(f'{name}.{k}', p[k]) for k in ('scale', 'bias', 'mean', 'var')]
        nodes.append(helper.make_node('BatchNormalization', [x] + names, [f'{name}_out'], name=name,
                                      epsilon=ONNX_EPS))
        return f'{name}_out'

    x = 'data'
    for i, (cin, cout) in enumerate([(3, C1), (C1, C2)], 1):
        weight, bias, bn = w[f'conv{i}'], w[f'conv{i}_b'], w[f'bn{i}']
        if fold_bn:
            weight, bias = _fold(weight, bias, bn)
        inputs = [x, const(f'conv{i}.w', weight)]
        if fold_bn or conv_bias:
            inputs.append(const(f'conv{i}.b', bias))
        nodes.append(helper.make_node('Conv', inputs, [f'conv{i}_out'], name=f'conv{i}', kernel_shape=[4, 4],
                                      strides=[4, 4], pads=[0, 0, 0, 0], group=1))
        x = f'conv{i}_out'
        if not fold_bn:
            x = bn_node(x, f'bn{i}', bn)
        slope = w[f'slope{i}'].reshape(-1, 1, 1) if w[f'slope{i}'].size > 1 else w[f'slope{i}']
        nodes.append(helper.make_node('PRelu', [x, const(f'prelu{i}.slope', slope)], [f'prelu{i}_out'],
                                      name=f'prelu{i}'))
        x = f'prelu{i}_out'
    nodes.append(helper.make_node('Flatten', [x], ['flat'], name='flatten', axis=1))
    if linear == 'gemm':
        nodes.append(helper.make_node('Gemm', ['flat', const('fc.w', w['fc']), const('fc.b', w['fc_b'])], ['fc_out'],
                                      name='fc', transB=1))
    else:
        nodes.append(helper.make_node('MatMul', ['flat', const('fc.wt', w['fc'].T)], ['mm_out'], name='fc_mm'))
        nodes.append(helper.make_node('Add', ['mm_out', const('fc.b', w['fc_b'])], ['fc_out'], name='fc_add'))
    out = bn_node('fc_out', 'bn3', w['bn3'])
    nodes.append(helper.make_node('Identity', [out], ['embedding'], name='output'))
    graph = helper.make_graph(nodes, 'foreign', [helper.make_tensor_value_info('data', TensorProto.FLOAT,
                                                                              ['N', 3, 112, 112])],
                              [helper.make_tensor_value_info('embedding', TensorProto.FLOAT, ['N', EMB])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)], producer_name='test')
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def run_ort(path, x):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(['embedding'], {'data': x})[0]


def convert_and_compare(path, fc_bias=True):
    ms.set_seed(5)
    net = BACKBONES.build(dict(type='_onnx_foreign_net', fc_bias=fc_bias))
    net.set_train(False)
    ref = run_ort(path, X)
    before = net(ms.Tensor(X)).asnumpy()
    assert np.abs(before - ref).max() > 0.1 * np.abs(ref).max()   # the fresh model was really different
    params, affine = convert_onnx_to_backbone(path, net)
    assert tuple(affine) == (1.0, 0.0)
    ours = net(ms.Tensor(X)).asnumpy()
    assert np.abs(ref).max() > 0.1            # a non-degenerate output
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    return params, net


@pytest.mark.parametrize('linear', ['gemm', 'matmul_add'])
def test_unfolded_bn_with_eps_2e5(tmp_path, linear):
    path = build_onnx(tmp_path / 'm.onnx', linear=linear)
    ops_ = [n.op_type for n in onnx.load(path).graph.node]
    assert ops_.count('BatchNormalization') == 3 and ('Gemm' in ops_) == (linear == 'gemm')
    params, net = convert_and_compare(path)
    # The rule, worked by hand: var + eps stays equal, so facekit's var = var + 2e-5 - 1e-5.
    w = _weights()
    np.testing.assert_allclose(params['bn1.moving_variance'] + net.bn1.eps, w['bn1']['var'] + ONNX_EPS, rtol=1e-5)
    np.testing.assert_array_equal(params['act1.w'], w['slope1'].astype(np.float32))


def test_folded_bn(tmp_path):
    path = build_onnx(tmp_path / 'folded.onnx', fold_bn=True)
    assert [n.op_type for n in onnx.load(path).graph.node].count('BatchNormalization') == 1
    params, net = convert_and_compare(path)
    np.testing.assert_allclose(params['bn1.gamma'], 1.0)
    np.testing.assert_allclose(params['bn1.moving_variance'] + net.bn1.eps, 1.0, atol=1e-7)


def test_conv_bias_then_kept_bn(tmp_path):
    # conv bias b then BN(mean): facekit's BN sees conv without bias, so its mean becomes mean - b.
    path = build_onnx(tmp_path / 'convbias.onnx', conv_bias=True)
    params, _ = convert_and_compare(path)
    w = _weights()
    np.testing.assert_allclose(params['bn1.moving_mean'], w['bn1']['mean'] - w['conv1_b'], rtol=1e-6)


@pytest.mark.parametrize('linear', ['gemm', 'matmul_add'])
def test_linear_bias_into_bias_free_dense_then_bn(tmp_path, linear):
    # the bias-free Dense cannot hold the ONNX bias b: the BN after it takes it as mean - b
    path = build_onnx(tmp_path / 'fcbias.onnx', linear=linear)
    params, _ = convert_and_compare(path, fc_bias=False)
    w = _weights()
    assert 'fc.bias' not in params
    np.testing.assert_allclose(params['features.moving_mean'], w['bn3']['mean'] - w['fc_b'], rtol=1e-6, atol=1e-7)


def test_one_shared_prelu_slope_is_broadcast(tmp_path):
    path = build_onnx(tmp_path / 'shared.onnx', shared_slope=True)
    params, _ = convert_and_compare(path)
    np.testing.assert_array_equal(params['act2.w'], np.full(C2, -0.4, np.float32))
