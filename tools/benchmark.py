"""Benchmarks (never timing assertions in tests): `python tools/benchmark.py {data,train,infer} ...`.

Each subcommand lives in tools/benchmarks/<name>.py and exposes main(argv).
"""
import importlib.util
import os.path as osp
import sys

HERE = osp.join(osp.dirname(osp.abspath(__file__)), 'benchmarks')
COMMANDS = {'data': 'data loading: images/sec decoding 112x112 records with N workers',
            'train': 'training step: samples/sec and peak RSS per backbone (--compare torch: vs PyTorch)',
            'infer': 'embedding throughput: images/sec in MindSpore and onnxruntime (--compare torch: vs PyTorch)'}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = '\n'.join(f'  {k:6s} {v}' for k, v in COMMANDS.items())
        print(f'usage: python tools/benchmark.py COMMAND [options]\ncommands:\n{lines}', file=sys.stderr)
        return 2
    path = osp.join(HERE, argv[0] + '.py')
    if not osp.isfile(path):
        print(f'benchmark {argv[0]!r} is not available: {path} is missing', file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(f'facekit_benchmark_{argv[0]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv[1:])


if __name__ == '__main__':
    sys.exit(main())
