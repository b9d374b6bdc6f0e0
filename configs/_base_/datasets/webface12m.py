# WebFace12M (parts 0-2 of WebFace42M, the cleaned WebFace260M): 617,970 identities, 12,720,066
# aligned 112x112 images (num_classes / num_image of arcface_torch's wf12m_*.py recipes), packed into
# train.rec/train.idx, with the verification .bin files copied beside them (docs/dataset.md).
# Experiments set model.head.num_classes=617970.
_base_ = './insightface_rec.py'
# num_images: the image count of that package (the dry run's steps per epoch when the data is absent).
train_dataloader = dict(num_images=12_720_066, dataset=dict(data_root='data/webface12m'))
val_evaluators = [dict(type='VerificationEvaluator', bin_path=f'data/webface12m/{target}.bin', name=target)
                  for target in ('lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw')]
