# The reference CNN recipe on CASIA-WebFace: SGD 0.1, momentum 0.9, weight decay 5e-4 (no decay on
# biases/BN/PReLU), linear decay to 0 stepped per iteration, 20 epochs, batch 128 per device.
_base_ = './sgd_poly_20e.py'
