"""Embedding throughput (images/sec) in MindSpore and onnxruntime, CPU, fp32.

    python tools/benchmark.py infer [--backbones iresnet50 mobilefacenet vit_t] [--batch 64]
                                    [--iters 5] [--engines mindspore onnxruntime] [--threads N]

Each engine embeds random (B, 3, 112, 112) batches with a random-initialised backbone (speed does
not depend on the weights): one warm-up call (graph compilation / session optimisation), then
``--iters`` timed calls; the median call gives images/sec. MindSpore runs the backbone in graph
mode; onnxruntime runs the file ``facekit.apis.export`` writes (dynamic batch) with all graph
optimisations. Figures on a shared machine are noisy: compare engines in the same run.

``--compare torch`` adds PyTorch eager (tools/benchmarks/torch_reference.py, eval mode, no_grad,
torch.set_num_threads(2)) and times all engines interleaved (one call of each per round, ``--iters``
rounds, after one warm-up call each); onnxruntime runs with its default session options (threads:
one per core). Ratios are over PyTorch eager. Without PyTorch it prints why and exits with status 2.

    python tools/benchmark.py infer --compare torch --backbones iresnet50 mobilefacenet vit_t --iters 5
"""
import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)   # compare.py, torch_reference.py (tools/ is not a package)
import compare  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Embedding throughput benchmark (images/sec).')
    parser.add_argument('--backbones', nargs='+', default=['iresnet50', 'mobilefacenet', 'vit_t'])
    parser.add_argument('--engines', nargs='+', default=['mindspore', 'onnxruntime'],
                        choices=['mindspore', 'onnxruntime'])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--iters', type=int, default=5, help='timed calls per engine (after one warm-up)')
    parser.add_argument('--threads', type=int, default=0,
                        help='onnxruntime intra-op threads (0: one per core, onnxruntime default)')
    parser.add_argument('--compare', choices=['torch'],
                        help='also time PyTorch eager, all engines interleaved, ratios over PyTorch')
    return parser.parse_args(argv)


def _timed(fn, iters):
    from facekit.utils.progress import progress_bar
    fn()  # warm-up: compilation / allocation
    times = []
    for _ in progress_bar(range(iters), desc='timed batches', unit='batch', leave=False):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_mindspore(backbone, x, iters):
    import mindspore as ms
    tensor = ms.Tensor(x)
    return _timed(lambda: backbone(tensor).asnumpy(), iters)


def bench_onnxruntime(path, x, iters, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    return _timed(lambda: session.run(['embedding'], {'data': x}), iters)


def run_compare(args, x):
    """All engines plus PyTorch eager, interleaved per backbone; prints a Markdown table."""
    import numpy as np
    import mindspore as ms
    import onnxruntime as ort
    import facekit.models  # noqa: F401
    from facekit.apis.export import export_backbone
    from facekit.registry import BACKBONES
    torch = compare.import_torch()
    import torch_reference
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones:
            fns, rss = {}, {}
            with compare.PeakRSS() as r:
                net = BACKBONES.build(dict(type=name))
                net.set_train(False)
                tensor = ms.Tensor(x)
                fns['facekit'] = lambda: net(tensor).asnumpy()
                fns['facekit']()
            rss['facekit'] = r.growth_mb
            with compare.PeakRSS() as r:
                path = export_backbone(net, osp.join(tmp, name), fmt='onnx', batch='dynamic')
                session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
                fns['onnxruntime'] = lambda: session.run(['embedding'], {'data': x})
                fns['onnxruntime']()
            rss['onnxruntime'] = r.growth_mb
            with compare.PeakRSS() as r:
                model = torch_reference.get_model(compare.torch_name(name)).eval()
                xt = torch.from_numpy(np.ascontiguousarray(x))

                def torch_call():
                    with torch.no_grad():
                        return model(xt).numpy()
                fns['torch'] = torch_call
                fns['torch']()
            rss['torch'] = r.growth_mb
            times = compare.interleave(fns, args.iters)
            ips = {k: compare.throughput(args.batch, v) for k, v in times.items()}
            load = compare.load_average()
            rows.append([name, args.batch, f"{ips['facekit']:.1f}", f"{ips['onnxruntime']:.1f}", f"{ips['torch']:.1f}",
                         compare.fmt_ratio(compare.ratio(ips['facekit'], ips['torch'])),
                         compare.fmt_ratio(compare.ratio(ips['onnxruntime'], ips['torch']))]
                        + ['-' if rss[k] is None else f'{rss[k]:.0f}' for k in ('facekit', 'onnxruntime', 'torch')]
                        + [load])
            print(f'{name}: ' + ', '.join(f'{k} {v:.1f} images/s' for k, v in ips.items()) + f', load {load}',
                  flush=True)
    header = ['backbone', 'batch', 'MindSpore graph (img/s)', 'onnxruntime (img/s)', 'PyTorch eager (img/s)',
              'MindSpore / PyTorch', 'onnxruntime / PyTorch', 'MindSpore peak RSS growth (MB)',
              'onnxruntime (MB)', 'PyTorch (MB)', 'load avg (1m 5m 15m)']
    print()
    print(compare.markdown_table(header, rows))
    return 0


def main(argv=None):
    args = parse_args(argv)
    problem = compare.compare_problem(args.backbones) if args.compare else None
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import numpy as np
    import facekit.models  # noqa: F401
    from facekit.apis.export import export_backbone
    from facekit.utils.runtime import setup_runtime
    from facekit.registry import BACKBONES

    setup_runtime('auto', mode='graph')
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 112, 112)).astype(np.float32)
    if args.compare:
        return run_compare(args, x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones:
            net = BACKBONES.build(dict(type=name))
            net.set_train(False)
            result = {}
            if 'mindspore' in args.engines:
                result['mindspore'] = args.batch / bench_mindspore(net, x, args.iters)
            if 'onnxruntime' in args.engines:
                path = export_backbone(net, osp.join(tmp, name), fmt='onnx', batch='dynamic')
                result['onnxruntime'] = args.batch / bench_onnxruntime(path, x, args.iters, args.threads)
            cells = [f"{result[e]:.1f}" if e in result else '-' for e in ('mindspore', 'onnxruntime')]
            rows.append([name] + cells)
            print(f'{name}: ' + ', '.join(f'{e} {v:.1f} images/s' for e, v in result.items()), flush=True)
    print()
    print(compare.markdown_table(['backbone', 'MindSpore graph (img/s)', 'onnxruntime (img/s)'], rows))
    print(f'load average (1m 5m 15m): {compare.load_average()}; '
          'for ratios to PyTorch in the same run: --compare torch')
    return 0


if __name__ == '__main__':
    sys.exit(main())
