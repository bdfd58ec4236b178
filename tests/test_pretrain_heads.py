"""LEWEL head: alignment maps (Sec. 3.2), aggregation Eq. (1), channel grouping Eq. (2), coupled head."""
import torch

from pretrain.heads import MLP, CoupledHead, aligned_aggregate, alignment_maps


def test_uniform_maps_reproduce_gap():
    """Eq. (1): W = 1/(HW) everywhere gives GAP for every aligned representation."""
    torch.manual_seed(0)
    B, D, HW, d, h = 3, 16, 20, 8, 4
    x = torch.randn(B, HW, D, dtype=torch.float64)
    maps = torch.full((B, HW, d), 1.0 / HW, dtype=torch.float64)
    y = aligned_aggregate(x, maps, h)
    assert y.shape == (B, d // h, D)
    gap = x.mean(1, keepdim=True).expand_as(y)
    torch.testing.assert_close(y, gap, rtol=0, atol=1e-12)


def test_alignment_maps_sum_to_one():
    torch.manual_seed(0)
    heat = torch.randn(4, 49, 32) * 5
    maps = alignment_maps(heat, temperature=0.5)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(1), torch.ones(4, 32))  # each of the d maps, over H x W
    # L2 across channels before the softmax: scaling one position's heat vector changes nothing
    heat2 = heat.clone()
    heat2[:, 7] *= 3.0
    torch.testing.assert_close(alignment_maps(heat2, 0.5), maps)


def test_grouping_pairs_map_with_feature_group_identically_for_both_views():
    """Aligned representation k = concat over groups j of (map (j, k) applied to feature group j)."""
    torch.manual_seed(0)
    B, D, HW, d, h = 2, 12, 6, 8, 4
    k = d // h
    pos = torch.randint(0, HW, (h, k))  # map (j, kk) = a delta at pos(j, kk)
    maps = torch.zeros(B, HW, d)
    for j in range(h):
        for kk in range(k):
            maps[:, pos[j, kk], j * k + kk] = 1.0  # official order: h contiguous blocks of d/h maps
    for view in range(2):  # two views: different features, the same pairing rule
        x = torch.randn(B, HW, D)
        y = aligned_aggregate(x, maps, h)
        for j in range(h):
            ch = slice(j * D // h, (j + 1) * D // h)
            for kk in range(k):
                torch.testing.assert_close(y[:, kk, ch], x[:, pos[j, kk], ch])


def test_reassociated_semantic_projector_matches_literal_order():
    torch.manual_seed(0)
    feat = torch.randn(4, 32, 2, 2)
    a = CoupledHead(32, 64, 16, h=4, reassociate="never")
    b = CoupledHead(32, 64, 16, h=4, reassociate="always")
    b.load_state_dict(a.state_dict())
    za, zb = a(feat), b(feat)
    for x, y in zip(za, zb):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    z, z_al, maps = za
    assert z.shape == (4, 16) and z_al.shape == (4, 4, 16) and maps.shape == (4, 4, 16)


def test_coupled_head_one_pass_shares_bn_statistics():
    """g sees [GAP(F), pixels] in one pass: z equals g's MLP with BN statistics over B * (1 + HW)."""
    torch.manual_seed(0)
    feat = torch.randn(5, 8, 3, 3)
    head = CoupledHead(8, 16, 4, h=2)
    z, _, _ = head(feat)
    x = feat.flatten(2)
    u = torch.cat([x.mean(2, keepdim=True), x], 2)  # (B, D, 1 + HW), as the official conv1d sees it
    a = torch.nn.functional.conv1d(u, head.g.fc1.weight)
    mu, var = a.mean((0, 2), keepdim=True), a.var((0, 2), unbiased=False, keepdim=True)
    a = torch.relu((a - mu) / torch.sqrt(var + head.g.bn.eps))
    ref = torch.nn.functional.conv1d(a, head.g.fc2.weight)[:, :, 0]
    torch.testing.assert_close(z, ref, rtol=1e-4, atol=1e-5)


def test_mlp_matches_official_conv1d_form():
    torch.manual_seed(0)
    m = MLP(8, 16, 4, bn=False, bias=True)
    x = torch.randn(3, 5, 8)
    ref = m.fc2(torch.relu(m.fc1(x.transpose(1, 2)))).transpose(1, 2)
    torch.testing.assert_close(m(x), ref)
    assert m(torch.randn(3, 8)).shape == (3, 4)
