"""Training-step benchmark: samples/sec and peak RSS of facekit's compiled train step.

    python tools/benchmark.py train --backbone iresnet18 --batch-size 32 --steps 10
    python tools/benchmark.py train --backbone mobilefacenet vit_t --breakdown
    python tools/benchmark.py train --config configs/arcface/vit_synthetic_cpu.py --batch-size 64

One step = forward, backward, gradient clipping and the SGD-momentum update, the same
``TrainStep`` cell the Runner compiles (graph mode), on random inputs, so data loading is not
counted (see ``benchmark.py data`` for that). The head is a normalized FC over
``--num-classes`` centres with ArcFace loss, as in the reference trainer's measurement. The first ``--warmup`` steps (compilation) are reported apart.
``--breakdown`` also times the forward alone and forward+backward, to show where time goes.
``--profile DIR`` profiles the step per op type instead of timing it (tools/benchmarks/op_profile.py).
Each backbone runs in its own process so peak RSS is per backbone.

``--compare torch`` also builds the same step in PyTorch (tools/benchmarks/torch_reference.py: the
backbone as arcface_torch writes it, normalized FC + ArcFace, SGD momentum, clipping at 5; eager, fp32,
torch.set_num_threads(2)) in the same process and times the two interleaved: ``--steps`` rounds of one
facekit step then one PyTorch step; medians, ratio = facekit samples/s / PyTorch samples/s. Peak RSS per
side: see tools/benchmarks/compare.py. Without PyTorch installed it prints why and exits with status 2.

    python tools/benchmark.py train --compare torch --backbone iresnet18 mobilefacenet vit_t --steps 5
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)   # compare.py, torch_reference.py (tools/ is not a package)
import compare  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv):
    p = argparse.ArgumentParser(prog='python tools/benchmark.py train', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--backbone', nargs='+', default=['iresnet18'], help='registered backbone name(s)')
    p.add_argument('--config', help="take model (backbone, head, loss) from this config instead")
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--steps', type=int, default=10, help='timed steps')
    p.add_argument('--warmup', type=int, default=2, help='untimed first steps (compilation)')
    p.add_argument('--num-classes', type=int, default=1000, help='head classes (without --config)')
    p.add_argument('--mode', default='graph', choices=['graph', 'pynative'])
    p.add_argument('--jit-level', default=None, help="MindSpore jit_level (O0, O1, O2); default: MindSpore's")
    p.add_argument('--threads', type=int, default=None, help='runtime_num_threads (default: MindSpore picks)')
    p.add_argument('--breakdown', action='store_true', help='also time forward and forward+backward')
    p.add_argument('--json', action='store_true', help='print one JSON object per backbone instead of a table')
    p.add_argument('--compare', choices=['torch'], help='also time the same step in PyTorch, interleaved')
    p.add_argument('--profile', metavar='DIR', help='instead of timing, profile --steps steps per op type '
                   '(mindspore.Profiler output under DIR; with --compare torch also torch.profiler)')
    p.add_argument('--_child', action='store_true', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _time(fn, steps, warmup):
    from facekit.utils.progress import progress_bar
    bar = progress_bar(total=warmup + steps, desc='steps (first: compilation)', unit='step', leave=False)
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
        bar.update()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        bar.update()
    bar.close()
    times.sort()
    return first, times[len(times) // 2], sum(times) / len(times)


def build_facekit_step(args, backbone):
    """facekit's compiled TrainStep on fixed random inputs: (step() -> None, model, opt, result dict)."""
    import numpy as np
    from facekit.utils.runtime import setup_runtime
    setup_runtime('CPU', args.mode, seed=0)
    import mindspore as ms
    if args.jit_level:
        ms.set_context(jit_config={'jit_level': args.jit_level})
    if args.threads:
        ms.set_context(runtime_num_threads=args.threads)
    import facekit  # noqa: F401
    from facekit.engine.amp import LossScaleConfig
    from facekit.engine.optim import SGD
    from facekit.engine.train_step import TrainStep
    from facekit.registry import MODELS
    if args.config:
        from facekit.config import Config
        model_cfg = Config.fromfile(args.config).model.to_dict()
        backbone = model_cfg['backbone']['type']
    else:
        model_cfg = dict(type='FaceRecognizer', backbone=dict(type=backbone, embedding_size=512),
                         head=dict(type='NormFCHead', embedding_size=512, num_classes=args.num_classes),
                         loss=dict(type='ArcFaceLoss'))
    model = MODELS.build(model_cfg)
    num_classes = model_cfg['head']['num_classes']
    params = sum(int(np.prod(p.shape)) for p in model.backbone.trainable_params())
    opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    step = TrainStep(model, opt, LossScaleConfig('none'), clip_grad_norm=5.0)
    step.set_train()
    rng = np.random.default_rng(0)
    img = ms.Tensor(rng.standard_normal((args.batch_size, 3, 112, 112)).astype(np.float32))
    label = ms.Tensor(rng.integers(0, num_classes, args.batch_size).astype(np.int32))
    lr = ms.Tensor(np.float32(0.01))
    result = dict(backbone=backbone, batch_size=args.batch_size, mode=args.mode, params_m=params / 1e6,
                  jit_level=args.jit_level or 'default', threads=args.threads or 'default')
    return (lambda: step(img, label, lr)[0].asnumpy()), model, opt, (img, label), result


def run_one(args, backbone):
    """Measure one backbone in this process; returns a dict of figures."""
    import mindspore as ms
    step, model, opt, (img, label), result = build_facekit_step(args, backbone)
    if args.breakdown:
        class Fwd(ms.nn.Cell):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def construct(self, x, y):
                return self.m(x, y)

        class FwdBwd(ms.nn.Cell):
            def __init__(self, m, weights):
                super().__init__()
                self.m = m
                self.weights = weights
                self.grad = ms.ops.GradOperation(get_by_list=True)

            def construct(self, x, y):
                return self.grad(self.m, self.weights)(x, y)

        fwd = Fwd(model)
        fwdbwd = FwdBwd(model, opt.parameters)
        _, result['forward_s'], _ = _time(lambda: fwd(img, label).asnumpy(), args.steps, args.warmup)
        _, result['forward_backward_s'], _ = _time(lambda: fwdbwd(img, label)[0].asnumpy(), args.steps, args.warmup)
    first, median, mean = _time(step, args.steps, args.warmup)
    result.update(first_steps_s=first, step_s=median, mean_step_s=mean,
                  samples_per_s=args.batch_size / median,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return result


def run_compare(args, backbone):
    """facekit and PyTorch train steps in this process, interleaved; returns a dict of figures."""
    import numpy as np
    torch = compare.import_torch()
    import torch_reference
    from facekit.utils.runtime import setup_runtime
    setup_runtime('CPU', args.mode, seed=0)   # mindspore imported before either side is built
    with compare.PeakRSS() as fk_rss:
        fk_step, _, _, _, result = build_facekit_step(args, backbone)
        start = time.perf_counter()
        for _ in range(args.warmup):
            fk_step()
        fk_first = time.perf_counter() - start
    with compare.PeakRSS() as pt_rss:
        pt_train = torch_reference.make_train_step(compare.torch_name(backbone), args.num_classes)
        rng = np.random.default_rng(0)
        img = torch.from_numpy(rng.standard_normal((args.batch_size, 3, 112, 112)).astype(np.float32))
        label = torch.from_numpy(rng.integers(0, args.num_classes, args.batch_size).astype(np.int64))
        start = time.perf_counter()
        for _ in range(args.warmup):
            pt_train(img, label)
        pt_first = time.perf_counter() - start
    times = compare.interleave({'facekit': fk_step, 'torch': lambda: pt_train(img, label)}, args.steps)
    fk, pt = (compare.throughput(args.batch_size, times[k]) for k in ('facekit', 'torch'))
    result.update(facekit_samples_per_s=fk, torch_samples_per_s=pt, ratio=compare.ratio(fk, pt),
                  facekit_first_steps_s=fk_first, torch_first_steps_s=pt_first,
                  facekit_rss_growth_mb=fk_rss.growth_mb, torch_rss_growth_mb=pt_rss.growth_mb,
                  rounds=args.steps, torch_threads=torch.get_num_threads(), load_average=compare.load_average(),
                  times=times)
    return result


def run_profile(args, backbone):
    """Per-op-type tables of facekit's step (and PyTorch's with --compare torch) after the warm-up."""
    import op_profile
    step, _, _, _, result = build_facekit_step(args, backbone)
    for _ in range(args.warmup):
        step()
    out_dir = osp.join(osp.abspath(args.profile), backbone)
    result['mindspore_ops'] = op_profile.profile_mindspore(step, args.steps, out_dir)
    result['profile_dir'] = out_dir
    if args.compare:
        import numpy as np
        torch = compare.import_torch()
        import torch_reference
        pt_train = torch_reference.make_train_step(compare.torch_name(backbone), args.num_classes)
        rng = np.random.default_rng(0)
        img = torch.from_numpy(rng.standard_normal((args.batch_size, 3, 112, 112)).astype(np.float32))
        label = torch.from_numpy(rng.integers(0, args.num_classes, args.batch_size).astype(np.int64))
        for _ in range(args.warmup):
            pt_train(img, label)
        result['torch_ops'] = op_profile.profile_torch(torch, lambda: pt_train(img, label), args.steps)
    result.update(steps=args.steps, load_average=compare.load_average())
    return result


def print_profile(r):
    import op_profile
    print(f"\n{r['backbone']}, batch {r['batch_size']}, {r['steps']} profiled steps, load {r['load_average']}"
          f" (MindSpore output: {r['profile_dir']})\n\nfacekit (mindspore.Profiler, op type):\n")
    print(op_profile.per_step_table(r['mindspore_ops'], r['steps']))
    if 'torch_ops' in r:
        print('\nPyTorch (torch.profiler, self CPU time per op):\n')
        print(op_profile.per_step_table(r['torch_ops'], r['steps']))


def print_compare(rows):
    def mb(v):
        return '-' if v is None else f'{v:.0f}'
    header = ['backbone', 'batch', 'facekit samples/s', 'PyTorch samples/s', 'facekit / PyTorch',
              'facekit first steps (s)', 'PyTorch first steps (s)', 'facekit peak RSS growth (MB)',
              'PyTorch peak RSS growth (MB)', 'load avg (1m 5m 15m)']
    print(compare.markdown_table(header, [
        [r['backbone'], r['batch_size'], f"{r['facekit_samples_per_s']:.2f}", f"{r['torch_samples_per_s']:.2f}",
         compare.fmt_ratio(r['ratio']), f"{r['facekit_first_steps_s']:.1f}", f"{r['torch_first_steps_s']:.1f}",
         mb(r['facekit_rss_growth_mb']), mb(r['torch_rss_growth_mb']), r['load_average']] for r in rows]))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.compare:
        if args.config or args.breakdown:
            print('--compare torch times registered backbones (--backbone); it takes neither --config nor '
                  '--breakdown', file=sys.stderr)
            return 2
        problem = compare.compare_problem(args.backbone)
        if problem:
            print(problem, file=sys.stderr)
            return 2
    if args._child:
        run = run_profile if args.profile else run_compare if args.compare else run_one
        print('RESULT ' + json.dumps(run(args, args.backbone[0])), flush=True)
        return 0
    names = [None] if args.config else args.backbone
    rows = []
    for name in names:
        child = [sys.executable, osp.abspath(__file__), '--_child', '--batch-size', str(args.batch_size),
                 '--steps', str(args.steps), '--warmup', str(args.warmup), '--num-classes', str(args.num_classes),
                 '--mode', args.mode]
        child += ['--config', args.config, '--backbone', 'from-config'] if args.config else ['--backbone', name]
        if args.jit_level:
            child += ['--jit-level', args.jit_level]
        if args.threads:
            child += ['--threads', str(args.threads)]
        if args.breakdown:
            child.append('--breakdown')
        if args.compare:
            child += ['--compare', args.compare]
        if args.profile:
            child += ['--profile', osp.abspath(args.profile)]
        # on a terminal the child's stderr (its progress bars) goes straight to it; otherwise it is kept
        # for the failure message
        from facekit.utils.progress import progress_enabled
        proc = subprocess.run(child, stdout=subprocess.PIPE, stderr=None if progress_enabled() else subprocess.PIPE,
                              text=True, env=dict(os.environ))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
        if proc.returncode != 0 or not lines:
            detail = proc.stderr[-3000:] if proc.stderr is not None else '(its error output is above)'
            print(f'benchmark of {name or args.config} failed:\n{detail}', file=sys.stderr)
            return 1
        r = json.loads(lines[-1][len('RESULT '):])
        rows.append(r)
        if args.json:
            print(json.dumps(r))
        elif args.profile:
            print_profile(r)
        elif args.compare:
            print(f"{r['backbone']}: facekit {r['facekit_samples_per_s']:.2f}, PyTorch {r['torch_samples_per_s']:.2f} "
                  f"samples/s ({compare.fmt_ratio(r['ratio'])}), load {r['load_average']}", flush=True)
    quiet = args.json or args.profile   # already printed per backbone
    if args.compare and not quiet:
        print()
        print_compare(rows)
    elif not quiet:
        head = '| backbone | batch | mode | jit_level | samples/s | step (s) | first steps (s) | peak RSS (MB)'
        head += ' | forward (s) | fwd+bwd (s) |' if args.breakdown else ' |'
        print(head)
        print('|' + '---|' * (head.count('|') - 1))
        for r in rows:
            line = (f"| {r['backbone']} | {r['batch_size']} | {r['mode']} | {r['jit_level']} | "
                    f"{r['samples_per_s']:.1f} | {r['step_s']:.3f} | {r['first_steps_s']:.1f} | {r['peak_rss_mb']:.0f}")
            if args.breakdown:
                line += f" | {r['forward_s']:.3f} | {r['forward_backward_s']:.3f} |"
            else:
                line += ' |'
            print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
