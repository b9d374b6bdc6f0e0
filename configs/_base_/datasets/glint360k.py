# Glint360K (InsightFace "Glint360K", folder glint360k): 360,232 identities, 17,091,657 aligned
# 112x112 images (num_classes / num_image of arcface_torch's glint360k_*.py recipes), as
# train.rec/train.idx plus the verification .bin files copied beside them (docs/dataset.md).
# Experiments set model.head.num_classes=360232.
_base_ = './insightface_rec.py'
# num_images: the image count of that package (the dry run's steps per epoch when the data is absent).
train_dataloader = dict(num_images=17_091_657, dataset=dict(data_root='data/glint360k'))
val_evaluators = [dict(type='VerificationEvaluator', bin_path=f'data/glint360k/{target}.bin', name=target)
                  for target in ('lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw')]
