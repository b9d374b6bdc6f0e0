# MobileFaceNet + ArcFace (s=64, m=0.5) on MS1MV3, after arcface_torch's ms1mv3_mbf.py:
# SGD lr 0.1, wd 1e-4, 40 epochs, no warmup, PartialFC rate 1.0, batch 128/device.
# Global batch 128 x 8 GPUs = 1,024 (the file names no GPU count: one 8-GPU host assumed).
# The lr is the recipe's for that global batch; neither arcface_torch nor facekit rescales it with the
# device count, so train on 8 devices (docs/distributed.md) to match the recipe.
_base_ = ['../_base_/models/mobilefacenet.py', '../_base_/datasets/ms1mv3.py',
          '../_base_/schedules/sgd_poly_20e.py', '../_base_/default_runtime.py']
model = dict(head=dict(num_classes=93431, sample_rate=1.0))
optimizer = dict(weight_decay=1e-4)
train_cfg = dict(max_epochs=40)
