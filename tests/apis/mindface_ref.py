"""The earlier MindSpore face toolkit's recognition models (mindspore-lab/mindface, ``recognition/models``)
and train wrappers, re-built in MindSpore for the import tests.

Written from its published architecture so that ``parameters_and_names()`` gives exactly the names
its checkpoints hold: cell attribute names, nesting (``nn.SequentialCell`` / ``nn.CellList`` indices),
MindSpore's own ``nn.PReLU`` (``w``), ``nn.LayerNorm`` (default epsilon 1e-7) and BatchNorm defaults
(eps 1e-5) where mindface uses them, and its forward order (including the ViT's ``k, q, v`` split).
Training-only pieces (dropout, drop path, random mask) are identities here: the tests run eval mode.
"""
import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops


# ----------------------------------------------------------------------------- IResNet (models/iresnet.py)

class IBasicBlock(nn.Cell):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, pad_mode='pad', has_bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, pad_mode='pad', has_bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def construct(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Cell):
    def __init__(self, layers, num_features=512):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, pad_mode='pad', has_bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Dense(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        self.features.gamma.requires_grad = False
        self.flatten = ops.Flatten()

    def _make_layer(self, planes, blocks):
        downsample = nn.SequentialCell([
            nn.Conv2d(self.inplanes, planes, 1, stride=2, has_bias=False),
            nn.BatchNorm2d(planes, eps=1e-05)])
        cells = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        cells += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.SequentialCell(cells)

    def construct(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.flatten(self.bn2(x)))
        return self.features(self.fc(x))


def iresnet50(num_features=512):
    return IResNet([3, 4, 14, 3], num_features)


def iresnet18(num_features=512):
    return IResNet([2, 2, 2, 2], num_features)


# ----------------------------------------------------------------------------- MobileFaceNet (models/mobilefacenet.py)

class ConvBlock(nn.Cell):
    def __init__(self, in_c, out_c, kernel=(1, 1), stride=(1, 1), padding=(0, 0, 0, 0), group=1, act=True):
        super().__init__()
        cells = [nn.Conv2d(in_c, out_c, kernel, group=group, stride=stride, pad_mode='pad', padding=padding,
                           has_bias=False),
                 nn.BatchNorm2d(num_features=out_c)]
        if act:
            cells.append(nn.PReLU(channel=out_c))
        self.layers = nn.SequentialCell(cells)

    def construct(self, x):
        return self.layers(x)


def LinearBlock(in_c, out_c, kernel=(1, 1), stride=(1, 1), padding=(0, 0, 0, 0), group=1):
    return ConvBlock(in_c, out_c, kernel, stride, padding, group, act=False)


class DepthWise(nn.Cell):
    def __init__(self, in_c, out_c, residual=False, stride=(2, 2), group=1):
        super().__init__()
        self.residual = residual
        self.layers = nn.SequentialCell(
            ConvBlock(in_c, group),
            ConvBlock(group, group, (3, 3), stride, (1, 1, 1, 1), group=group),
            LinearBlock(group, out_c))

    def construct(self, x):
        out = self.layers(x)
        return out + x if self.residual else out


class Residual(nn.Cell):
    def __init__(self, c, num_block, group):
        super().__init__()
        self.layers = nn.SequentialCell(*[DepthWise(c, c, True, (1, 1), group) for _ in range(num_block)])

    def construct(self, x):
        return self.layers(x)


class Flatten(nn.Cell):
    def construct(self, x):
        return x.view(x.shape[0], -1)


class GDC(nn.Cell):
    def __init__(self, embedding_size):
        super().__init__()
        self.layers = nn.SequentialCell(
            LinearBlock(512, 512, (7, 7), group=512), Flatten(),
            nn.Dense(512, embedding_size, has_bias=False), nn.BatchNorm1d(embedding_size))

    def construct(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Cell):
    def __init__(self, num_features=512, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        c64, c128 = 64 * scale, 128 * scale
        self.layers = nn.CellList()
        self.layers.append(ConvBlock(3, c64, (3, 3), (2, 2), (1, 1, 1, 1)))
        if blocks[0] == 1:
            self.layers.append(ConvBlock(c64, c64, (3, 3), (1, 1), (1, 1, 1, 1), group=64))
        else:
            self.layers.append(Residual(c64, blocks[0], 128))
        self.layers.extend([
            DepthWise(c64, c64, group=128), Residual(c64, blocks[1], 128),
            DepthWise(c64, c128, group=256), Residual(c128, blocks[2], 256),
            DepthWise(c128, c128, group=512), Residual(c128, blocks[3], 256)])
        self.conv_sep = ConvBlock(c128, 512)
        self.features = GDC(num_features)

    def construct(self, x):
        for cell in self.layers:
            x = cell(x)
        return self.features(self.conv_sep(x))


def get_mbf(num_features=512, blocks=(1, 4, 6, 2), scale=2):
    return MobileFaceNet(num_features, blocks, scale)


# ----------------------------------------------------------------------------- ViT (models/vit.py)

class Identity(nn.Cell):
    """Stands for DropPath (no parameters; identity in eval)."""

    def construct(self, x):
        return x


class Mlp(nn.Cell):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Dense(in_features, hidden_features)
        self.act = nn.ReLU6()
        self.fc2 = nn.Dense(hidden_features, in_features)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Cell):
    def __init__(self, dim, num_heads=8):
        super().__init__()
        self.num_heads = num_heads
        self.scale = ms.Tensor((dim // num_heads) ** -0.5)
        self.qkv = nn.Dense(dim, dim * 3)
        self.proj = nn.Dense(dim, dim)
        self.softmax = nn.Softmax(axis=-1)

    def construct(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).transpose(2, 0, 3, 1, 4)
        k, q, v = qkv[0], qkv[1], qkv[2]          # mindface's order
        attn = self.softmax(ops.BatchMatMul(transpose_b=True)(q, k) * self.scale)
        x = ops.BatchMatMul()(attn, v).transpose(0, 2, 1, 3).reshape(b, n, d)
        return self.proj(x)


class ResidualCell(nn.Cell):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def construct(self, x):
        return self.cell(x) + x


class Block(nn.Cell):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.layer1 = nn.SequentialCell([ResidualCell(nn.SequentialCell([
            nn.LayerNorm((dim,)), Attention(dim, num_heads), Identity()]))])
        self.layer2 = nn.SequentialCell([ResidualCell(nn.SequentialCell([
            nn.LayerNorm((dim,)), Mlp(dim, int(dim * mlp_ratio)), Identity()]))])

    def construct(self, x):
        return self.layer2(self.layer1(x))


class PatchEmbed(nn.Cell):
    def __init__(self, img_size=112, patch_size=9, in_channels=3, embed_dim=768):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size, pad_mode='pad', has_bias=True)

    def construct(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        return x.reshape(b, c, h * w).transpose(0, 2, 1)


class VisionTransformer(nn.Cell):
    def __init__(self, img_size=112, patch_size=9, num_classes=512, embed_dim=768, depth=12, num_heads=8,
                 mlp_ratio=4.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.pos_embed = Parameter(ms.Tensor(np.random.randn(1, self.num_patches, embed_dim).astype(np.float32)),
                                   requires_grad=True)
        self.blocks = nn.SequentialCell([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm((embed_dim,))
        self.feature = nn.SequentialCell(
            nn.Dense(embed_dim * self.num_patches, embed_dim, has_bias=False),
            nn.BatchNorm1d(num_features=embed_dim, eps=2e-5),
            nn.Dense(embed_dim, num_classes, has_bias=False),
            nn.BatchNorm1d(num_features=num_classes, eps=2e-5))

    def construct(self, x):
        b = x.shape[0]
        x = self.patch_embed(x) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.feature(x.reshape(b, self.num_patches * self.embed_dim))


def vit_t(num_features=512):
    return VisionTransformer(num_classes=num_features, embed_dim=256, depth=12, num_heads=8)


# ----------------------------------------------------------------------------- train wrappers

class PartialFC(nn.Cell):
    """models/partial_fc.py: normalized class centres; its Parameter is created as ``mp_weight``."""

    def __init__(self, num_classes, embedding_size=512):
        super().__init__()
        self.weight = Parameter(ms.Tensor(np.random.randn(num_classes, embedding_size).astype(np.float32)),
                                name='mp_weight')

    def construct(self, x):
        n = ops.L2Normalize(axis=1)
        return ops.matmul(n(x), n(self.weight).T)


class TrainPyNetWithLoss(nn.Cell):
    """train.py's MyNetWithLoss (``auto_prefix=False``: backbone names stay bare)."""

    def __init__(self, backbone, num_classes):
        super().__init__(auto_prefix=False)
        self._backbone = backbone
        self.fc = PartialFC(num_classes)

    def construct(self, data, label):
        return ops.reduce_mean(self.fc(self._backbone(data)))


class TrainPyWrapper(nn.Cell):
    """train.py's TrainingWrapper (``auto_prefix=False``) holding the network and its SGD."""

    def __init__(self, network, optimizer):
        super().__init__(auto_prefix=False)
        self.network = network
        self.optimizer = optimizer

    def construct(self, *args):
        return self.network(*args)


class Network(nn.Cell):
    """train_cfg.py's runner.Network (default prefixing: ``_backbone.``, ``fc.``)."""

    def __init__(self, backbone, head):
        super().__init__()
        self._backbone = backbone
        self.fc = head

    def construct(self, data):
        return self.fc(self._backbone(data))


def train_py_network(backbone, num_classes=10):
    """What mindface's train.py hands to ModelCheckpoint: TrainingWrapper(MyNetWithLoss, SGD momentum)."""
    net = TrainPyNetWithLoss(backbone, num_classes)
    opt = nn.SGD(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    return TrainPyWrapper(net, opt)


def train_cfg_network(backbone, num_classes=10):
    """What train_cfg.py's ``Model(Network(net, head), loss_fn, optimizer)`` trains and ModelCheckpoint saves:
    TrainOneStepCell(WithLossCell(Network), Momentum)."""
    net = Network(backbone, PartialFC(num_classes))
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    loss = nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction='mean'))
    return nn.TrainOneStepCell(loss, opt)
