"""The compiled training step: loss, scaled gradients, all-reduce, health check, clipping, update.

``TrainStep`` is one ``nn.Cell``; in graph mode MindSpore compiles the whole step (forward,
backward, gradient reduction, clipping and the optimizer update) into one graph.

A step is *healthy* when the loss, every gradient and the forward-updated state (BatchNorm moving
statistics and any other non-trainable model parameter a forward writes, e.g. AdaFace's norm
statistics) are finite. An unhealthy step changes nothing but the loss scale: the update is
skipped and the forward-updated state is put back to its value before the step.

Gradient accumulation (``accumulative_counts=k > 1``): k micro-batches make one optimizer step.
Micro-batches 1..k-1 run ``TrainStep.accumulator`` (its own compiled graph: forward, backward,
unscale, add into fp32 shadow Parameters ``accum_grad.<name>``); micro-batch k runs ``TrainStep``
itself, which adds its gradient, divides the sum by k, all-reduces once, checks health, clips and
updates. The group is healthy only when every micro-batch was; an unhealthy group is skipped as a
whole: the buffers are cleared, the forward-updated state goes back to its value before the
group's first micro-batch and a dynamic scale is divided by its factor. ``step()`` picks the graph
from the micro-step counter. With k = 1 none of these buffers exist and ``step()`` is the one graph.
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


_backup_first = ops.MultitypeFuncGraph('backup_first')
_accumulate = ops.MultitypeFuncGraph('accumulate')
_average = ops.MultitypeFuncGraph('average')
_zero = ops.MultitypeFuncGraph('zero')


@_backup_first.register('Tensor', 'Tensor', 'Tensor')
def _backup_first_fn(first, backup, param):
    # the group's starting state: copied at its first micro-batch, kept through the others
    return ops.assign(backup, ops.select(first.broadcast_to(param.shape), param, backup))


@_accumulate.register('Tensor', 'Tensor', 'Tensor')
def _accumulate_fn(finite, acc, grad):
    # a non-finite micro-batch adds nothing: its group is skipped anyway, and the buffers stay
    # finite so a checkpoint written inside the group is not refused
    grad = grad.astype(ms.float32)
    return ops.assign(acc, acc + ops.select(finite.broadcast_to(grad.shape), grad, ops.zeros_like(grad)))


@_average.register('Tensor', 'Tensor', 'Tensor', 'Tensor')
def _average_fn(inv_k, finite, acc, grad):
    g = grad.astype(ms.float32)
    g = ops.select(finite.broadcast_to(g.shape), g, ops.zeros_like(g))
    return ((acc + g) * inv_k).astype(grad.dtype)


@_zero.register('Tensor')
def _zero_fn(acc):
    return ops.assign(acc, ops.zeros_like(acc))


def _loss_and_scaled_grads(model, grad, weights, img, label, scale):
    """``model(img, label)`` and the gradients of ``scale`` times it for ``weights`` (all three graphs of a step)."""
    loss = model(img, label)
    sens = ops.fill(loss.dtype, loss.shape, 1.0) * scale.astype(loss.dtype)
    return loss, grad(model, weights)(img, label, sens)


def _health(grads, loss, state_params, guard_state):
    """Loss, gradients and the forward-updated state all finite (bool scalar)."""
    finite = ops.logical_and(all_finite(grads), ops.isfinite(loss).all())
    if guard_state:
        finite = ops.logical_and(finite, all_finite(state_params))
    return finite


class _Accumulator(nn.Cell):
    """Micro-batches 1..k-1 of an accumulation group: add the unscaled gradient into the buffers.

    Shares every Parameter with its ``TrainStep``; compiled as its own graph (no optimizer, no
    collective). ``construct(img, label) -> (loss, healthy)``, ``healthy`` the group's so far.
    """

    def __init__(self, step):
        super().__init__(auto_prefix=False)
        self.model = step.model
        self.weights = step.weights
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.hyper_map = ops.HyperMap()
        self.loss_scale = step.loss_scale
        self.accum_grads = step.accum_grads
        self.accum_healthy = step.accum_healthy
        self.accum_micro_step = step.accum_micro_step
        self.guard_state = step.guard_state
        self.state_params = step.state_params
        self.state_backup = step.state_backup

    def construct(self, img, label):
        first = self.accum_micro_step == 0
        if self.guard_state:
            img = ops.depend(img, self.hyper_map(ops.partial(_backup_first, first), self.state_backup,
                                                 self.state_params))
        scale = self.loss_scale
        loss, grads = _loss_and_scaled_grads(self.model, self.grad, self.weights, img, label, scale)
        grads = self.hyper_map(ops.partial(_scale_grad, 1.0 / scale), grads)
        finite = _health(grads, loss, self.state_params, self.guard_state)
        healthy = ops.logical_and(ops.logical_or(first, self.accum_healthy), finite)
        loss = ops.depend(loss, ops.assign(self.accum_healthy, healthy))
        if self.guard_state:
            # an unhealthy group keeps the state it started with, whatever micro-batch broke it
            loss = ops.depend(loss, self.hyper_map(ops.partial(_restore, healthy), self.state_params,
                                                   self.state_backup))
        loss = ops.depend(loss, self.hyper_map(ops.partial(_accumulate, finite), self.accum_grads, grads))
        loss = ops.depend(loss, ops.assign(self.accum_micro_step, self.accum_micro_step + 1))
        return loss.astype(ms.float32), healthy


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
        accumulative_counts: micro-batches per optimizer step (k); k > 1 adds the accumulation
            buffers and the ``accumulator`` graph (see the module docstring).
        track_grad_norm: compute ``self.grad_norm`` (see below); False leaves it 0.

    ``construct(img, label, lr)`` (``lr`` a float32 scalar Tensor: the schedule's base lr for this
    step, written into every parameter group's lr times its multiplier inside the graph; a
    host-side ``Parameter.set_data`` after compilation is not seen by the compiled graph)
    returns ``(loss, finite)``: the unscaled loss (float32 scalar) and whether the step was
    healthy (bool scalar: loss, gradients and forward-updated state all finite; when False the
    update was skipped, the forward-updated state restored and a dynamic scale divided by its
    factor). The current scale is ``self.loss_scale``. ``self.state_names`` lists the restored
    parameters (the model's non-trainable ones). ``self.grad_norm`` holds the last optimizer step's global L2
    norm of all gradients (every optimized parameter, after the all-reduce, unscaling and averaging over the
    micro-batches, before clipping; inf/NaN on an unhealthy step): one square-sum per gradient, shared with
    clipping, read by the runner for its record.

    ``step(img, label, lr)`` runs one micro-batch through the right graph and returns
    ``(loss, healthy, applied)``; ``applied`` is True when it ended an optimizer step (always for
    k = 1). ``accumulation_state()`` names what a checkpoint written inside a group must hold.
    """

    def __init__(self, model, optimizer, loss_scale, clip_grad_norm=None, clip_prefixes=('backbone.',),
                 grad_reducer=None, accumulative_counts=1, track_grad_norm=True):
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
        from .optim import check_accumulative_counts
        self.accumulative_counts = check_accumulative_counts(accumulative_counts)
        self.accumulate = self.accumulative_counts > 1
        if self.accumulate:
            # fp32 whatever the parameter dtype: k fp16 gradients summed in fp16 lose precision
            self.accum_grads = ms.ParameterTuple(
                ms.Parameter(ms.Tensor(np.zeros(p.shape, np.float32)), name='accum_grad.' + p.name,
                             requires_grad=False) for p in self.weights)
            self.accum_healthy = ms.Parameter(ms.Tensor(True), name='accum_healthy', requires_grad=False)
            self.accum_micro_step = ms.Parameter(ms.Tensor(np.int32(0)), name='accum_micro_step',
                                                 requires_grad=False)
            self.inv_k = ms.Tensor(np.float32(1.0 / self.accumulative_counts))
            self.accumulator = _Accumulator(self)

    @property
    def micro_step(self):
        """Micro-batches already in the open accumulation group (0 at a group boundary; always 0 for k = 1)."""
        return int(self.accum_micro_step.asnumpy()) if self.accumulate else 0

    def step(self, img, label, lr):
        """One micro-batch: ``(loss, healthy, applied)`` (Tensors, Tensors, bool); see the class docstring."""
        if self.accumulate and self.micro_step < self.accumulative_counts - 1:
            loss, healthy = self.accumulator(img, label)
            return loss, healthy, False
        loss, healthy = self(img, label, lr)
        return loss, healthy, True

    def accumulation_state(self):
        """``{key: Parameter}`` of an open accumulation group (empty for k = 1).

        ``grad.<param>``: the sum of the group's unscaled micro-batch gradients so far (fp32);
        ``state.<param>``: the forward-updated state at the group's start (restored if the group
        turns out unhealthy); ``healthy``; ``micro_step``. At a group boundary the buffers are zero,
        ``healthy`` is True and ``micro_step`` 0, which ``reset_accumulation()`` restores.
        """
        if not self.accumulate:
            return {}
        out = {'grad.' + p.name: b for p, b in zip(self.weights, self.accum_grads)}
        out.update({'state.' + name: b for name, b in zip(self.state_names, self.state_backup)})
        out['healthy'] = self.accum_healthy
        out['micro_step'] = self.accum_micro_step
        return out

    def reset_accumulation(self):
        """Empty the accumulation group (host side; before a run starts or resumes at a boundary)."""
        if not self.accumulate:
            return
        for b in self.accum_grads:
            b.set_data(ms.Tensor(np.zeros(b.shape, np.float32)))
        self.accum_healthy.set_data(ms.Tensor(True))
        self.accum_micro_step.set_data(ms.Tensor(np.int32(0)))

    def construct(self, img, label, lr):
        if self.accumulate:
            return self._apply_group(img, label, lr)
        lr_set = self.hyper_map(ops.partial(_assign_lr, lr), self.lr_params, self.lr_mults)
        img = ops.depend(img, lr_set)
        if self.guard_state:
            img = ops.depend(img, self.hyper_map(_backup, self.state_backup, self.state_params))
        scale = self.loss_scale
        loss, grads = _loss_and_scaled_grads(self.model, self.grad, self.weights, img, label, scale)
        if self.use_reducer:
            grads = self.grad_reducer(grads)
        grads = self.hyper_map(ops.partial(_scale_grad, 1.0 / scale), grads)
        finite = _health(grads, loss, self.state_params, self.guard_state)
        loss, finite = self._update(loss, grads, finite, scale)
        return loss.astype(ms.float32), finite

    def _update(self, loss, grads, finite, scale):
        """The step's end, shared by both paths: ranks agree on health, state restore, clipping, update, scale."""
        # squared norm of each gradient, once: the global norm for the record and the clipped norm share it
        sq = self.hyper_map(_sq, grads) if self.track_grad_norm or self.use_clip else ()
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
            loss = ops.depend(loss, self._update_scale(finite, scale))
        return loss, finite

    def _update_scale(self, finite, scale):
        """Dynamic loss scale after an optimizer step: grow after ``window`` clean steps, shrink on a skip."""
        grown = self.clean_steps + 1
        grow = grown >= self.window
        new_scale = ops.select(finite,
                               ops.select(grow, scale * self.factor, scale),
                               ops.maximum(scale / self.factor, self.min_scale))
        new_clean = ops.select(finite, ops.select(grow, ops.zeros_like(grown), grown),
                               ops.zeros_like(grown))
        return ops.depend(ops.assign(self.loss_scale, new_scale), ops.assign(self.clean_steps, new_clean))

    def _apply_group(self, img, label, lr):
        """Micro-batch k of a group: add its gradient, average, all-reduce once, check, clip, update, reset."""
        lr_set = self.hyper_map(ops.partial(_assign_lr, lr), self.lr_params, self.lr_mults)
        img = ops.depend(img, lr_set)
        scale = self.loss_scale
        loss, grads = _loss_and_scaled_grads(self.model, self.grad, self.weights, img, label, scale)
        grads = self.hyper_map(ops.partial(_scale_grad, 1.0 / scale), grads)
        finite_last = _health(grads, loss, self.state_params, self.guard_state)
        grads = self.hyper_map(ops.partial(_average, self.inv_k, finite_last), self.accum_grads, grads)
        finite = ops.logical_and(self.accum_healthy, finite_last)
        if self.use_reducer:
            # once per optimizer step: the mean over ranks of the mean over micro-batches
            grads = self.grad_reducer(grads)
        # the state restored on an unhealthy group is the one backed up at its first micro-batch
        loss, finite = self._update(loss, grads, finite, scale)
        loss = ops.depend(loss, self.hyper_map(_zero, self.accum_grads))
        loss = ops.depend(loss, ops.assign(self.accum_healthy, ops.ones_like(self.accum_healthy)))
        loss = ops.depend(loss, ops.assign(self.accum_micro_step, ops.zeros_like(self.accum_micro_step)))
        return loss.astype(ms.float32), finite
