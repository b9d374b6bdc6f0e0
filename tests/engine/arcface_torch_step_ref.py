"""PyTorch transcription of the reference trainer's (arcface_torch) training step, for parity tests.

Written from the reference sources' facts (recognition/arcface_torch: backbones/iresnet.py,
losses.py CombinedMarginLoss, partial_fc_v2.py PartialFC_V2, train_v2.py), single process:

* ``IResNet``: module and parameter names equal to the reference's, so ``state_dict()`` keys are the
  ones its ``backbone.pth`` files hold (conv1, bn1, prelu, layer1..4.N.{bn1,conv1,bn2,prelu,conv2,bn3,
  downsample.0/1}, bn2, fc, features); BN eps 1e-5, PyTorch BN momentum 0.1; ``features.weight``
  fixed at 1 and not trainable.
* ``CombinedMarginLoss``: the m1 = 1, m3 = 0 (ArcFace) path: arccos, add m2 to the target angle and
  cos again, all in place under ``torch.no_grad()``, then ``* s`` outside it. So the value is
  cos(theta + m2) (no fallback past pi - m2) and d(logit)/d(cos) = s for every logit, target included.
* ``PartialFCV2``: sample rate 1 on one rank: normalize embeddings and centres (F.normalize, eps
  1e-12), linear, clamp(-1, 1), margin, then the reference's hand-written cross entropy: loss =
  -mean(log(clamp_min(softmax_target, 1e-30))), gradient (softmax - onehot) / B.
* ``reference_step``: train_v2.py's fp32 branch: loss.backward(); clip_grad_norm_(backbone
  parameters, 5); opt.step(); opt.zero_grad(); the lr of the step is set before it (its
  PolyScheduler steps after opt.step, so step k uses the schedule's value at k - 1).
  The optimizer is ``torch.optim.SGD([{params: backbone}, {params: partial fc}], lr, momentum=0.9,
  weight_decay=wd)``: decay on every parameter (BN, PReLU, biases, class centres).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['IResNet', 'iresnet18', 'CombinedMarginLoss', 'PartialFCV2', 'build_reference_optimizer',
           'reference_step']


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-05)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-05)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """(B, 3, 112, 112) -> (B, num_features); the reference's layer order and init."""

    def __init__(self, layers, num_features=512, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            down = nn.Sequential(nn.Conv2d(cin, width, kernel_size=1, stride=2, bias=False),
                                 nn.BatchNorm2d(width, eps=1e-05))
            blocks = [IBasicBlock(cin, width, 2, down)] + [IBasicBlock(width, width) for _ in range(n - 1)]
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def iresnet18(**kwargs):
    return IResNet((2, 2, 2, 2), **kwargs)


class CombinedMarginLoss(nn.Module):
    """The reference's margin on (B, C) clamped cosines -> (B, C) scaled logits (m1=1, m3=0 path only)."""

    def __init__(self, s=64.0, m1=1.0, m2=0.5, m3=0.0):
        super().__init__()
        if m1 != 1.0 or m3 != 0.0:
            raise ValueError('only the ArcFace path (m1=1, m3=0) is transcribed')
        self.s, self.m2 = s, m2

    def forward(self, logits, labels):
        rows = torch.where(labels != -1)[0]
        cols = labels[rows].view(-1)
        target = logits[rows, cols]
        with torch.no_grad():
            target.arccos_()
            logits.arccos_()
            logits[rows, cols] = target + self.m2
            logits.cos_()
        return logits * self.s


class _CrossEntropy(torch.autograd.Function):
    """The reference's hand-written softmax cross entropy (one rank: its all-reduces are identities)."""

    @staticmethod
    def forward(ctx, logits, labels):
        prob = logits - logits.max(dim=1, keepdim=True)[0]
        prob = prob.exp()
        prob = prob / prob.sum(dim=1, keepdim=True)
        rows = torch.where(labels.view(-1) != -1)[0]
        picked = torch.zeros(logits.size(0), 1, dtype=logits.dtype)
        picked[rows] = prob[rows].gather(1, labels.view(-1, 1)[rows])
        ctx.save_for_backward(rows, prob, labels.view(-1, 1))
        return -picked.clamp_min(1e-30).log().mean()

    @staticmethod
    def backward(ctx, grad):
        rows, prob, labels = ctx.saved_tensors
        onehot = torch.zeros(rows.size(0), prob.size(1), dtype=prob.dtype)
        onehot.scatter_(1, labels[rows], 1)
        out = prob.clone()
        out[rows] -= onehot
        return out / prob.size(0) * grad.item(), None


class PartialFCV2(nn.Module):
    """PartialFC_V2 at sample rate 1 on one rank: (B, E) embeddings, (B,) labels -> scalar loss."""

    def __init__(self, margin_loss, embedding_size, num_classes):
        super().__init__()
        self.margin_softmax = margin_loss
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes, embedding_size)))

    def forward(self, embeddings, labels):
        labels = labels.long().view(-1, 1)
        logits = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1, 1)
        logits = self.margin_softmax(logits, labels)
        return _CrossEntropy.apply(logits, labels)


def build_reference_optimizer(backbone, partial_fc, lr=0.1, weight_decay=5e-4):
    """train_v2.py's SGD: one decay for every parameter, backbone group then partial-fc group."""
    return torch.optim.SGD(params=[{'params': backbone.parameters()}, {'params': partial_fc.parameters()}],
                           lr=lr, momentum=0.9, weight_decay=weight_decay)


def reference_step(backbone, partial_fc, opt, img, labels, lr, max_norm=5.0):
    """One fp32 train_v2.py iteration at learning rate ``lr``; returns the loss (float)."""
    for group in opt.param_groups:
        group['lr'] = lr
    loss = partial_fc(backbone(img), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(backbone.parameters(), max_norm)
    opt.step()
    opt.zero_grad()
    return float(loss.item())


def poly_lr(base_lr, step, max_steps, warmup_steps=0, power=1.0):
    """The reference PolyScheduler's lr at scheduler step ``step`` (0 = first iteration)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    alpha = (1.0 - (step - warmup_steps) / (max_steps - warmup_steps)) ** power
    return base_lr * alpha if not math.isnan(alpha) else 0.0
