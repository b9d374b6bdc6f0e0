# IResNet-50 + ArcFace on CASIA-WebFace (reference table row): SGD 0.1, wd 5e-4, 20 epochs, batch 128/device.
_base_ = ['../_base_/models/iresnet50.py', '../_base_/datasets/casia.py',
          '../_base_/schedules/sgd_casia.py', '../_base_/default_runtime.py']
model = dict(head=dict(num_classes=10572, sample_rate=1.0))
