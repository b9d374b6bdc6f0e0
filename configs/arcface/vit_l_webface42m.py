# ViT-L + CosFace (s=64, m=0.4) on WebFace42M, after arcface_torch's wf42m_pfc03_40epoch_64gpu_vit_l.py:
# AdamW lr 1e-3, wd 0.1, 40 epochs, 4 warmup epochs, PartialFC rate 0.3, batch 384/device.
# Global batch 384 x 64 GPUs = 24,576 (eight hosts).
# The lr is the recipe's for that global batch; neither arcface_torch nor facekit rescales it with the
# device count, so train on 64 devices (docs/distributed.md) to match the recipe.
# Backbone options of its vit_l_dp005_mask_005: stochastic depth 0.05, 5% token masking, recompute.
# On 8 devices, optimizer.accumulative_counts=8 gives the same global batch (a variant, not a published recipe).
_base_ = ['../_base_/models/vit_l.py', '../_base_/datasets/webface42m.py',
          '../_base_/schedules/adamw_vit.py', '../_base_/default_runtime.py']
model = dict(backbone=dict(drop_path_rate=0.05, mask_ratio=0.05),
             head=dict(num_classes=2059906, sample_rate=0.3),
             loss=dict(_delete_=True, type='CosFaceLoss', s=64.0, m=0.4))
train_dataloader = dict(batch_size=384)
