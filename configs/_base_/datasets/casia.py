# CASIA-WebFace (InsightFace "faces_webface_112x112"): 10,572 identities, 0.49M aligned
# 112x112 images, as train.rec/train.idx/property plus the verification .bin files
# (docs/dataset.md). Experiments set model.head.num_classes=10572.
# num_images: the image count of that package (the dry run's steps per epoch when the data is absent).
_base_ = './insightface_rec.py'
train_dataloader = dict(num_images=490_623, dataset=dict(data_root='data/casia_webface'))
val_evaluators = [dict(type='VerificationEvaluator', bin_path=f'data/casia_webface/{target}.bin', name=target)
                  for target in ('lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw')]
