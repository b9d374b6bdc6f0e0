"""Vision Transformer for face recognition (insightface arcface_torch's ViT).

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, as adapted for faces by
insightface: 9x9 patches (144 tokens for 112x112, no CLS token), learned position embedding,
pre-norm blocks with 8-head attention (no qkv bias) and a ReLU6 MLP of ratio 4; the head is
LayerNorm -> flatten(144*dim) -> Linear(dim) -> BN1d -> Linear(embedding) -> BN1d. Training
options: stochastic depth (``drop_path_rate``), random token masking (``mask_ratio``: a random
``mask_ratio`` share of tokens skips the transformer and is replaced by a learned mask token
before the head, as in arcface_torch), and per-block recomputation (``use_recompute``).
"""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, TruncatedNormal, initializer

from ...registry import BACKBONES
from .layers import drop_path_scales, torch_conv_default_init

__all__ = ['VisionTransformer', 'vit_t', 'vit_s', 'vit_b', 'vit_l']


def _dense(in_c, out_c, has_bias=True):
    # Reference init: truncated normal std 0.02, zero bias.
    return nn.Dense(in_c, out_c, has_bias=has_bias, weight_init=TruncatedNormal(0.02), bias_init='zeros')


class QKVLinear(nn.Dense):
    """The fused q/k/v projection: one (3D, D) ``weight`` (and (3D,) ``bias``), as the reference stores
    it, returning ``(q, k, v)``, each (B*N, D), from row blocks of that weight.

    Slicing the (3D, D) weight instead of the (B*N, 3D) activation keeps the parameter fused (same
    name and shape as the reference, one cell for weight import) while the per-step copy shrinks
    from B*N*3D to 3*D*D values: the backward of the activation slices was 11-16% of the vit_t
    train step's op time and this form removes it.
    """

    def __init__(self, dim, has_bias=False):
        super().__init__(dim, 3 * dim, has_bias=has_bias, weight_init=TruncatedNormal(0.02), bias_init='zeros')
        self.dim = dim
        self.matmul_t = ops.MatMul(transpose_b=True)

    def _project(self, x2d, start):
        y = self.matmul_t(x2d, self.weight[start:start + self.dim])
        if self.has_bias:
            y = y + self.bias[start:start + self.dim]
        return y

    def construct(self, x):
        x2d = x.reshape(-1, self.dim)
        return self._project(x2d, 0), self._project(x2d, self.dim), self._project(x2d, 2 * self.dim)


class Attention(nn.Cell):
    """Multi-head self-attention on (B, N, D) tokens.

    Args:
        dim: token width D.
        num_heads: attention heads (D must divide evenly).
        qkv_bias: bias on the fused qkv projection.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'Attention dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = QKVLinear(dim, has_bias=qkv_bias)
        self.proj = _dense(dim, dim)
        self.attn_drop = nn.Dropout(p=attn_drop) if attn_drop > 0 else None
        self.proj_drop = nn.Dropout(p=proj_drop) if proj_drop > 0 else None
        self.batch_matmul_qk = ops.BatchMatMul(transpose_b=True)
        self.batch_matmul_av = ops.BatchMatMul()

    def _heads(self, y, b, n):
        return y.reshape(b, n, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x)
        # The scale is folded into q (N*hd multiplies) rather than the (N, N) scores.
        q = self._heads(q, b, n) * self.scale
        k = self._heads(k, b, n)
        v = self._heads(v, b, n)
        attn = ops.softmax(self.batch_matmul_qk(q, k), axis=-1)
        if self.attn_drop is not None:
            attn = self.attn_drop(attn)
        out = self.batch_matmul_av(attn, v).transpose(0, 2, 1, 3).reshape(b, n, d)
        out = self.proj(out)
        if self.proj_drop is not None:
            out = self.proj_drop(out)
        return out


class Mlp(nn.Cell):
    """Linear(dim, hidden) -> ReLU6 -> Linear(hidden, dim)."""

    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = _dense(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = _dense(hidden, dim)
        self.drop = nn.Dropout(p=drop) if drop > 0 else None

    def construct(self, x):
        x = self.act(self.fc1(x))
        if self.drop is not None:
            x = self.drop(x)
        x = self.fc2(x)
        if self.drop is not None:
            x = self.drop(x)
        return x


class Block(nn.Cell):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

    Call ``block(x)`` or, with stochastic depth, ``block(x, scales)`` where ``scales`` (2, B, 1, 1)
    multiplies the attention and MLP branches. The random draw happens outside the block so that
    a recomputed block (``use_recompute``) replays the same drop decisions in the backward pass.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, drop=0.0, attn_drop=0.0, ln_eps=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm((dim,), epsilon=ln_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm((dim,), epsilon=ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def construct(self, x, scales=None):
        if scales is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.attn(self.norm1(x)) * scales[0]
        return x + self.mlp(self.norm2(x)) * scales[1]


@BACKBONES.register_module()
class VisionTransformer(nn.Cell):
    """ViT backbone: (B, 3, img_size, img_size) float32 -> (B, embedding_size) float32 (un-normalized).

    Args:
        img_size: input height/width in pixels.
        patch_size: patch side; 112/9 -> 12x12 = 144 tokens (the border pixels a stride-9 conv skips
            are dropped, as in the reference).
        embedding_size: output embedding dimension.
        embed_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        qkv_bias: bias on the qkv projection (reference: False).
        drop_rate: dropout after attention projection and in the MLP.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic-depth rate of the last block (linear from 0 over depth).
        mask_ratio: share of tokens randomly masked in training (reference 0.1); 0 disables; eval never masks.
        use_recompute: recompute each block's activations in the backward pass (saves memory, ~1/3 more compute).
        layer_norm_eps: epsilon of every LayerNorm (reference 1e-5; the earlier MindSpore face toolkit's ViT
            keeps MindSpore's default 1e-7).
    """

    def __init__(self, img_size=112, patch_size=9, embedding_size=512, embed_dim=256, depth=12, num_heads=8,
                 mlp_ratio=4.0, qkv_bias=False, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 mask_ratio=0.0, use_recompute=False, layer_norm_eps=1e-5):
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f'VisionTransformer mask_ratio must be in [0, 1), got {mask_ratio}')
        grid = img_size // patch_size
        self.num_patches = grid * grid
        self.embed_dim = embed_dim
        self.embedding_size = embedding_size
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size, pad_mode='valid', has_bias=True)
        torch_conv_default_init(self.patch_embed)
        self.pos_embed = Parameter(initializer(TruncatedNormal(0.02), (1, self.num_patches, embed_dim)),
                                   name='pos_embed')
        self.pos_drop = nn.Dropout(p=drop_rate) if drop_rate > 0 else None
        self.mask_ratio = float(mask_ratio)
        self.len_keep = int(self.num_patches * (1 - self.mask_ratio))
        self.mask_token = Parameter(initializer(Normal(0.02), (1, 1, embed_dim)), name='mask_token')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'VisionTransformer drop_path_rate must be in [0, 1), got {drop_path_rate}')
        # Stochastic-depth rate grows linearly from 0 (first block) to drop_path_rate (last block).
        dpr = np.linspace(0, drop_path_rate, depth) if depth > 1 else np.array([drop_path_rate])
        self.drop_path_rate = float(drop_path_rate)
        self.keep_probs = Tensor((1.0 - dpr).astype(np.float32))
        self.depth = depth
        self.blocks = nn.CellList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, layer_norm_eps)
            for _ in range(depth)])
        if use_recompute:
            for blk in self.blocks:
                blk.recompute()
        self.norm = nn.LayerNorm((embed_dim,), epsilon=layer_norm_eps)
        self.feature = nn.SequentialCell(
            _dense(embed_dim * self.num_patches, embed_dim, has_bias=False),
            nn.BatchNorm1d(embed_dim, eps=2e-5, momentum=0.9),
            _dense(embed_dim, embedding_size, has_bias=False),
            nn.BatchNorm1d(embedding_size, eps=2e-5, momentum=0.9))

    def random_masking(self, x):
        """Keep a random ``len_keep`` of the N tokens per sample.

        Args:
            x: (B, N, D) tokens.
        Returns: (kept (B, len_keep, D), ids_restore (B, N) int32: position of each original token
            in the shuffled order).
        """
        b, n, _ = x.shape
        noise = ops.rand((b, n), dtype=x.dtype)
        _, ids_shuffle = ops.sort(noise, axis=1)
        _, ids_restore = ops.sort(ids_shuffle.astype(x.dtype), axis=1)
        ids_keep = ids_shuffle[:, :self.len_keep]
        return ops.gather(x, ids_keep, 1, batch_dims=1), ids_restore

    def construct(self, x):
        b = x.shape[0]
        x = self.patch_embed(x)                                  # (B, D, 12, 12)
        x = x.reshape(b, self.embed_dim, self.num_patches).transpose(0, 2, 1)  # (B, N, D)
        x = x + self.pos_embed
        if self.pos_drop is not None:
            x = self.pos_drop(x)
        if self.training and self.mask_ratio > 0:
            x = self._masked_blocks(x)
        else:
            x = self.norm(self._blocks(x))
        return self.feature(x.reshape(b, self.num_patches * self.embed_dim))

    def _blocks(self, x):
        if self.training and self.drop_path_rate > 0:
            scales = drop_path_scales(self.keep_probs.astype(x.dtype), (2, x.shape[0], 1, 1))
            for i in range(self.depth):
                x = self.blocks[i](x, scales[i])
            return x
        for blk in self.blocks:
            x = blk(x)
        return x

    def _masked_blocks(self, x):
        """Run the blocks on a random ``len_keep`` of the tokens; put mask tokens back after the norm."""
        b = x.shape[0]
        kept, ids_restore = self.random_masking(x)
        kept = self.norm(self._blocks(kept))
        mask_tokens = ops.broadcast_to(self.mask_token.astype(kept.dtype),
                                       (b, self.num_patches - self.len_keep, self.embed_dim))
        return ops.gather(ops.concat((kept, mask_tokens), 1), ids_restore, 1, batch_dims=1)


def _vit(size, kwargs):
    # The reference sizes share 8 heads, patch 9 and the training options drop_path_rate=0.1,
    # mask_ratio=0.1; the caller's keyword arguments override any of them.
    return VisionTransformer(**{'num_heads': 8, 'patch_size': 9, 'drop_path_rate': 0.1, 'mask_ratio': 0.1,
                                **size, **kwargs})


@BACKBONES.register_module()
def vit_t(**kwargs):
    """ViT-T: width 256, depth 12, ~19.1M parameters."""
    return _vit(dict(embed_dim=256, depth=12, use_recompute=False), kwargs)


@BACKBONES.register_module()
def vit_s(**kwargs):
    """ViT-S: width 512, depth 12, ~76.0M parameters."""
    return _vit(dict(embed_dim=512, depth=12, use_recompute=False), kwargs)


@BACKBONES.register_module()
def vit_b(**kwargs):
    """ViT-B: width 512, depth 24, ~113.8M parameters, recompute on."""
    return _vit(dict(embed_dim=512, depth=24, use_recompute=True), kwargs)


@BACKBONES.register_module()
def vit_l(**kwargs):
    """ViT-L: width 768, depth 24, ~255.7M parameters, recompute on."""
    return _vit(dict(embed_dim=768, depth=24, use_recompute=True), kwargs)
