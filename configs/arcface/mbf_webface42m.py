# MobileFaceNet + CosFace (s=64, m=0.4) on WebFace42M, after arcface_torch's wf42m_pfc02_16gpus_mbf_bs8k.py:
# SGD lr 0.4, wd 1e-4, 20 epochs, 2 warmup epochs, PartialFC rate 0.2, batch 512/device.
# Global batch 512 x 16 GPUs = 8,192 (two hosts).
# The lr is the recipe's for that global batch; neither arcface_torch nor facekit rescales it with the
# device count, so train on 16 devices (docs/distributed.md) to match the recipe.
_base_ = ['../_base_/models/mobilefacenet.py', '../_base_/datasets/webface42m.py',
          '../_base_/schedules/sgd_poly_20e.py', '../_base_/default_runtime.py']
model = dict(head=dict(num_classes=2059906, sample_rate=0.2),
             loss=dict(_delete_=True, type='CosFaceLoss', s=64.0, m=0.4))
train_dataloader = dict(batch_size=512)
optimizer = dict(lr=0.4, weight_decay=1e-4)
lr_schedule = dict(warmup_epochs=2)
