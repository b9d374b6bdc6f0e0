# mobilefacenet backbone + PartialFC head (all classes kept on one device) + ArcFace (s=64, m=0.5).
# num_classes is CASIA-WebFace's; dataset configs / experiments override it.
model = dict(
    type='FaceRecognizer',
    backbone=dict(type='mobilefacenet', embedding_size=512),
    head=dict(type='PartialFCHead', embedding_size=512, num_classes=10572, sample_rate=1.0),
    loss=dict(type='ArcFaceLoss', s=64.0, m=0.5),
)
