"""The Semantic Perceiver of PAM (reference §4).

A SAM-style two-way transformer whose queries are the two mask tokens chosen by the SAM 2 mask decoder
plus 16 learned semantic tokens, and whose keys are the mask decoder's image output. It returns the
refined semantic tokens and a pixel-shuffled version of the refined image keys.

Parameter and buffer names match the official checkpoint below ``model.vision_resampler.``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PerceiverConfig

__all__ = ["SemanticPerceiver", "pam_pixel_shuffle", "random_fourier_grid_pe"]


class _Attention(nn.Module):
    """Multi-head attention with an optional internal width reduction (SAM's ``Attention``)."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal = dim // downsample_rate
        if internal % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the attention width {internal}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[1](F.relu(self.layers[0](x)))


class _TwoWayBlock(nn.Module):
    """SAM's TwoWayAttentionBlock: self-attn, token->image, MLP, image->token."""

    def __init__(self, cfg: PerceiverConfig, skip_first_layer_pe: bool) -> None:
        super().__init__()
        d, h, ds = cfg.hidden_size, cfg.num_heads, cfg.attention_downsample_rate
        self.self_attn = _Attention(d, h)
        self.norm1 = nn.LayerNorm(d)
        self.cross_attn_token_to_image = _Attention(d, h, ds)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = _MLP(d, cfg.mlp_dim)
        self.norm3 = nn.LayerNorm(d)
        self.norm4 = nn.LayerNorm(d)
        self.cross_attn_image_to_token = _Attention(d, h, ds)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            # The official first block replaces (no residual) the queries by their self-attention.
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class _RandomFourierPE(nn.Module):
    """Holds SAM's random Gaussian matrix; the official checkpoint stores it as a persistent buffer."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def forward(self, size: int) -> Tensor:
        return random_fourier_grid_pe(self.positional_encoding_gaussian_matrix, size)


def random_fourier_grid_pe(gaussian_matrix: Tensor, size: int) -> Tensor:
    """Random-Fourier positional encoding of a ``size x size`` grid, as (size*size, 2*num_feats) rows
    in raster order (token ``y*size + x``). Channels are ``[sin(128), cos(128)]``; row 0 of the matrix
    multiplies x, row 1 multiplies y. Computed in float32 like SAM."""
    device = gaussian_matrix.device
    centers = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y = centers[:, None].expand(size, size)
    x = centers[None, :].expand(size, size)
    coords = torch.stack([x, y], dim=-1) * 2 - 1
    coords = coords @ gaussian_matrix.to(torch.float32)
    coords = 2 * math.pi * coords
    pe = torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)
    return pe.reshape(size * size, -1)


def pam_pixel_shuffle(keys: Tensor, feature_size: int, r: int) -> Tensor:
    """PAM's token "pixel shuffle" of the perceiver keys (reference §4.4, fixture quirk 4).

    ``keys`` is (B, F*F, C) in raster order (token ``y*F + x``). The official code reinterprets this
    token-major memory as NCHW and then views it as NHWC, which amounts to

        out[n, e] = K[r*j + dy, r*i + dx, c],  n = i*g + j,  e = dy*(r*C) + dx*C + c,  g = F // r

    i.e. column-block-major tokens with (dy, dx, c) channels. Neither ``pixel_unshuffle`` nor a raster
    space-to-depth reproduce it, and the checkpoint's projector was trained on this order.
    Returns (B, g*g, r*r*C).
    """
    b, n, c = keys.shape
    f = int(feature_size)
    if n != f * f:
        raise ValueError(f"expected {f * f} key tokens for a {f}x{f} feature map, got {n}")
    if r < 1 or f % r:
        raise ValueError(f"shuffle factor {r} must divide the feature size {f}")
    g = f // r
    k = keys.reshape(b, g, r, g, r, c)  # (y_block, dy, x_block, dx, c)
    k = k.permute(0, 3, 1, 2, 4, 5)  # (x_block, y_block, dy, dx, c)
    return k.reshape(b, g * g, r * r * c)


class SemanticPerceiver(nn.Module):
    """Semantic Perceiver. ``feature_size`` is the side of the SAM 2 stride-16 feature map (64 for
    1024-pixel SAM input); the positional-encoding grid and the pixel shuffle follow it."""

    def __init__(self, config: PerceiverConfig, feature_size: int) -> None:
        super().__init__()
        self.config = config
        self.feature_size = int(feature_size)
        d = config.hidden_size
        self.pe_layer = _RandomFourierPE(d // 2)
        self.sem_tokens = nn.Embedding(config.num_sem_tokens, d)
        self.proj = nn.Linear(d * config.frame_shuffle**2, config.token_dim)
        self.layers = nn.ModuleList([_TwoWayBlock(config, skip_first_layer_pe=(i == 0)) for i in range(config.depth)])
        self.final_attn_token_to_image = _Attention(d, config.num_heads, config.attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(d)
        if d * config.image_shuffle**2 != config.token_dim:
            raise ValueError(
                f"image shuffle {config.image_shuffle} gives {d * config.image_shuffle**2}-wide tokens, "
                f"but token_dim is {config.token_dim}"
            )

    def image_pe(self, dtype: torch.dtype | None = None) -> Tensor:
        pe = self.pe_layer(self.feature_size).unsqueeze(0)
        return pe.to(dtype) if dtype is not None else pe

    def forward(self, image_embed: Tensor, mask_tokens: Tensor, shuffle: int) -> tuple[Tensor, Tensor]:
        """``image_embed`` (B, C, F, F) mid image embedding, ``mask_tokens`` (B, T, C) mid mask tokens,
        ``shuffle`` the pixel-shuffle factor (``config.image_shuffle`` -> (B, (F/r)^2, r^2*C) tokens
        used as is; ``config.frame_shuffle`` -> tokens mapped by ``proj``).

        Returns (sem_tokens (B, num_sem_tokens, C), image_tokens (B, N, token_dim)).
        """
        b, c, h, w = image_embed.shape
        if h != self.feature_size or w != self.feature_size:
            raise ValueError(f"expected a {self.feature_size}x{self.feature_size} feature map, got {h}x{w}")
        if shuffle not in (self.config.image_shuffle, self.config.frame_shuffle):
            raise ValueError(
                f"shuffle must be {self.config.image_shuffle} (image) or {self.config.frame_shuffle} (frame), got {shuffle}"
            )
        keys = image_embed.flatten(2).transpose(1, 2)
        n_mask = mask_tokens.shape[1]
        sem = self.sem_tokens.weight.unsqueeze(0).expand(b, -1, -1).to(mask_tokens.dtype)
        queries = torch.cat([mask_tokens, sem], dim=1)
        query_pe = queries
        key_pe = self.image_pe(keys.dtype)

        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe, key_pe)
        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))

        tokens = pam_pixel_shuffle(keys, self.feature_size, shuffle)
        if shuffle != self.config.image_shuffle:
            tokens = self.proj(tokens)
        return queries[:, n_mask:, :], tokens
