"""The compiled training step: loss, scaled gradients, all-reduce, health check, clipping, update.

``TrainStep`` is one ``nn.Cell``; in graph mode MindSpore compiles the whole step (forward,
backward, gradient reduction, clipping and the optimizer update) into one graph.

A step is *healthy* when the loss, every gradient and the forward-updated state (BatchNorm moving
statistics and any other non-trainable model parameter a forward writes, e.g. AdaFace's norm
statistics) are finite. An unhealthy step changes nothing but the loss scale: the update is
skipped and the forward-updated state is put back to its value before the step.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops
from mindspore.amp import all_finite

__all__ = ['TrainStep']

_sq = ops.MultitypeFuncGraph('sq')
_masked = ops.MultitypeFuncGraph('masked')
_clip_masked = ops.MultitypeFuncGraph('clip_masked')
_scale_grad = ops.MultitypeFuncGraph('scale_grad')


@_sq.register('Tensor')
def _sq_fn(grad):
    return ops.reduce_sum(ops.square(grad.astype(ms.float32)))


@_masked.register('Tensor', 'Tensor')
def _masked_fn(value, mask):
    return value * mask


@_clip_masked.register('Tensor', 'Tensor', 'Tensor')
def _clip_masked_fn(factor, grad, mask):
    # mask 1: clipped parameter (scaled by factor); mask 0: untouched.
    mult = mask * factor + (1.0 - mask)
    return grad * mult.astype(grad.dtype)


_assign_lr = ops.MultitypeFuncGraph('assign_lr')
_backup = ops.MultitypeFuncGraph('backup')
_restore = ops.MultitypeFuncGraph('restore')


@_backup.register('Tensor', 'Tensor')
def _backup_fn(backup, param):
    return ops.assign(backup, param)


@_restore.register('Tensor', 'Tensor', 'Tensor')
def _restore_fn(healthy, param, backup):
    # one select instead of a branch per parameter: keep the new value on a healthy step
    return ops.assign(param, ops.select(healthy.broadcast_to(param.shape), param, backup))


@_assign_lr.register('Tensor', 'Tensor', 'Tensor')
def _assign_lr_fn(lr, param, mult):
    return ops.assign(param, lr * mult)


@_scale_grad.register('Tensor', 'Tensor')
def _scale_grad_fn(inv_scale, grad):
    return grad * inv_scale.astype(grad.dtype)


class TrainStep(nn.Cell):
    """One optimizer step of ``model``.

    Args:
        model: cell with ``construct(img, label) -> scalar loss``.
        optimizer: MindSpore optimizer over (a subset of) ``model``'s parameters.
        loss_scale: ``LossScaleConfig`` (mode none/fixed/dynamic).
        clip_grad_norm: max global L2 norm of the clipped gradients, or None for no clipping.
        clip_prefixes: parameter-name prefixes whose gradients are clipped together
            (default ``('backbone.',)``, as the reference clips only the backbone).
        grad_reducer: cell averaging gradients across ranks (data parallel), or None.
        track_grad_norm: compute ``self.grad_norm`` (see below); False leaves it 0.

    ``construct(img, label, lr)`` (``lr`` a float32 scalar Tensor: the schedule's base lr for this
    step, written into every parameter group's lr times its multiplier inside the graph; a
    host-side ``Parameter.set_data`` after compilation is not seen by the compiled graph)
    returns ``(loss, finite)``: the unscaled loss (float32 scalar) and whether the step was
    healthy (bool scalar: loss, gradients and forward-updated state all finite; when False the
    update was skipped, the forward-updated state restored and a dynamic scale divided by its
    factor). The current scale is ``self.loss_scale``. ``self.state_names`` lists the restored
    parameters (the model's non-trainable ones). ``self.grad_norm`` holds the step's global L2 norm of
    all gradients (every optimized parameter, after the all-reduce and unscaling, before clipping;
    inf/NaN on an unhealthy step): one square-sum per gradient, read by the runner for its record.
    """

    def __init__(self, model, optimizer, loss_scale, clip_grad_norm=None, clip_prefixes=('backbone.',),
                 grad_reducer=None, track_grad_norm=True):
        super().__init__(auto_prefix=False)
        self.model = model
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.hyper_map = ops.HyperMap()
        self.dynamic = loss_scale.mode == 'dynamic'
        self.factor = float(loss_scale.factor)
        self.window = int(loss_scale.window)
        self.min_scale = float(loss_scale.min_scale)
        # Parameters, so the scale and its clean-step counter survive in checkpoints and are
        # updated inside the compiled graph.
        self.loss_scale = ms.Parameter(ms.Tensor(np.float32(loss_scale.init_scale)), name='loss_scale',
                                       requires_grad=False)
        self.clean_steps = ms.Parameter(ms.Tensor(np.int32(0)), name='loss_scale_clean_steps',
                                        requires_grad=False)
        self.grad_norm = ms.Parameter(ms.Tensor(np.float32(0)), name='train_step.grad_norm', requires_grad=False)
        self.track_grad_norm = bool(track_grad_norm)
        self.use_clip = clip_grad_norm is not None and clip_grad_norm > 0
        self.clip_value = ms.Tensor(np.float32(clip_grad_norm if self.use_clip else 1.0))
        prefixes = tuple(clip_prefixes or ())
        self.clip_masks = tuple(
            ms.Tensor(np.float32(1.0 if (not prefixes or p.name.startswith(prefixes)) else 0.0))
            for p in self.weights)
        self.clipped_names = [p.name for p, m in zip(self.weights, self.clip_masks) if float(m.asnumpy()) > 0]
        self.grad_reducer = grad_reducer
        self.use_reducer = grad_reducer is not None
        from .optim import group_lr_params
        lr_params = group_lr_params(optimizer)
        mults = [g['lr_mult'] for g in getattr(optimizer, 'facekit_groups', [dict(lr_mult=1.0)] * len(lr_params))]
        self.lr_params = ms.ParameterTuple(lr_params)
        self.lr_mults = tuple(ms.Tensor(np.float32(m)) for m in mults)
        # State a forward may write (BN moving statistics, EMA buffers of losses): copied into a
        # shadow parameter before the forward, copied back when the step is unhealthy.
        state = [p for p in model.get_parameters() if not p.requires_grad]
        self.state_names = [p.name for p in state]
        self.state_params = ms.ParameterTuple(state)
        self.state_backup = ms.ParameterTuple(
            ms.Parameter(ms.Tensor(np.zeros(p.shape, np.float32)).astype(p.dtype), name='health_backup.' + p.name,
                         requires_grad=False) for p in state)
        self.guard_state = len(state) > 0
        # Ranks must agree: one rank's non-finite loss or BN statistics skips the step on all of them.
        self.sum_ranks = ops.AllReduce() if self.use_reducer else None

    def construct(self, img, label, lr):
        lr_set = self.hyper_map(ops.partial(_assign_lr, lr), self.lr_params, self.lr_mults)
        img = ops.depend(img, lr_set)
        if self.guard_state:
            img = ops.depend(img, self.hyper_map(_backup, self.state_backup, self.state_params))
        scale = self.loss_scale
        loss = self.model(img, label)
        sens = ops.fill(loss.dtype, loss.shape, 1.0) * scale.astype(loss.dtype)
        grads = self.grad(self.model, self.weights)(img, label, sens)
        if self.use_reducer:
            grads = self.grad_reducer(grads)
        grads = self.hyper_map(ops.partial(_scale_grad, 1.0 / scale), grads)
        # squared norm of each gradient, once: the global norm for the record and the clipped norm share it
        sq = self.hyper_map(_sq, grads) if self.track_grad_norm or self.use_clip else ()
        finite = ops.logical_and(all_finite(grads), ops.isfinite(loss).all())
        if self.guard_state:
            finite = ops.logical_and(finite, all_finite(self.state_params))
        if self.use_reducer:
            unhealthy_ranks = self.sum_ranks(ops.reshape(1.0 - finite.astype(ms.float32), (1,)))
            finite = unhealthy_ranks.sum() < 0.5
        if self.guard_state:
            loss = ops.depend(loss, self.hyper_map(ops.partial(_restore, finite), self.state_params,
                                                   self.state_backup))
        if self.use_clip:
            norm = ops.sqrt(ops.addn(self.hyper_map(_masked, sq, self.clip_masks)))
            factor = self.clip_value / ops.maximum(norm, self.clip_value)
            grads = self.hyper_map(ops.partial(_clip_masked, factor), grads, self.clip_masks)
        if finite:
            loss = ops.depend(loss, self.optimizer(grads))
        if self.track_grad_norm:
            loss = ops.depend(loss, ops.assign(self.grad_norm, ops.sqrt(ops.addn(sq))))
        if self.dynamic:
            grown = self.clean_steps + 1
            grow = grown >= self.window
            new_scale = ops.select(finite,
                                   ops.select(grow, scale * self.factor, scale),
                                   ops.maximum(scale / self.factor, self.min_scale))
            new_clean = ops.select(finite, ops.select(grow, ops.zeros_like(grown), grown),
                                   ops.zeros_like(grown))
            loss = ops.depend(loss, ops.assign(self.loss_scale, new_scale))
            loss = ops.depend(loss, ops.assign(self.clean_steps, new_clean))
        return loss.astype(ms.float32), finite
