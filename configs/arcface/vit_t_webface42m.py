# ViT-T + CosFace (s=64, m=0.4) on WebFace42M, after arcface_torch's wf42m_pfc03_40epoch_8gpu_vit_t.py:
# AdamW lr 1e-3, wd 0.1, 40 epochs, 4 warmup epochs, PartialFC rate 0.3, batch 512/device.
# Global batch 512 x 8 GPUs = 4,096 (one host).
# The lr is the recipe's for that global batch; neither arcface_torch nor facekit rescales it with the
# device count, so train on 8 devices (docs/distributed.md) to match the recipe.
# Backbone options of its vit_t_dp005_mask0: stochastic depth 0.05, no token masking.
_base_ = ['../_base_/models/vit_t.py', '../_base_/datasets/webface42m.py',
          '../_base_/schedules/adamw_vit.py', '../_base_/default_runtime.py']
model = dict(backbone=dict(drop_path_rate=0.05, mask_ratio=0.0),
             head=dict(num_classes=2059906, sample_rate=0.3),
             loss=dict(_delete_=True, type='CosFaceLoss', s=64.0, m=0.4))
train_dataloader = dict(batch_size=512)
