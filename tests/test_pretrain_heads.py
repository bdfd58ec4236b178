"""LEWEL head: alignment maps (Sec. 3.2), aggregation Eq. (1), channel grouping Eq. (2), coupled head."""
import torch

from pretrain.heads import MLP, CoupledHead, aligned_aggregate, alignment_maps


def test_uniform_maps_reproduce_gap():
    """Eq. (1): W = 1/(HW) everywhere gives GAP for every aligned representation."""
    torch.manual_seed(0)
    B, D, H, W, d, h = 3, 16, 4, 5, 8, 4
    feat = torch.randn(B, D, H * W, dtype=torch.float64)
    maps = torch.full((B, d, H * W), 1.0 / (H * W), dtype=torch.float64)
    y = aligned_aggregate(feat, maps, h)
    assert y.shape == (B, D, d // h)
    gap = feat.mean(2, keepdim=True).expand_as(y)
    torch.testing.assert_close(y, gap, rtol=0, atol=1e-12)


def test_alignment_maps_sum_to_one():
    torch.manual_seed(0)
    heat = torch.randn(4, 32, 49) * 5
    maps = alignment_maps(heat, temperature=0.5)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(2), torch.ones(4, 32))
    # L2 across channels before the softmax: scaling a position's heat vector changes nothing
    heat2 = heat.clone()
    heat2[:, :, 7] *= 3.0
    torch.testing.assert_close(alignment_maps(heat2, 0.5), maps)


def test_grouping_pairs_map_with_feature_group_identically_for_both_views():
    """Aligned representation k = concat over groups j of (map (j, k) applied to feature group j)."""
    torch.manual_seed(0)
    B, D, HW, d, h = 2, 12, 6, 8, 4
    k = d // h
    # map (j, kk) is a delta at position pos(j, kk): y_kk restricted to group j must equal F_j at that position
    pos = torch.randint(0, HW, (h, k))
    maps = torch.zeros(B, d, HW)
    for j in range(h):
        for kk in range(k):
            maps[:, j * k + kk, pos[j, kk]] = 1.0  # official order: h contiguous blocks of d/h maps
    for view in range(2):  # two views: different features, the same pairing rule
        feat = torch.randn(B, D, HW)
        y = aligned_aggregate(feat, maps, h)
        for j in range(h):
            ch = slice(j * D // h, (j + 1) * D // h)
            for kk in range(k):
                torch.testing.assert_close(y[:, ch, kk], feat[:, ch, pos[j, kk]])


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
    assert z.shape == (4, 16) and z_al.shape == (4, 16, 4) and maps.shape == (4, 16, 4)


def test_coupled_head_one_pass_shares_bn_statistics():
    """g sees [GAP(F), pixels] in one pass: z equals g's MLP with BN statistics over B * (1 + HW)."""
    torch.manual_seed(0)
    feat = torch.randn(5, 8, 3, 3)
    head = CoupledHead(8, 16, 4, h=2)
    z, _, _ = head(feat)
    x = feat.flatten(2)
    u = torch.cat([x.mean(2, keepdim=True), x], 2)
    a = torch.einsum("oc,bcl->bol", head.g.fc1.weight.squeeze(-1), u)
    mu, var = a.mean((0, 2), keepdim=True), a.var((0, 2), unbiased=False, keepdim=True)
    a = torch.relu((a - mu) / torch.sqrt(var + head.g.bn.eps))
    ref = torch.einsum("oc,bcl->bol", head.g.fc2.weight.squeeze(-1), a)[:, :, 0]
    torch.testing.assert_close(z, ref, rtol=1e-4, atol=1e-5)


def test_mlp_vector_and_sequence_forms_agree_in_eval():
    m = MLP(8, 16, 4).eval()
    x = torch.randn(3, 8)
    torch.testing.assert_close(m(x), m(x.unsqueeze(-1)).squeeze(-1))
