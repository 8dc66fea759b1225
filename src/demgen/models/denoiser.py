"""A conditional denoising U-Net for pixel-space diffusion (DEM <-> image, temporal).

The network sees the noisy target ``x_t`` with the conditioning layers concatenated to
it (SR3 / Palette style: Saharia et al. 2022), and the diffusion step through a
sinusoidal embedding and an MLP (Ho et al. 2020). Optional attributes (land-cover
fractions, season, cloud cover; classes as one-hot) go through a small MLP and are
added to the step embedding; a learned null embedding stands in for them where they are
dropped, which is what classifier-free guidance needs (Ho & Salimans 2022). Dropping the
conditioning image zeroes it and adds a second learned embedding, so "no image" is never
confused with a dark one.

Blocks follow "Improved DDPM" (Nichol & Dhariwal 2021): pre-activation residual blocks
with GroupNorm and the embedding as a per-channel scale and shift, self-attention at the
lowest resolution, zero-initialised output layers (the untrained net outputs 0).

    net = ConditionalDenoiser(target_channels=1, cond_channels=4)   # image (4) -> DEM (1)
    out = net(x_t, t, cond=image)                                   # (B, 1, H, W)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of diffusion steps, ``(B,) -> (B, dim)``.

    ``[cos(t * f_k), sin(t * f_k)]`` with ``f_k = max_period^(-k / (dim/2))``, the
    transformer's position encoding (Vaswani et al. 2017) as DDPM uses it.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2*half)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias, so the residual branch it ends starts as identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, embedding as scale/shift, GN-SiLU-dropout-conv, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))  # (B, out, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels, residual (used at the lowest level)."""

    def __init__(self, ch: int, groups: int, heads: int = 4):
        super().__init__()
        self.heads = math.gcd(heads, ch)
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class ConditionalDenoiser(nn.Module):
    """U-Net ``(x_t, t, cond, attrs) -> eps | x0 | v``, shaped like ``x_t``.

    Args:
        target_channels: channels of the sample being denoised (1 for a DEM).
        cond_channels: conditioning layers concatenated to it (0: unconditional).
        base_channels: width of the first level; level ``i`` has
            ``base_channels * channel_mults[i]`` and half the resolution of level ``i-1``.
        channel_mults: one entry per level (2-3 levels are right for CPU-sized runs).
        num_res_blocks: residual blocks per level on each side.
        attr_dim: length of the attribute vector (0: none).
        attention: self-attention at the lowest resolution.
        groups: GroupNorm groups.
        dropout: dropout inside the residual blocks.

    Inputs of any size work; sizes that are not multiples of ``2**(levels-1)`` are
    padded (replicate) and the output cropped back.
    """

    def __init__(
        self,
        target_channels: int = 1,
        cond_channels: int = 3,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attr_dim: int = 0,
        attention: bool = True,
        groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not channel_mults:
            raise ValueError("channel_mults needs at least one level")
        self.target_channels = target_channels
        self.cond_channels = cond_channels
        self.attr_dim = attr_dim
        self.levels = len(channel_mults)
        chs = [base_channels * m for m in channel_mults]
        self.base_channels = base_channels
        emb_dim = 4 * base_channels

        # step embedding, plus optional attribute and "condition dropped" embeddings
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if attr_dim > 0:
            self.attr_mlp = nn.Sequential(
                nn.Linear(attr_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
            )
            self.null_attrs = nn.Parameter(torch.zeros(emb_dim))
        if cond_channels > 0:
            self.null_cond = nn.Parameter(torch.zeros(emb_dim))

        def res(i: int, o: int) -> ResBlock:
            return ResBlock(i, o, emb_dim, groups, dropout)

        self.stem = nn.Conv2d(target_channels + cond_channels, chs[0], 3, padding=1)
        self.down = nn.ModuleList()  # level i: blocks at H / 2^i
        self.downsample = nn.ModuleList()
        prev = chs[0]
        for i, ch in enumerate(chs):
            self.down.append(
                nn.ModuleList([res(prev if j == 0 else ch, ch) for j in range(num_res_blocks)])
            )
            prev = ch
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid1 = res(chs[-1], chs[-1])
        self.mid_attn = SelfAttention(chs[-1], groups) if attention else nn.Identity()
        self.mid2 = res(chs[-1], chs[-1])
        self.up = nn.ModuleList()  # level i (same indexing as down)
        self.upsample = nn.ModuleList()
        for i, ch in enumerate(chs):
            below = chs[i + 1] if i + 1 < self.levels else chs[-1]  # channels arriving from below
            self.up.append(
                nn.ModuleList(
                    [res(below + ch if j == 0 else ch, ch) for j in range(num_res_blocks)]
                )
            )
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = group_norm(chs[0], groups)
        self.conv_out = zero_init(nn.Conv2d(chs[0], target_channels, 3, padding=1))

    def embed(
        self,
        t: Tensor,
        batch_size: int,
        attrs: Tensor | None,
        drop_cond: Tensor,
        drop_attrs: Tensor,
    ) -> Tensor:
        """Step + attribute (or null) + "no conditioning image" embedding, ``(B, 4*base)``."""
        t = torch.as_tensor(t, device=drop_cond.device)
        t = t.expand(batch_size) if t.ndim == 0 else t
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))  # (B, E)
        if self.attr_dim > 0:
            null = self.null_attrs.expand_as(emb)
            if attrs is None:
                emb = emb + null
            else:
                a = self.attr_mlp(attrs.to(emb.dtype))  # (B, E)
                emb = emb + torch.where(drop_attrs[:, None], null, a)
        if self.cond_channels > 0:
            emb = emb + drop_cond[:, None].to(emb.dtype) * self.null_cond  # (B, E)
        return emb

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        attrs: Tensor | None = None,
        drop_cond: Tensor | None = None,
        drop_attrs: Tensor | None = None,
    ) -> Tensor:
        """Denoise ``x`` (B, target, H, W) at steps ``t`` (B,) or scalar.

        ``cond`` (B, cond_channels, H, W) and ``attrs`` (B, attr_dim) are the conditions;
        ``drop_cond``/``drop_attrs`` (B,) bool mark samples that go without them (training
        dropout, the unconditional half of guidance). A missing ``cond`` or ``attrs``
        counts as dropped.
        """
        B, _, H, W = x.shape
        no = torch.zeros(B, dtype=torch.bool, device=x.device)
        drop_cond = no if drop_cond is None else drop_cond.to(x.device)
        drop_attrs = no if drop_attrs is None else drop_attrs.to(x.device)
        if self.cond_channels > 0:
            if cond is None:
                cond, drop_cond = x.new_zeros(B, self.cond_channels, H, W), ~no
            cond = cond.to(x.dtype) * (~drop_cond).to(x.dtype)[:, None, None, None]
            x = torch.cat([x, cond], dim=1)  # (B, target + cond, H, W)
        if self.attr_dim > 0 and attrs is None:
            drop_attrs = ~no
        emb = self.embed(t, B, attrs, drop_cond, drop_attrs)  # (B, E)

        m = 2 ** (self.levels - 1)  # pad to a size every level halves evenly
        ph, pw = -H % m, -W % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")

        h = self.stem(x)  # (B, c0, H, W)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)  # (B, c_i, H/2^i, W/2^i)
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)  # (B, c_i, H/2^(i+1), W/2^(i+1))
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, c_last, H/m, W/m)
        for i in reversed(range(self.levels)):
            h = torch.cat([h, skips.pop()], dim=1)  # (B, c_below + c_i, H/2^i, W/2^i)
            for block in self.up[i]:
                h = block(h, emb)  # (B, c_i, H/2^i, W/2^i)
            if i > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[i - 1](h)  # (B, c_i, H/2^(i-1), W/2^(i-1))
        out = self.conv_out(F.silu(self.norm_out(h)))  # (B, target, H, W)
        return out[:, :, :H, :W]
