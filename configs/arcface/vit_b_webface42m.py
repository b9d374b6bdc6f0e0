# ViT-B + CosFace (s=64, m=0.4) on WebFace42M, after arcface_torch's wf42m_pfc03_40epoch_8gpu_vit_b.py:
# AdamW lr 1e-3, wd 0.1, 40 epochs, 4 warmup epochs, PartialFC rate 0.3, batch 256/device x 12 accumulated.
# Global batch 256 x 12 x 8 GPUs = 24,576 (one host).
# The lr is the recipe's for that global batch; neither arcface_torch nor facekit rescales it with the
# device count, so train on 8 devices (docs/distributed.md) to match the recipe.
# Backbone options of its vit_b_dp005_mask_005: stochastic depth 0.05, 5% token masking, recompute.
_base_ = ['../_base_/models/vit_b.py', '../_base_/datasets/webface42m.py',
          '../_base_/schedules/adamw_vit.py', '../_base_/default_runtime.py']
model = dict(backbone=dict(drop_path_rate=0.05, mask_ratio=0.05),
             head=dict(num_classes=2059906, sample_rate=0.3),
             loss=dict(_delete_=True, type='CosFaceLoss', s=64.0, m=0.4))
train_dataloader = dict(batch_size=256)
optimizer = dict(accumulative_counts=12)
