# vit_t backbone (patch 9, 144 tokens, 8 heads) + PartialFC head + ArcFace (s=64, m=0.5).
# Training options as in the reference ViT recipe: stochastic depth 0.1, 10% token masking.
model = dict(
    type='FaceRecognizer',
    backbone=dict(type='vit_t', embedding_size=512, drop_path_rate=0.1, mask_ratio=0.1, use_recompute=False),
    head=dict(type='PartialFCHead', embedding_size=512, num_classes=10572, sample_rate=1.0),
    loss=dict(type='ArcFaceLoss', s=64.0, m=0.5),
)
