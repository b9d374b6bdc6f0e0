# The reference ViT recipe: AdamW lr 1e-3, weight decay 0.1, 40 epochs, linear warmup for the first
# tenth of training, then linear decay to 0, stepped per iteration.
optimizer = dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, no_decay_norm_bias=True)
lr_schedule = dict(type='PolyLR', power=1.0, warmup_epochs=4)
train_cfg = dict(max_epochs=40)
