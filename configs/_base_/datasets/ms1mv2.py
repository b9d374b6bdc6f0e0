# MS1MV2 (InsightFace "faces_emore"): 85,742 identities, 5.8M aligned 112x112 images, as
# train.rec/train.idx/property plus the verification .bin files (docs/dataset.md).
# Experiments set model.head.num_classes=85742.
train_dataloader = dict(
    batch_size=128,          # per device
    num_workers=2,
    shuffle=True,
    drop_remainder=True,     # PartialFC needs a constant batch
    dataset=dict(
        type='MXFaceDataset',
        data_root='data/ms1mv2',
        pipeline=[
            dict(type='RandomHorizontalFlip', prob=0.5),
            dict(type='Normalize'),          # (x/255 - 0.5)/0.5
            dict(type='ToCHW'),
        ]),
)
val_evaluators = [
    dict(type='VerificationEvaluator', bin_path='data/ms1mv2/lfw.bin', name='lfw'),
    dict(type='VerificationEvaluator', bin_path='data/ms1mv2/cfp_fp.bin', name='cfp_fp'),
    dict(type='VerificationEvaluator', bin_path='data/ms1mv2/agedb_30.bin', name='agedb_30'),
    dict(type='VerificationEvaluator', bin_path='data/ms1mv2/calfw.bin', name='calfw'),
    dict(type='VerificationEvaluator', bin_path='data/ms1mv2/cplfw.bin', name='cplfw'),
]
