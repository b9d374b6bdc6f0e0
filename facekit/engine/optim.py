"""Optimizers with parameter groups (OPTIMIZERS registry).

A group is one (weight decay, lr multiplier) pair. ``build_param_groups`` splits a model's
trainable parameters into at most four groups: {backbone, head} x {decayed, not decayed}.
The learning rate of every group is a MindSpore Parameter owned by the optimizer; the Runner
writes ``schedule(iter) * group multiplier`` into it before each step (``set_lr``), so the
schedule lives in plain Python, is exact per iteration and resumes from any iteration.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from ..registry import OPTIMIZERS

__all__ = ['build_param_groups', 'build_optimizer', 'set_lr', 'get_lr', 'SGD', 'AdamW',
           'optimizer_state', 'is_no_decay', 'AdamWOptimizer', 'group_lr_params', 'check_accumulative_counts',
           'split_accumulative_counts']


def is_no_decay(name, param):
    """True for biases and the scale/shift/slope vectors of BN, LayerNorm and PReLU.

    All of those are 0-d or 1-d; every convolution/linear weight is >= 2-d. The reference
    trainers exclude exactly this set from weight decay.
    """
    return len(param.shape) <= 1 or name.endswith('.bias')


def build_param_groups(model, weight_decay, no_decay_norm_bias=True, head_lr_mult=1.0,
                       head_prefix='head.'):
    """Split ``model.trainable_params()`` into groups.

    Args:
        model: an ``nn.Cell`` whose head parameters start with ``head_prefix``.
        weight_decay: decay for the decayed groups.
        no_decay_norm_bias: put biases/BN/LN/PReLU vectors in a weight-decay 0 group.
        head_lr_mult: the head groups' learning rate is ``lr * head_lr_mult``.
        head_prefix: parameter-name prefix of the head.
    Returns:
        list of dicts ``{'params': [...], 'weight_decay': float, 'lr_mult': float, 'name': str}``,
        empty groups dropped, in a fixed order (backbone decay, backbone no-decay, head decay,
        head no-decay).
    """
    buckets = {}
    order = []
    for param in model.trainable_params():
        name = param.name
        part = 'head' if name.startswith(head_prefix) else 'backbone'
        decay = not (no_decay_norm_bias and is_no_decay(name, param))
        key = (part, decay)
        if key not in buckets:
            buckets[key] = []
        buckets[key].append(param)
    for part in ('backbone', 'head'):
        for decay in (True, False):
            params = buckets.get((part, decay))
            if not params:
                continue
            order.append(dict(params=params,
                              weight_decay=float(weight_decay) if decay else 0.0,
                              lr_mult=float(head_lr_mult) if part == 'head' else 1.0,
                              name=f"{part}_{'decay' if decay else 'no_decay'}"))
    if not order:
        raise ValueError(f'{type(model).__name__} has no trainable parameters to optimize')
    return order


def _ms_groups(groups, lr):
    out = []
    for g in groups:
        # A Tensor lr per group makes MindSpore create one lr Parameter per group, which
        # set_lr overwrites each iteration.
        out.append({'params': g['params'], 'weight_decay': g['weight_decay'],
                    'lr': ms.Tensor(np.float32(lr * g['lr_mult']))})
    return out


def _attach(opt, groups, lr):
    # Remembered for set_lr/get_lr and for tests that check what the optimizer really got.
    opt.facekit_groups = [dict(name=g['name'], weight_decay=g['weight_decay'], lr_mult=g['lr_mult'],
                               param_names=[p.name for p in g['params']]) for g in groups]
    opt.facekit_base_lr = float(lr)
    return opt


@OPTIMIZERS.register_module()
def SGD(model, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False, no_decay_norm_bias=True,
        head_lr_mult=1.0, head_prefix='head.'):
    """SGD with momentum over parameter groups.

    Args:
        model: the ``nn.Cell`` to optimize (its trainable parameters).
        lr: base learning rate (the schedule multiplies it per iteration).
        momentum: momentum factor.
        weight_decay: L2 decay of weights (coupled, as in torch.optim.SGD).
        nesterov: Nesterov momentum.
        no_decay_norm_bias: no decay for biases and BN/LN/PReLU vectors.
        head_lr_mult: lr multiplier for parameters named ``head_prefix*``.
    """
    groups = build_param_groups(model, weight_decay, no_decay_norm_bias, head_lr_mult, head_prefix)
    opt = nn.SGD(_ms_groups(groups, lr), learning_rate=lr, momentum=momentum, nesterov=nesterov,
                 weight_decay=0.0)
    return _attach(opt, groups, lr)


def _adamw_update(beta1, beta2, eps, bc1, bc2, lr, weight_decay, param, m, v, grad):
    """One torch-semantics AdamW update of ``param`` (decoupled decay, bias-corrected moments)."""
    grad = grad.astype(param.dtype)
    m_new = beta1 * m + (1.0 - beta1) * grad
    v_new = beta2 * v + (1.0 - beta2) * ops.square(grad)
    denom = ops.sqrt(v_new / bc2) + eps
    update = (m_new / bc1) / denom + weight_decay * param
    param_new = param - lr * update
    ops.assign(m, m_new)
    ops.assign(v, v_new)
    return ops.assign(param, param_new)


_adamw_opt = ops.MultitypeFuncGraph('facekit_adamw_opt')
_adamw_opt.register('Number', 'Number', 'Number', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor',
                    'Tensor', 'Tensor', 'Tensor')(_adamw_update)


class AdamWOptimizer(nn.Optimizer):
    """AdamW as in torch.optim.AdamW: bias-corrected moments, decoupled weight decay.

    MindSpore's ``nn.AdamWeightDecay`` has no bias correction (its first steps are
    ~(1-b1)/sqrt(1-b2) = 3.2x larger for the default betas), so the ViT recipes use this one.
    Moments are ``adam_m.<param>`` / ``adam_v.<param>``; the step count is ``adam_step``.
    """

    def __init__(self, params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(learning_rate, params, weight_decay)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)
        self.moments1 = self._parameters.clone(prefix='adam_m', init='zeros')
        self.moments2 = self._parameters.clone(prefix='adam_v', init='zeros')
        self.adam_step = ms.Parameter(ms.Tensor(np.float32(0.0)), name='adam_step', requires_grad=False)
        self.beta1_t = ms.Tensor(np.float32(beta1))
        self.beta2_t = ms.Tensor(np.float32(beta2))
        self.hyper_map = ops.HyperMap()
        self.opt = _adamw_opt

    def construct(self, gradients):
        lr = self.get_lr()
        wd = self.get_weight_decay()
        step = self.adam_step + 1.0
        ops.assign(self.adam_step, step)
        bc1 = 1.0 - ops.pow(self.beta1_t, step)
        bc2 = 1.0 - ops.pow(self.beta2_t, step)
        if not self.is_group_lr:
            lr = (lr,) * len(self._parameters)
        if not self.is_group:
            wd = (wd,) * len(self._parameters)
        return self.hyper_map(ops.partial(self.opt, self.beta1, self.beta2, self.eps, bc1, bc2),
                              lr, wd, self._parameters, self.moments1, self.moments2, gradients)


@OPTIMIZERS.register_module(name=['AdamW'])
def AdamW(model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, no_decay_norm_bias=True,
          head_lr_mult=1.0, head_prefix='head.'):
    """AdamW (torch semantics: bias correction, decoupled weight decay) over parameter groups.

    Args:
        model: the ``nn.Cell`` to optimize.
        lr: base learning rate.
        betas: (beta1, beta2) moment decay rates.
        eps: denominator epsilon.
        weight_decay: decoupled decay (param -= lr * wd * param).
        no_decay_norm_bias: no decay for biases and BN/LN/PReLU vectors.
        head_lr_mult: lr multiplier for parameters named ``head_prefix*``.
    """
    groups = build_param_groups(model, weight_decay, no_decay_norm_bias, head_lr_mult, head_prefix)
    opt = AdamWOptimizer(_ms_groups(groups, lr), learning_rate=lr, beta1=betas[0], beta2=betas[1],
                          eps=eps, weight_decay=0.0)
    return _attach(opt, groups, lr)


def check_accumulative_counts(value):
    """``value`` as the int k >= 1 of ``optimizer.accumulative_counts``; ValueError naming the key otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'optimizer.accumulative_counts must be an integer >= 1 (micro-batches per optimizer '
                         f'step), got {value!r}')
    return value


def split_accumulative_counts(cfg):
    """``(cfg without accumulative_counts, k)`` for an optimizer config (k defaults to 1).

    ``accumulative_counts`` (mmengine's name) is a setting of the training step, not of the
    MindSpore optimizer: the builder takes it out and the Runner hands it to ``TrainStep``.
    """
    cfg = dict(cfg)
    return cfg, check_accumulative_counts(cfg.pop('accumulative_counts', 1))


def build_optimizer(cfg, model):
    """Build ``cfg`` (``dict(type='SGD', lr=0.1, ...)``) for ``model``; ``accumulative_counts`` is
    validated and dropped (see ``split_accumulative_counts``)."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f"optimizer config must be a dict with 'type' (one of {OPTIMIZERS.keys()}), "
                         f'got {cfg!r}')
    cfg, _ = split_accumulative_counts(cfg)
    return OPTIMIZERS.build(cfg, default_args=dict(model=model))


def group_lr_params(opt):
    """One lr Parameter per group, in group order (MindSpore repeats it once per parameter)."""
    seen, out = set(), []
    lrs = opt.learning_rate
    if not opt.is_group_lr:
        return [lrs]
    for p in lrs:
        if p.name not in seen:
            seen.add(p.name)
            out.append(p)
    return out


def set_lr(opt, lr):
    """Set the optimizer's lr to ``lr`` (base value) times each group's multiplier (host side).

    Only for use before the optimizer's graph is compiled or in pynative mode: a compiled graph
    keeps the values it captured. The Runner passes the lr into ``TrainStep`` instead.
    """
    params = group_lr_params(opt)
    mults = [g['lr_mult'] for g in getattr(opt, 'facekit_groups', [dict(lr_mult=1.0)] * len(params))]
    for p, m in zip(params, mults):
        p.set_data(ms.Tensor(np.float32(lr * m)))


def get_lr(opt):
    """Per-group learning rates now in the optimizer, as Python floats."""
    return [float(p.asnumpy()) for p in group_lr_params(opt)]


def optimizer_state(opt, model_param_names):
    """The optimizer's own parameters (moments, step counter, lrs): name -> Parameter."""
    return {name: p for name, p in opt.parameters_and_names() if p.name not in model_param_names}
