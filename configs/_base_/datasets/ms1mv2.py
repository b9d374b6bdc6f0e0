# MS1MV2 (InsightFace "faces_emore"): 85,742 identities, 5.8M aligned 112x112 images, as
# train.rec/train.idx/property plus the verification .bin files (docs/dataset.md).
# Experiments set model.head.num_classes=85742.
# num_images: the image count of that package (the dry run's steps per epoch when the data is absent).
_base_ = './insightface_rec.py'
train_dataloader = dict(num_images=5_822_653, dataset=dict(data_root='data/ms1mv2'))
val_evaluators = [dict(type='VerificationEvaluator', bin_path=f'data/ms1mv2/{target}.bin', name=target)
                  for target in ('lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw')]
