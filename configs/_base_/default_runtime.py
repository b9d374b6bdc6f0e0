# Runtime defaults shared by every experiment; an experiment overrides only what differs.
runtime = dict(
    device_target='auto',   # CPU | GPU | Ascend | auto (first available of Ascend, GPU, CPU)
    mode='graph',           # graph (compiled train step) | pynative (eager, for debugging)
    seed=2048,
    log_interval=50,        # iterations between log lines
    checkpoint_interval=1,  # epochs between checkpoints
    max_keep_ckpts=3,
)
work_dir = None             # default: work_dirs/<config file name>
