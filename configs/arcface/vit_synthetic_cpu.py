# The README's main job: train on the bundled synthetic identities on 2 CPU cores, then verify
# on held-out identities and print the accuracy beside the raw-pixel floors of the same pairs.
# The backbone is a narrow ViT:
# on MindSpore's CPU kernels it trained ~6x faster per sample than a reduced MobileFaceNet
# (depthwise convolutions are slow there); docs/training.md has the measurements.
_base_ = ['../_base_/datasets/synthetic.py', '../_base_/default_runtime.py']
model = dict(
    type='FaceRecognizer',
    backbone=dict(type='VisionTransformer', embed_dim=64, depth=2, num_heads=2, mlp_ratio=4.0,
                  embedding_size=128),
    # one device, all 200 classes: a plain normalized FC (PartialFC at rate 1 on one rank is the
    # same maths); it also lets any plugin loss replace ArcFace (README's NormFace example).
    head=dict(type='NormFCHead', embedding_size=128, num_classes=200),
    loss=dict(type='ArcFaceLoss', s=32.0, m=0.3),
)
optimizer = dict(type='AdamW', lr=2e-3, weight_decay=0.05)
lr_schedule = dict(type='PolyLR', power=1.0, warmup_epochs=0.2)
train_cfg = dict(max_epochs=6, raw_pixel_floor=True)
runtime = dict(device_target='CPU', seed=0, log_interval=20, eval_interval=0, checkpoint_interval=1)
# TensorBoard event files beside metrics.jsonl and curves.png (tools/setup_env.sh installs tensorboardX)
visualizer = dict(backends=['local', 'tensorboard'])
