# The reference CNN recipe on MS1MV2: SGD 0.1, momentum 0.9, weight decay 5e-4, linear decay to 0
# stepped per iteration, 20 epochs (5.8M images: ~45k iterations per epoch at batch 128 x 1).
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4, no_decay_norm_bias=True)
lr_schedule = dict(type='PolyLR', power=1.0, warmup_epochs=0)
train_cfg = dict(max_epochs=20)
