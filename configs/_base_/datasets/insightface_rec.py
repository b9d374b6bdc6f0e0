# Shared loader for InsightFace-packed training sets (train.rec/train.idx/property in data_root).
# Each data-set config (casia.py, ms1mv2.py, ms1mv3.py, glint360k.py, webface*.py) sets data_root and the
# verification targets beside the .rec.
train_dataloader = dict(
    batch_size=128,          # per device
    num_workers=2,
    shuffle=True,
    drop_remainder=True,     # PartialFC needs a constant batch
    dataset=dict(
        type='MXFaceDataset',
        data_root=None,      # set by the data-set config
        pipeline=[
            dict(type='RandomHorizontalFlip', prob=0.5),
            dict(type='Normalize'),          # (x/255 - 0.5)/0.5
            dict(type='ToCHW'),
        ]),
)
