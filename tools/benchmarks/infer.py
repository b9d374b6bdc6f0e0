"""Embedding throughput (images/sec) in MindSpore and onnxruntime, CPU, fp32.

    python tools/benchmark.py infer [--backbones iresnet50 mobilefacenet vit_t] [--batch 64]
                                    [--iters 5] [--engines mindspore onnxruntime] [--threads N]

Each engine embeds random (B, 3, 112, 112) batches with a random-initialised backbone (speed does
not depend on the weights): one warm-up call (graph compilation / session optimisation), then
``--iters`` timed calls; the median call gives images/sec. MindSpore runs the backbone in graph
mode; onnxruntime runs the file ``facekit.apis.export`` writes (dynamic batch) with all graph
optimisations. Figures on a shared machine are noisy: compare engines in the same run.
"""
import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time


# PyTorch reference on the development machine (DESIGN.md, inference batch 64, fp32).
PYTORCH_REFERENCE = {'iresnet18': 29.4, 'iresnet50': 12.5, 'mobilefacenet': 87.8, 'vit_t': 43.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Embedding throughput benchmark (images/sec).')
    parser.add_argument('--backbones', nargs='+', default=['iresnet50', 'mobilefacenet', 'vit_t'])
    parser.add_argument('--engines', nargs='+', default=['mindspore', 'onnxruntime'],
                        choices=['mindspore', 'onnxruntime'])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--iters', type=int, default=5, help='timed calls per engine (after one warm-up)')
    parser.add_argument('--threads', type=int, default=0,
                        help='onnxruntime intra-op threads (0: one per core, onnxruntime default)')
    return parser.parse_args(argv)


def _timed(fn, iters):
    fn()  # warm-up: compilation / allocation
    times = []
    for _ in range(iters):
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


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import facekit.models  # noqa: F401
    from facekit.apis.export import export_backbone
    from facekit.utils.runtime import setup_runtime
    from facekit.registry import BACKBONES

    setup_runtime('auto', mode='graph')
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 112, 112)).astype(np.float32)
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
            ref = PYTORCH_REFERENCE.get(name)
            cells = [f"{result[e]:.1f}" if e in result else '-' for e in ('mindspore', 'onnxruntime')]
            ratio = f'{max(result.values()) / ref:.2f}x' if ref else '-'
            rows.append([name] + cells + [f'{ref}' if ref else '-', ratio])
            print(f'{name}: ' + ', '.join(f'{e} {v:.1f} images/s' for e, v in result.items()), flush=True)
    header = ['backbone', 'MindSpore graph (img/s)', 'onnxruntime (img/s)', 'PyTorch ref (img/s)', 'best / ref']
    print()
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for r in rows:
        print('| ' + ' | '.join(r) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
