# ViT-T (patch 9, 144 tokens) + ArcFace on CASIA-WebFace (reference table row): AdamW 1e-3, wd 0.1,
# 40 epochs with 4 warmup epochs, batch 128/device.
_base_ = ['../_base_/models/vit_t.py', '../_base_/datasets/casia.py',
          '../_base_/schedules/adamw_vit.py', '../_base_/default_runtime.py']
model = dict(head=dict(num_classes=10572, sample_rate=1.0))
