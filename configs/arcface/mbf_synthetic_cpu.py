# The README's main job: train on the bundled synthetic identities on 2 CPU cores, then verify
# on held-out identities and print the accuracy beside the raw-pixel floor of the same pairs.
_base_ = ['../_base_/datasets/synthetic.py', '../_base_/default_runtime.py']
model = dict(
    type='FaceRecognizer',
    backbone=dict(type='VisionTransformer', embed_dim=64, depth=2, num_heads=2, mlp_ratio=4.0,
                  embedding_size=128),
    head=dict(type='PartialFCHead', embedding_size=128, num_classes=200, sample_rate=1.0),
    loss=dict(type='ArcFaceLoss', s=32.0, m=0.3),
)
optimizer = dict(type='AdamW', lr=2e-3, weight_decay=0.05)
lr_schedule = dict(type='PolyLR', power=1.0, warmup_epochs=0.2)
train_cfg = dict(max_epochs=4, raw_pixel_floor=True)
runtime = dict(device_target='CPU', seed=0, log_interval=20, eval_interval=0, checkpoint_interval=1)
