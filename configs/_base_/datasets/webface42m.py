# WebFace42M (all ten parts, the cleaned WebFace260M): 2,059,906 identities, 42,474,557 aligned
# 112x112 images (num_classes / num_image of arcface_torch's wf42m_*.py recipes), packed into
# train.rec/train.idx, with the verification .bin files copied beside them (docs/dataset.md).
# Experiments set model.head.num_classes=2059906.
_base_ = './insightface_rec.py'
# num_images: the image count of that package (the dry run's steps per epoch when the data is absent).
train_dataloader = dict(num_images=42_474_557, dataset=dict(data_root='data/webface42m'))
val_evaluators = [dict(type='VerificationEvaluator', bin_path=f'data/webface42m/{target}.bin', name=target)
                  for target in ('lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw')]
