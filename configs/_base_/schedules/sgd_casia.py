# The reference CNN recipe on CASIA-WebFace: SGD 0.1, momentum 0.9, weight decay 5e-4 (no decay on
# biases/BN/PReLU), linear decay to 0 stepped per iteration, 20 epochs, batch 128 per device.
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4, no_decay_norm_bias=True)
lr_schedule = dict(type='PolyLR', power=1.0, warmup_epochs=0)
train_cfg = dict(max_epochs=20)
