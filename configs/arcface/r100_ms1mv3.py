# IResNet-100 + ArcFace (s=64, m=0.5) on MS1MV3, after arcface_torch's ms1mv3_r100.py:
# SGD lr 0.1, wd 5e-4, 20 epochs, no warmup, PartialFC rate 1.0, batch 128/device.
# Global batch 128 x 8 GPUs = 1,024 (the file names no GPU count: one 8-GPU host assumed).
# The lr is the recipe's for that global batch; neither arcface_torch nor facekit rescales it with the
# device count, so train on 8 devices (docs/distributed.md) to match the recipe.
# Another revision of the recipe file has lr 0.2 and 25 epochs (docs/model_zoo.md).
_base_ = ['../_base_/models/iresnet100.py', '../_base_/datasets/ms1mv3.py',
          '../_base_/schedules/sgd_poly_20e.py', '../_base_/default_runtime.py']
model = dict(head=dict(num_classes=93431, sample_rate=1.0))
