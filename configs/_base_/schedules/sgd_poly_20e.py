# SGD lr 0.1, momentum 0.9, weight decay 5e-4 (none on biases/BN/PReLU), no warmup, linear decay to 0
# stepped per iteration, 20 epochs: the CNN schedule shared by the CASIA-WebFace, MS1MV2 and
# arcface_torch recipes. An experiment overrides what its recipe changes (lr, weight decay, warmup,
# epochs). The lr is the peak for the recipe's global batch; facekit, like arcface_torch, does not
# rescale it with the number of devices (docs/model_zoo.md, "Recipes at scale").
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4, no_decay_norm_bias=True)
lr_schedule = dict(type='PolyLR', power=1.0, warmup_epochs=0)
train_cfg = dict(max_epochs=20)
