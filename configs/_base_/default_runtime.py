# Runtime defaults shared by every experiment; an experiment overrides only what differs.
runtime = dict(
    device_target='auto',   # CPU | GPU | Ascend | auto (first available of Ascend, GPU, CPU)
    mode='graph',           # graph (compiled train step) | pynative (eager, for debugging)
    seed=2048,
    log_interval=50,        # iterations between log lines
    checkpoint_interval=1,  # epochs between checkpoints
    max_keep_ckpts=3,
    eval_interval=1,        # epochs between verification evaluations (0: only after training)
    amp_level='auto',       # auto: GPU/Ascend O2 (fp16 backbone, fp32 norms/head/loss), CPU O0 (fp32) | O0, O2, O3 pinned
    loss_scale=None,        # None: the level's default (auto on GPU/Ascend: dynamic from 65536, x2 per 100 clean
                            # steps) | 'none' | 'dynamic' | a fixed number | dict(mode='dynamic', init_scale=..., window=...)
    clip_grad_norm=5.0,     # max global L2 norm of the clipped gradients (None: off); the reference clips at 5
    clip_prefixes=['backbone.'],  # whose gradients are clipped (the reference: backbone only)
    nan_patience=20,        # stop after this many consecutive unhealthy steps (NaN/Inf loss or gradients)
    jit_level=None,         # MindSpore graph compiler level (O0/O1/O2); None keeps MindSpore's default
)
# The run's record (facekit.engine.visualizer): 'local' = work_dir/metrics.jsonl (each iteration's loss, lr,
# loss scale, gradient norm, samples/s, data and step time, skipped steps; each evaluation) and, with
# plot=True, work_dir/curves.png at the end; 'tensorboard' adds event files in work_dir/tensorboard
# (pip install 'facekit[tensorboard]'). interval: iterations per training record.
visualizer = dict(backends=['local'], interval=1, plot=True)
work_dir = None             # default: work_dirs/<config file name>
# With no `hooks` key, the Runner uses LoggerHook(log_interval), CheckpointHook(checkpoint_interval,
# max_keep_ckpts) and EvalHook(eval_interval) from `runtime`, plus any `custom_hooks`.
custom_hooks = []
