# The reference CNN recipe on MS1MV2: SGD 0.1, momentum 0.9, weight decay 5e-4, linear decay to 0
# stepped per iteration, 20 epochs (5.8M images: ~45k iterations per epoch at batch 128 x 1).
_base_ = './sgd_poly_20e.py'
