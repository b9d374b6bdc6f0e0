"""Training-step parity with the reference trainer (arcface_torch train_v2.py), 3 steps from identical weights.

Both sides: iresnet18 (the real one, 24M parameters) + normalized FC over 10 classes (PartialFC at
sample rate 1) + ArcFace s=64 m=0.5, SGD momentum 0.9 with weight decay 5e-4 on every parameter,
gradient clipping at global norm 5 over the backbone only, a PolyLR lr of 0.1 decaying over 10
iterations, three batches of 8 images 112x112. The PyTorch side is ``arcface_torch_step_ref`` (a
transcription of the reference's step); facekit runs its own ``TrainStep`` (graph mode, fp32)
configured with ``REFERENCE_SETTINGS``, which docs/training.md documents.

The reference runs twice in lockstep from the same float32 weights: in float64 (its arithmetic
without rounding) and in float32 (as it runs on CPU). Compared after each step; weights per tensor,
relative to that tensor's largest absolute value in the reference, ``max|w_facekit - w_ref| / max|w_ref|``,
over every backbone parameter, the BN running means and variances and the class centres:
  * against float64: the loss to 1e-4 relative, every tensor to 1e-4 (measured <= 3.4e-5);
  * against float32: both to 1e-3 (measured <= 4e-4: PyTorch's fp32 CPU gradients of the conv and
    BN just before the stride-2 convolutions are off by up to 2.4% of their largest value against its
    own float64 run, facekit's by 2e-6; the small-valued ``backbone.fc.weight`` shows it most).
SGD momentum buffers are reported, not asserted: gradients of parameters that feed a training-mode
BN are small remainders of cancelling terms (up to 2% apart by step 3 against either run).
Weights start perturbed (BN scales/shifts, PReLU slopes, running statistics drawn at random), so a
swapped or missed name in the mapping changes the result.
"""
import copy

import numpy as np
import pytest

import mindspore as ms

from required import require_module  # noqa: E402

torch = require_module('torch')    # the reference step runs in PyTorch (the test extra installs it)

from arcface_torch_step_ref import (build_reference_optimizer, CombinedMarginLoss as TorchMargin,  # noqa: E402
                                    iresnet18 as torch_iresnet18, PartialFCV2, poly_lr, reference_step)
from facekit.engine.amp import parse_loss_scale  # noqa: E402
from facekit.engine.lr_schedules import PolyLR  # noqa: E402
from facekit.engine.optim import build_optimizer  # noqa: E402
from facekit.engine.train_step import TrainStep  # noqa: E402
from facekit.models.recognizer import FaceRecognizer  # noqa: E402

pytestmark = pytest.mark.slow

NUM_CLASSES, BATCH, STEPS, BASE_LR, MAX_ITERS = 10, 8, 3, 0.1, 10
TOL = 1e-4
FP32_TOL = 1e-3

# The facekit settings that reproduce the reference step (docs/training.md, "Reproducing the reference step").
REFERENCE_SETTINGS = dict(
    head=dict(type='PartialFCHead', embedding_size=512, num_classes=NUM_CLASSES, sample_rate=1.0),
    loss=dict(type='ArcFaceLoss', s=64.0, m=0.5, straight_through=True),
    optimizer=dict(type='SGD', lr=BASE_LR, momentum=0.9, weight_decay=5e-4, nesterov=False,
                   no_decay_norm_bias=False, head_lr_mult=1.0),
    runtime=dict(clip_grad_norm=5.0, clip_prefixes=['backbone.'], loss_scale=None, mode='graph'),
)

_BN = {'weight': 'gamma', 'bias': 'beta', 'running_mean': 'moving_mean', 'running_var': 'moving_variance'}


def torch_to_facekit_name(key, bn_modules):
    """Reference state_dict key -> facekit FaceRecognizer parameter name (None: no counterpart).

    ``bn_modules``: the reference's BatchNorm module paths. PReLU ``weight`` is facekit's ``w``;
    ``num_batches_tracked`` has no counterpart (PyTorch uses it only when momentum is None).
    """
    if key == 'weight':                      # PartialFCV2's class centres
        return 'head.weight'
    module, _, leaf = key.rpartition('.')
    if leaf == 'num_batches_tracked':
        return None
    if module in bn_modules:
        leaf = _BN[leaf]
    elif module.endswith('prelu'):
        leaf = 'w'
    return f'backbone.{module}.{leaf}'


def _bn_modules(backbone):
    return {n for n, m in backbone.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def _reference_state(backbone, pfc):
    """name (facekit) -> ndarray, for every backbone tensor (params and buffers) and the class centres."""
    bns = _bn_modules(backbone)
    out = {}
    for key, value in list(backbone.state_dict().items()) + list(pfc.state_dict().items()):
        name = torch_to_facekit_name(key, bns)
        if name is not None:
            out[name] = value.detach().numpy().copy()
    return out


def _reference_momentum(backbone, pfc, opt):
    bns = _bn_modules(backbone)
    names = {id(p): torch_to_facekit_name(k, bns) for k, p in backbone.named_parameters()}
    names[id(pfc.weight)] = 'head.weight'
    return {names[id(p)]: s['momentum_buffer'].numpy().copy() for p, s in opt.state.items() if 'momentum_buffer' in s}


def _build_reference(seed=0):
    torch.manual_seed(seed)
    backbone = torch_iresnet18(num_features=512)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        # non-trivial BN/PReLU values and running statistics, so gamma/beta or mean/var swaps show
        for name, m in backbone.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                if name != 'features':       # its scale stays fixed at 1, as in the reference
                    m.weight.copy_(torch.from_numpy(rng.uniform(0.8, 1.2, c).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.05, c).astype(np.float32)))
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, c).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c).astype(np.float32)))
            elif isinstance(m, torch.nn.PReLU):
                m.weight.copy_(torch.from_numpy(rng.uniform(0.1, 0.4, m.weight.shape).astype(np.float32)))
    pfc = PartialFCV2(TorchMargin(64.0, 1.0, 0.5, 0.0), 512, NUM_CLASSES)
    backbone.train()
    pfc.train()
    return backbone, pfc


def _build_facekit(state):
    model = FaceRecognizer(dict(type='iresnet18', embedding_size=512), REFERENCE_SETTINGS['head'],
                           REFERENCE_SETTINGS['loss'])
    params = dict(model.parameters_and_names())
    missing = sorted(set(params) - set(state))
    unused = sorted(set(state) - set(params))
    assert not missing and not unused, \
        f'name mapping incomplete: facekit-only {missing[:5]}, reference-only {unused[:5]}'
    for name, value in state.items():
        assert params[name].shape == value.shape, (name, params[name].shape, value.shape)
        params[name].set_data(ms.Tensor(value))
    model.set_train(True)
    opt = build_optimizer(REFERENCE_SETTINGS['optimizer'], model)
    rt = REFERENCE_SETTINGS['runtime']
    step = TrainStep(model, opt, parse_loss_scale(rt['loss_scale']), clip_grad_norm=rt['clip_grad_norm'],
                     clip_prefixes=tuple(rt['clip_prefixes']))
    return model, opt, step


def _batches(seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        img = rng.uniform(-1, 1, (BATCH, 3, 112, 112)).astype(np.float32)
        label = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
        out.append((img, label))
    return out


def _facekit_momentum(opt):
    # nn.SGD keeps one 'accum.<param>' momentum buffer per parameter
    return {p.name[len('accum.'):]: p.asnumpy().copy() for p in opt.accum}


def _rel_diffs(ours, ref):
    """name -> max|a - b| / max|b| for every name of ``ref`` (tensors that are all zero: absolute)."""
    out = {}
    for name, b in ref.items():
        a = ours[name]
        scale = float(np.abs(b).max())
        out[name] = float(np.abs(a - b).max()) / (scale if scale > 0 else 1.0)
    return out


def _groups(diffs):
    g = {'backbone params': 0.0, 'bn running stats': 0.0, 'head': 0.0}
    for name, d in diffs.items():
        key = 'head' if name.startswith('head.') else (
            'bn running stats' if name.endswith(('moving_mean', 'moving_variance')) else 'backbone params')
        g[key] = max(g[key], d)
    return g


def run_parity(steps=STEPS):
    """Run ``steps`` steps of facekit and of the reference in float64 and in float32, in lockstep.

    Returns per step ``{dtype name: (loss_ref, loss_facekit, weight diffs, momentum diffs)}``; the
    reference copies start from the same float32 weights.
    """
    ms.set_context(mode=ms.GRAPH_MODE)
    torch.set_num_threads(2)
    backbone, pfc = _build_reference()
    model, opt, step = _build_facekit(_reference_state(backbone, pfc))
    refs = {}
    for name, dtype in (('float64', torch.float64), ('float32', torch.float32)):
        bb, fc = copy.deepcopy(backbone).to(dtype), copy.deepcopy(pfc).to(dtype)
        refs[name] = (dtype, bb, fc, build_reference_optimizer(bb, fc, lr=BASE_LR, weight_decay=5e-4))
    schedule = PolyLR(BASE_LR, MAX_ITERS)
    results = []
    for it, (img, label) in enumerate(_batches()[:steps]):
        lr = schedule(it)
        assert abs(lr - poly_lr(BASE_LR, it, MAX_ITERS)) < 1e-12
        loss, finite = step(ms.Tensor(img), ms.Tensor(label), ms.Tensor(np.float32(lr)))
        assert bool(finite.asnumpy())
        ours = {n: p.asnumpy() for n, p in model.parameters_and_names()}
        ours_mom = _facekit_momentum(opt)
        row = {}
        for name, (dtype, bb, fc, topt) in refs.items():
            loss_ref = reference_step(bb, fc, topt, torch.from_numpy(img).to(dtype),
                                      torch.from_numpy(label.astype(np.int64)), lr)
            row[name] = (loss_ref, float(loss.asnumpy()), _rel_diffs(ours, _reference_state(bb, fc)),
                         _rel_diffs(ours_mom, _reference_momentum(bb, fc, topt)))
        results.append(row)
    return results


def _report(results, dtype):
    lines = []
    for i, row in enumerate(results):
        loss_ref, loss_fk, diffs, mom = row[dtype]
        worst = max(diffs, key=diffs.get)
        lines.append(f'{dtype} reference, step {i + 1}: loss ref {loss_ref:.7f} facekit {loss_fk:.7f} '
                     f'rel {abs(loss_fk - loss_ref) / abs(loss_ref):.1e}; '
                     + ', '.join(f'{k} {v:.1e}' for k, v in _groups(diffs).items())
                     + f'; worst {worst} {diffs[worst]:.1e}; momentum buffers {max(mom.values()):.1e}')
    return '\n'.join(lines)


def _check(results, dtype, tol):
    text = _report(results, dtype)
    for row in results:
        loss_ref, loss_fk, diffs, _ = row[dtype]
        assert abs(loss_fk - loss_ref) <= tol * abs(loss_ref), text
        bad = {n: d for n, d in diffs.items() if d > tol}
        assert not bad, f'{text}\nweights beyond {tol}: {dict(sorted(bad.items(), key=lambda kv: -kv[1])[:8])}'
    return text


@pytest.fixture(scope='module')
def parity_results():
    return run_parity()


def test_three_steps_match_the_reference_step(parity_results):
    """facekit fp32 against the reference's arithmetic in float64: losses and all weights to 1e-4."""
    print(_check(parity_results, 'float64', TOL))


def test_three_steps_match_the_reference_run_in_float32(parity_results):
    """Against the reference as it runs (PyTorch fp32 CPU): within FP32_TOL (see the module docstring)."""
    print(_check(parity_results, 'float32', FP32_TOL))
