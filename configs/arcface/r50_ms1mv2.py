# IResNet-50 + ArcFace on MS1MV2 (reference table row): SGD 0.1, wd 5e-4, 20 epochs, batch 128/device.
_base_ = ['../_base_/models/iresnet50.py', '../_base_/datasets/ms1mv2.py',
          '../_base_/schedules/sgd_ms1mv2.py', '../_base_/default_runtime.py']
model = dict(head=dict(num_classes=85742, sample_rate=1.0))
