import pytest
import torch

from perceive_anything.config import PerceiverConfig
from perceive_anything.modeling.perceiver import SemanticPerceiver, pam_pixel_shuffle, random_fourier_grid_pe


def _reference_shuffle(keys: torch.Tensor, f: int, r: int) -> torch.Tensor:
    """out[n, e] = K[r*j + dy, r*i + dx, c], n = i*g + j, e = dy*(r*C) + dx*C + c, spelled out by loops."""
    b, _, c = keys.shape
    g = f // r
    grid = keys.reshape(b, f, f, c)  # K[y, x, c], token y*F + x
    out = torch.empty(b, g * g, r * r * c, dtype=keys.dtype)
    for i in range(g):
        for j in range(g):
            n = i * g + j
            for dy in range(r):
                for dx in range(r):
                    e0 = dy * (r * c) + dx * c
                    out[:, n, e0 : e0 + c] = grid[:, r * j + dy, r * i + dx, :]
    return out


@pytest.mark.parametrize("f", [64, 16])
@pytest.mark.parametrize("r", [2, 4])
def test_pixel_shuffle_matches_index_formula(f, r):
    c = 8
    keys = torch.arange(2 * f * f * c, dtype=torch.float64).reshape(2, f * f, c)
    out = pam_pixel_shuffle(keys, f, r)
    assert out.shape == (2, (f // r) ** 2, r * r * c)
    assert torch.equal(out, _reference_shuffle(keys, f, r))


@pytest.mark.parametrize("f,r", [(64, 2), (64, 4), (16, 2), (16, 4)])
def test_pixel_shuffle_full_width_spot_checks(f, r):
    c = 256
    keys = torch.randn(1, f * f, c)
    out = pam_pixel_shuffle(keys, f, r)
    g = f // r
    grid = keys.reshape(f, f, c)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        i, j = torch.randint(g, (2,), generator=gen).tolist()
        dy, dx = torch.randint(r, (2,), generator=gen).tolist()
        ch = int(torch.randint(c, (1,), generator=gen))
        assert out[0, i * g + j, dy * (r * c) + dx * c + ch] == grid[r * j + dy, r * i + dx, ch]


def test_pixel_shuffle_is_not_a_standard_unshuffle():
    f, r, c = 16, 2, 4
    keys = torch.randn(1, f * f, c)
    nchw = keys.transpose(1, 2).reshape(1, c, f, f)
    standard = torch.nn.functional.pixel_unshuffle(nchw, r).flatten(2).transpose(1, 2)
    assert standard.shape == pam_pixel_shuffle(keys, f, r).shape
    assert not torch.equal(standard, pam_pixel_shuffle(keys, f, r))


def test_pixel_shuffle_rejects_bad_sizes():
    with pytest.raises(ValueError):
        pam_pixel_shuffle(torch.zeros(1, 100, 4), 16, 2)
    with pytest.raises(ValueError):
        pam_pixel_shuffle(torch.zeros(1, 36, 4), 6, 4)


@pytest.mark.parametrize("f", [64, 16])
def test_perceiver_shapes(f):
    torch.manual_seed(0)
    cfg = PerceiverConfig()
    p = SemanticPerceiver(cfg, f).eval()
    embed = torch.randn(2, 256, f, f)
    tokens = torch.randn(2, 2, 256)
    with torch.no_grad():
        sem, img = p(embed, tokens, cfg.image_shuffle)
        assert sem.shape == (2, 16, 256)
        assert img.shape == (2, (f // 2) ** 2, 1024)
        sem4, img4 = p(embed, tokens, cfg.frame_shuffle)
        assert img4.shape == (2, (f // 4) ** 2, 1024)
        # The semantic tokens do not depend on the shuffle factor.
        assert torch.allclose(sem, sem4)
    with pytest.raises(ValueError):
        p(embed, tokens, 3)
    with pytest.raises(ValueError):
        p(torch.randn(1, 256, f * 2, f * 2), tokens[:1], 2)


def test_positional_encoding_follows_feature_size():
    g = torch.randn(2, 128)
    pe = random_fourier_grid_pe(g, 16)
    assert pe.shape == (256, 256)
    # token y*F + x: x drives row 0 of the matrix, y row 1; the cell centre of (y=3, x=5) on a 16 grid
    x, y = (5 + 0.5) / 16 * 2 - 1, (3 + 0.5) / 16 * 2 - 1
    proj = 2 * torch.pi * (x * g[0] + y * g[1])
    assert torch.allclose(pe[3 * 16 + 5], torch.cat([proj.sin(), proj.cos()]), atol=1e-5)


def test_state_dict_names_match_official_layout():
    p = SemanticPerceiver(PerceiverConfig(), 64)
    names = set(p.state_dict())
    expected = {"sem_tokens.weight", "pe_layer.positional_encoding_gaussian_matrix", "proj.weight", "proj.bias",
                "norm_final_attn.weight", "norm_final_attn.bias"}
    attn = ("q_proj", "k_proj", "v_proj", "out_proj")
    for a in attn:
        for wb in ("weight", "bias"):
            expected.add(f"final_attn_token_to_image.{a}.{wb}")
    for i in range(2):
        for wb in ("weight", "bias"):
            for a in attn:
                for m in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
                    expected.add(f"layers.{i}.{m}.{a}.{wb}")
            for n in ("norm1", "norm2", "norm3", "norm4", "mlp.layers.0", "mlp.layers.1"):
                expected.add(f"layers.{i}.{n}.{wb}")
    assert names == expected
    assert p.state_dict()["pe_layer.positional_encoding_gaussian_matrix"].shape == (2, 128)
    assert p.layers[0].cross_attn_token_to_image.q_proj.out_features == 128
    assert p.proj.in_features == 4096 and p.proj.out_features == 1024
    assert sum(x.numel() for x in p.parameters()) == 7_490_688
