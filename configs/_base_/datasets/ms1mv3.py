# MS1MV3 (InsightFace "MS1M-RetinaFace", folder ms1m-retinaface-t1): 93,431 identities, 5,179,510
# aligned 112x112 images (num_classes / num_image of arcface_torch's ms1mv3_*.py recipes), as
# train.rec/train.idx/property plus the verification .bin files (docs/dataset.md).
# Experiments set model.head.num_classes=93431.
_base_ = './insightface_rec.py'
# num_images: the image count of that package (the dry run's steps per epoch when the data is absent).
train_dataloader = dict(num_images=5_179_510, dataset=dict(data_root='data/ms1mv3'))
val_evaluators = [dict(type='VerificationEvaluator', bin_path=f'data/ms1mv3/{target}.bin', name=target)
                  for target in ('lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw')]
