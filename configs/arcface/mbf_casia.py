# MobileFaceNet-0.45G + ArcFace on CASIA-WebFace (reference table row). mbf uses weight decay 1e-4 and 40 epochs.
_base_ = ['../_base_/models/mobilefacenet.py', '../_base_/datasets/casia.py',
          '../_base_/schedules/sgd_casia.py', '../_base_/default_runtime.py']
model = dict(head=dict(num_classes=10572, sample_rate=1.0))
optimizer = dict(weight_decay=1e-4)
train_cfg = dict(max_epochs=40)
