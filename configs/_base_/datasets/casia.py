# CASIA-WebFace (InsightFace "faces_webface_112x112"): 10,572 identities, 0.49M aligned
# 112x112 images, as train.rec/train.idx/property plus the verification .bin files
# (docs/dataset.md). Experiments set model.head.num_classes=10572.
train_dataloader = dict(
    batch_size=128,          # per device
    num_workers=2,
    shuffle=True,
    drop_remainder=True,     # PartialFC needs a constant batch
    dataset=dict(
        type='MXFaceDataset',
        data_root='data/casia_webface',
        pipeline=[
            dict(type='RandomHorizontalFlip', prob=0.5),
            dict(type='Normalize'),          # (x/255 - 0.5)/0.5
            dict(type='ToCHW'),
        ]),
)
val_evaluators = [
    dict(type='VerificationEvaluator', bin_path='data/casia_webface/lfw.bin', name='lfw'),
    dict(type='VerificationEvaluator', bin_path='data/casia_webface/cfp_fp.bin', name='cfp_fp'),
    dict(type='VerificationEvaluator', bin_path='data/casia_webface/agedb_30.bin', name='agedb_30'),
    dict(type='VerificationEvaluator', bin_path='data/casia_webface/calfw.bin', name='calfw'),
    dict(type='VerificationEvaluator', bin_path='data/casia_webface/cplfw.bin', name='cplfw'),
]
