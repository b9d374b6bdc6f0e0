"""Dry run: a config's compiled training step on random inputs, before a cluster is committed to it.

    python tools/train.py CONFIG --dry-run        # Runner.from_cfg(cfg).dry_run(iters=2)

The model (with the run's precision), the optimizer and the compiled train step are built as
training builds them; ``iters`` steps then run on random images of the config's shape
(``(B, 3, S, S)`` uniform in [-1, 1], S the data set's ``image_size`` or 112) with random labels in
``[0, num_classes)``, at the optimizer's base lr (the schedule's peak). Rank 0 reports:

- parameters of the backbone and the head (weights and norm scales, not BN running statistics);
- the head's memory per rank: each per-class parameter (PartialFC's centre shard has
  ``num_local = C // W + (rank < C % W)`` rows of E) with its gradient and optimizer state,
  ``bytes = num_local * E * 4 * (1 weight + 1 gradient + S)``, S the optimizer's state tensors per
  parameter counted from the optimizer (2 for SGD: MindSpore's ``nn.SGD`` keeps a momentum buffer and a
  same-shaped first-step flag; 2 for AdamW: its two moments). Rank 0's shard is the largest;
- the resolved precision;
- the world size and the global batch, ``batch_size * world size * accumulative_counts``;
- steps per epoch, from the training set's image count: counted from the data set when its files
  are at hand (only its index is read, no image), else ``train_dataloader.num_images`` (the size a
  data-set base config documents), and which of the two was used;
- the loss of every step. A non-finite loss, or non-finite gradients without a dynamic loss scale
  (which skips an overflowing step and lowers the scale, as in training), raises
  ``NonFiniteLossError``.

No training data is read and no file is written.
"""
import math
import time

import numpy as np

from ..config import to_plain
from ..utils.cli import shown_path
from . import dist

__all__ = ['dry_run', 'dataset_image_count', 'head_memory', 'steps_per_epoch', 'RandomBatches']


class RandomBatches:
    """``iters`` batches of random images and labels: the loader of a dry run.

    Args:
        iters: batches to yield.
        batch_size: rows per batch.
        image_size: side S of the (3, S, S) images.
        num_classes: labels are drawn uniformly from ``[0, num_classes)``.
        seed: with the rank, fixes the numbers.
    """

    def __init__(self, iters, batch_size, image_size, num_classes, seed=0):
        self.iters, self.batch_size = int(iters), int(batch_size)
        self.image_size, self.num_classes = int(image_size), int(num_classes)
        self.seed = seed

    def __len__(self):
        return self.iters

    def __iter__(self):
        rng = np.random.default_rng([int(self.seed or 0), dist.get_rank()])
        shape = (self.batch_size, 3, self.image_size, self.image_size)
        for _ in range(self.iters):
            yield (rng.uniform(-1.0, 1.0, shape).astype(np.float32),
                   rng.integers(0, self.num_classes, self.batch_size).astype(np.int32))


def dataset_image_count(cfg):
    """``(images or None, source)``: the training set's size, without reading an image.

    The data set is built from ``train_dataloader.dataset`` (which reads an index file at most) and
    counted; when its files are not there (FileNotFoundError), ``train_dataloader.num_images`` is
    used. ``source`` says which, for the report.
    """
    from ..datasets import build_dataset
    loader = to_plain(cfg.train_dataloader)
    declared = loader.get('num_images')
    dataset = loader['dataset']
    if not isinstance(dataset, dict):           # a data set object handed in from Python
        return len(dataset), f'counted in the given {type(dataset).__name__}'
    dataset = dict(dataset)
    dataset.pop('pipeline', None)
    try:
        count = len(build_dataset(dataset))
    except FileNotFoundError as e:
        missing = ' '.join(str(e).split()).split('FileNotFoundError: ')[-1]     # the registry wraps the cause
        if declared is None:
            return None, (f'unknown: the data set is not here ({missing}) and the config sets no '
                          f'train_dataloader.num_images')
        return int(declared), f'train_dataloader.num_images (the data set is not here: {missing})'
    source = f'counted in the {dataset["type"]} data set'
    if declared is not None and int(declared) != count:
        source += f' (train_dataloader.num_images says {int(declared):,})'
    return count, source


def head_memory(model, optimizer):
    """Per-rank memory of the head's trainable parameters, their gradients and their optimizer state.

    Returns a list of dicts, one per head parameter: ``name``, ``shape``, ``itemsize``, ``slots`` (optimizer
    state tensors of the parameter's shape, found by name: ``<prefix>.<parameter name>``) and
    ``bytes = size * itemsize * (2 + slots)``.
    """
    from .optim import optimizer_state
    model_names = {p.name for p in model.get_parameters()}
    state = [p for p in optimizer_state(optimizer, model_names).values()]
    rows = []
    for p in model.head.trainable_params():
        slots = sum(1 for s in state if s.name.endswith('.' + p.name) and tuple(s.shape) == tuple(p.shape))
        itemsize = int(p.itemsize)
        rows.append(dict(name=p.name, shape=tuple(int(d) for d in p.shape), itemsize=itemsize, slots=slots,
                         bytes=int(p.size) * itemsize * (2 + slots)))
    return rows


def steps_per_epoch(num_images, batch_size, world_size, rank, drop_remainder=True):
    """Batches per epoch on ``rank``: the loader's sampler pads the data to ``ceil(n / W)`` per rank."""
    from ..datasets.builder import ShardedShuffleSampler
    per_rank = len(ShardedShuffleSampler(num_images, shuffle=False, rank=rank, world_size=world_size))
    return per_rank // batch_size if drop_remainder else -(-per_rank // batch_size)


def _type_name(part):
    """The registry name of a model part's config (or the class name of a built part)."""
    kind = part.get('type') if isinstance(part, dict) else type(part)
    return getattr(kind, '__name__', str(kind))


def _size(n):
    for unit, scale in (('GiB', 2 ** 30), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
        if n >= scale:
            return f'{n / scale:,.1f} {unit} ({n:,} B)'
    return f'{n:,} B'


def dry_run(runner, iters=2):
    """Run the dry run for ``runner`` (built by ``Runner.from_cfg``); return the reported numbers.

    Returns dict with ``backbone_params``, ``head_params``, ``head_memory`` (rows of ``head_memory``),
    ``head_memory_bytes``, ``precision``, ``world_size``, ``global_batch``, ``num_images``,
    ``num_images_source``, ``steps_per_epoch`` (None when the image count is unknown), ``losses``,
    ``grads_finite``, ``loss_scales``.
    """
    import mindspore as ms
    from ..datasets.preprocess import IMAGE_SIZE
    from ..models.backbones import count_parameters
    from .config_check import check_config
    from .optim import build_optimizer
    from .runner import NonFiniteLossError
    if runner.cfg is None:
        raise ValueError('Runner.dry_run needs a Runner built from a config (Runner.from_cfg)')
    iters = int(iters)
    if iters < 1:
        raise ValueError(f'dry run iters must be >= 1, got {iters}')
    cfg = runner.cfg
    check_config(cfg)
    runtime = cfg.get('runtime') or {}
    loader_cfg = to_plain(cfg.train_dataloader)
    batch_size = int(loader_cfg['batch_size'])
    name = shown_path(cfg.filename) if cfg.filename else 'config'
    runner.log(f'dry run of {name}: {iters} steps on random inputs, no data read')
    if runner.resume_from or runner.load_from:
        runner.log('  resume / load_from are ignored by the dry run')

    model, precision = runner._build_model()
    optimizer_cfg = to_plain(cfg.optimizer)
    accumulative_counts = int(optimizer_cfg.get('accumulative_counts', 1))
    optimizer = build_optimizer(optimizer_cfg, model)
    base_lr = float(optimizer.facekit_base_lr)
    dataset = loader_cfg['dataset']
    image_size = int((dataset.get('image_size') if isinstance(dataset, dict) else getattr(dataset, 'image_size', None))
                     or IMAGE_SIZE)
    loader = RandomBatches(iters, batch_size, image_size, model.head.num_classes, seed=runtime.get('seed'))
    runner._setup_training(model=model, train_dataloader=loader, optimizer=optimizer,
                           lr_schedule=lambda it: base_lr, max_epochs=1, hooks=[], evaluators=[],
                           mode=runtime.get('mode', 'graph'), loss_scale=precision['loss_scale'],
                           clip_grad_norm=runtime.get('clip_grad_norm'),
                           clip_prefixes=tuple(runtime.get('clip_prefixes', ('backbone.',))),
                           nan_patience=iters + 1, batch_size=batch_size, max_iters=iters)

    world, rank = dist.get_world_size(), dist.get_rank()
    backbone_params, head_params = count_parameters(model.backbone), count_parameters(model.head)
    model_cfg = to_plain(cfg.model)
    runner.log(f"  parameters: backbone {backbone_params:,} ({_type_name(model_cfg.get('backbone'))}), "
               f"head {head_params:,} ({_type_name(model_cfg.get('head'))})")
    memory = head_memory(model, optimizer)
    memory_bytes = sum(r['bytes'] for r in memory)
    for r in memory:
        shape = ' x '.join(f'{d:,}' for d in r['shape'])
        runner.log(f"  head memory on rank {rank} of {world}: {r['name']} {shape} x {r['itemsize']} B x "
                   f"(1 weight + 1 gradient + {r['slots']} optimizer state) = {_size(r['bytes'])}")
    global_batch = batch_size * world * accumulative_counts
    runner.log(f'  world size {world}, global batch {global_batch:,} = {batch_size} per rank x {world} rank(s) '
               f'x {accumulative_counts} accumulation step(s)')
    num_images, source = dataset_image_count(cfg)
    steps = None
    if num_images is None:
        runner.log(f'  steps per epoch: {source}')
    else:
        steps = steps_per_epoch(num_images, batch_size, world, rank, loader_cfg.get('drop_remainder', True))
        if accumulative_counts > 1:
            steps //= accumulative_counts
        runner.log(f'  steps per epoch: {steps:,} ({num_images:,} images, {source})')

    losses, grads_finite, scales = [], [], []
    dynamic = runner.loss_scale_mode == 'dynamic'
    for i, (img, label) in enumerate(loader):
        scale = float(runner.train_step.loss_scale.asnumpy())
        t0 = time.perf_counter()
        loss_t, finite_t = runner.train_step(ms.Tensor(img), ms.Tensor(label), ms.Tensor(np.float32(base_lr)))
        loss, finite = float(loss_t.asnumpy()), bool(finite_t.asnumpy())
        seconds = time.perf_counter() - t0
        losses.append(loss)
        grads_finite.append(finite)
        scales.append(scale)
        what = 'compile + step' if i == 0 else 'step'
        note = '' if finite else (f'; gradients overflowed at loss scale {scale:g}: step skipped, scale lowered'
                                  if dynamic else '; gradients NOT finite')
        runner.log(f'  step {i + 1}: loss {loss:.5f} ({what} {seconds:.1f} s{note})')
        if not math.isfinite(loss) or not (finite or dynamic):
            raise NonFiniteLossError(
                f'dry run of {name}: step {i + 1} of {iters} is not finite (loss {loss}, gradients '
                f'{"finite" if finite else "not finite"}) at lr {base_lr:g} on random inputs. '
                'Lower optimizer.lr, enable runtime.clip_grad_norm or check the model and loss settings.')
    skipped = grads_finite.count(False)
    runner.log(f'dry run passed: {iters} steps, losses finite'
               + (f', {skipped} skipped by the dynamic loss scale' if skipped else ''))
    return dict(backbone_params=backbone_params, head_params=head_params, head_memory=memory,
                head_memory_bytes=memory_bytes, precision=precision, world_size=world, global_batch=global_batch,
                num_images=num_images, num_images_source=source, steps_per_epoch=steps, losses=losses,
                grads_finite=grads_finite, loss_scales=scales)
