"""A PyTorch transcription of insightface arcface_torch's backbones (needs torch), for the .pth parity tests
(tests/apis/test_pth_import.py, test_load_any_format.py) and `tools/benchmark.py {train,infer} --compare torch`.

Written from the reference's facts (recognition/arcface_torch/backbones/{iresnet,mobilefacenet,vit}.py
and get_model in __init__.py): module nesting, attribute names, layer order, epsilons and biases are
the reference's, so ``state_dict()`` keys and shapes equal those of the files arcface_torch writes.
Left out because they change nothing in eval mode on CPU: fp16 autocast regions, gradient
checkpointing, dropout/drop-path (identity at eval), weight initialisation (tests set every value).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['get_model', 'IResNet', 'MobileFaceNet', 'VisionTransformer', 'NormFCArcFace', 'make_train_step']


# ----------------------------------------------------------------------------- IResNet
class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers, num_features=512):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._stage(64, layers[0])
        self.layer2 = self._stage(128, layers[1])
        self.layer3 = self._stage(256, layers[2])
        self.layer4 = self._stage(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def _stage(self, planes, blocks):
        # every stage's first block strides 2 and projects the shortcut (1x1 conv + BN)
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
        mods = [IBasicBlock(self.inplanes, planes, 2, down)]
        self.inplanes = planes
        mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


# ----------------------------------------------------------------------------- MobileFaceNet
class ConvBlock(nn.Module):
    def __init__(self, in_c, out_c, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups=1):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
                                    nn.BatchNorm2d(out_c), nn.PReLU(out_c))

    def forward(self, x):
        return self.layers(x)


class LinearBlock(nn.Module):
    def __init__(self, in_c, out_c, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups=1):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
                                    nn.BatchNorm2d(out_c))

    def forward(self, x):
        return self.layers(x)


class DepthWise(nn.Module):
    def __init__(self, in_c, out_c, residual=False, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(in_c, groups), ConvBlock(groups, groups, kernel, stride, padding, groups),
                                    LinearBlock(groups, out_c))

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, c, num_block, groups):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, (3, 3), (1, 1), (1, 1), groups) for _ in range(num_block)])

    def forward(self, x):
        return self.layers(x)


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class GDC(nn.Module):
    def __init__(self, embedding_size):
        super().__init__()
        self.layers = nn.Sequential(LinearBlock(512, 512, (7, 7), (1, 1), (0, 0), groups=512), Flatten(),
                                    nn.Linear(512, embedding_size, bias=False), nn.BatchNorm1d(embedding_size))

    def forward(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Module):
    def __init__(self, num_features=512, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        c64, c128 = 64 * scale, 128 * scale
        self.layers = nn.ModuleList([ConvBlock(3, c64, (3, 3), (2, 2), (1, 1))])
        if blocks[0] == 1:
            self.layers.append(ConvBlock(c64, c64, (3, 3), (1, 1), (1, 1), groups=64))
        else:
            self.layers.append(Residual(c64, blocks[0], 128))
        self.layers.extend([
            DepthWise(c64, c64, False, (3, 3), (2, 2), (1, 1), 128), Residual(c64, blocks[1], 128),
            DepthWise(c64, c128, False, (3, 3), (2, 2), (1, 1), 256), Residual(c128, blocks[2], 256),
            DepthWise(c128, c128, False, (3, 3), (2, 2), (1, 1), 512), Residual(c128, blocks[3], 256)])
        self.conv_sep = ConvBlock(c128, 512)
        self.features = GDC(num_features)

    def forward(self, x):
        for f in self.layers:
            x = f(x)
        return self.features(self.conv_sep(x))


# ----------------------------------------------------------------------------- ViT
class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, ln_eps=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size=9, embed_dim=256):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """arcface_torch's ViT in eval mode (norm_layer='ln'); ``qkv_bias``/``ln_eps`` only for variants that
    differ from it (tests of what an importer must refuse)."""

    def __init__(self, img_size=112, patch_size=9, num_classes=512, embed_dim=256, depth=12, num_heads=8,
                 qkv_bias=False, ln_eps=1e-5):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.num_patches = (img_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, qkv_bias=qkv_bias, ln_eps=ln_eps)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.feature = nn.Sequential(
            nn.Linear(embed_dim * self.num_patches, embed_dim, bias=False), nn.BatchNorm1d(embed_dim, eps=2e-5),
            nn.Linear(embed_dim, num_classes, bias=False), nn.BatchNorm1d(num_classes, eps=2e-5))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))

    def forward(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.feature(x.reshape(x.shape[0], self.num_patches * self.embed_dim))


_IRESNET = {'r18': (2, 2, 2, 2), 'r34': (3, 4, 6, 3), 'r50': (3, 4, 14, 3), 'r100': (3, 13, 30, 3),
            'r200': (6, 26, 60, 6)}
_VIT = {'vit_t': (256, 12), 'vit_s': (512, 12), 'vit_b': (512, 24), 'vit_l': (768, 24)}


def get_model(name, num_features=512):
    """arcface_torch's ``get_model`` names: r18/34/50/100/200, mbf, mbf_large, vit_t/s/b/l."""
    if name in _IRESNET:
        return IResNet(_IRESNET[name], num_features)
    if name == 'mbf':
        return MobileFaceNet(num_features, (1, 4, 6, 2), 2)
    if name == 'mbf_large':
        return MobileFaceNet(num_features, (2, 8, 12, 4), 4)
    if name in _VIT:
        dim, depth = _VIT[name]
        return VisionTransformer(112, 9, num_features, dim, depth, 8)
    raise ValueError(f'unknown arcface_torch model {name!r}')


# ----------------------------------------------------------------------------- training step (benchmarks)
class NormFCArcFace(nn.Module):
    """Normalized FC over ``num_classes`` centres + ArcFace ``s * cos(theta + m)`` + cross-entropy: arcface_torch's
    PartialFC_V2 at sample_rate 1 with CombinedMarginLoss(s, 1, m, 0), written without its in-place no-grad arccos
    (the gradient flows through cos(theta + m), as in facekit's ArcFaceLoss). Call: (emb (B, E), labels (B,)) -> loss.
    """

    def __init__(self, embedding_size=512, num_classes=1000, s=64.0, m=0.5):
        super().__init__()
        self.s, self.m = s, m
        self.weight = nn.Parameter(0.01 * torch.randn(num_classes, embedding_size))

    def forward(self, embeddings, labels):
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1.0, 1.0)
        target = cosine.gather(1, labels[:, None])
        # theta + m > pi: insightface's fallback cos(theta) - m * sin(m) keeps the logit monotonic
        phi = torch.where(target > math.cos(math.pi - self.m),
                          torch.cos(torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7)) + self.m),
                          target - math.sin(math.pi - self.m) * self.m)
        return F.cross_entropy(self.s * cosine.scatter(1, labels[:, None], phi), labels)


def make_train_step(name, num_classes=1000, lr=0.01, momentum=0.9, weight_decay=5e-4, clip_grad_norm=5.0, seed=0):
    """A train-mode ``name`` backbone + ``NormFCArcFace`` + SGD momentum (no decay on 0/1-d parameters, gradient
    norm clipped at ``clip_grad_norm``), the same step facekit's TrainStep compiles. Returns ``step(img, labels)
    -> float loss``; img (B, 3, 112, 112) float32, labels (B,) int64."""
    torch.manual_seed(seed)
    backbone, head = get_model(name).train(), NormFCArcFace(512, num_classes).train()
    params = list(backbone.parameters()) + list(head.parameters())
    groups = [{'params': [p for p in params if p.ndim > 1], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.ndim <= 1], 'weight_decay': 0.0}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)

    def step(img, labels):
        opt.zero_grad(set_to_none=True)
        loss = head(backbone(img), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        opt.step()
        return loss.item()
    return step


# ----------------------------------------------------------------------------- test fixtures
def randomize_(model, seed=0):
    """Give every BatchNorm affine values and running statistics, every PReLU slope and LayerNorm
    affine a non-trivial value: BN statistics come from one train-mode pass (momentum 1), then the
    running variance is scaled by U(0.5, 2) so it is not the batch's own."""
    g = torch.Generator().manual_seed(seed)

    def rand(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.copy_(rand(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(rand(m.bias.shape, -0.2, 0.2))
                m.momentum = 1.0
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(rand(m.weight.shape, 0.05, 0.6))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(rand(m.weight.shape, 0.7, 1.3))
                m.bias.copy_(rand(m.bias.shape, -0.1, 0.1))
            elif isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.copy_(rand(m.bias.shape, -0.1, 0.1))
        for name, p in model.named_parameters(recurse=False):
            p.copy_(0.02 * torch.randn(p.shape, generator=g))   # ViT pos_embed, mask_token
        model.train()
        model(torch.randn(4, 3, 112, 112, generator=g))
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_var.mul_(rand(m.running_var.shape, 0.5, 2.0))
    return model.eval()


def write_reference(name, out_dir, batch=2, seed=0, layouts=('zip', 'legacy', 'ddp_zip')):
    """Build arcface_torch ``name`` with non-trivial values, save its state_dict as arcface_torch does
    (``<name>_zip.pth``: torch.save default; ``<name>_legacy.pth``: _use_new_zipfile_serialization=False;
    ``<name>_ddp_zip.pth`` / ``_ddp_legacy.pth``: keys prefixed ``module.``), and the eval-mode embeddings of
    ``<name>_input.npy`` in ``<name>_emb.npy``."""
    import collections
    import os
    import numpy as np
    torch.manual_seed(seed)
    model = randomize_(get_model(name), seed)
    x = np.random.default_rng(seed).standard_normal((batch, 3, 112, 112)).astype(np.float32)
    with torch.no_grad():
        emb = model(torch.from_numpy(x)).numpy()
    np.save(os.path.join(out_dir, f'{name}_input.npy'), x)
    np.save(os.path.join(out_dir, f'{name}_emb.npy'), emb)
    sd = model.state_dict()
    for layout in layouts:
        state = collections.OrderedDict(('module.' + k, v) for k, v in sd.items()) if layout.startswith('ddp') else sd
        torch.save(state, os.path.join(out_dir, f'{name}_{layout}.pth'),
                   _use_new_zipfile_serialization=not layout.endswith('legacy'))
