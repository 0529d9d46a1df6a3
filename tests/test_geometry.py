"""Tests of ``hf_dmix.geometry`` against an independent float64 reference of the Poincaré ball.

The reference below is written out from the formulas (Möbius addition and ``d = (2/√c)·artanh(√c‖(−x) ⊕_c y‖)``)
and never calls the library, so an error in the library's arcosh form, its clamps or its mapping into the ball
shows up as a mismatch.
"""

from __future__ import annotations

import math

import pytest
import torch

from hf_dmix.geometry import (
    expmap0,
    mobius_add,
    pairwise_distance,
    poincare_distance,
    project,
    to_poincare_ball,
)

CURVATURES = (0.1, 1.0, 2.5)


# ---------------------------------------------------------------------------------------------------------------
# Independent float64 reference
# ---------------------------------------------------------------------------------------------------------------


def ref_mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Möbius addition x ⊕_c y in float64, written out from the formula."""
    x, y = x.double(), y.double()
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1.0 + 2.0 * c * xy + c * y2) * x + (1.0 - c * x2) * y
    den = 1.0 + 2.0 * c * xy + c * c * x2 * y2
    return num / den


def ref_poincare(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Element-wise Poincaré distance (2/√c)·artanh(√c‖(−x) ⊕_c y‖) in float64."""
    u = ref_mobius_add(-x.double(), y.double(), c).norm(dim=-1)
    return 2.0 / math.sqrt(c) * torch.atanh(math.sqrt(c) * u)


def ref_poincare_matrix(x: torch.Tensor, y: torch.Tensor | None, c: float) -> torch.Tensor:
    """``(N, M)`` reference distance matrix; the diagonal is exactly 0 when ``y`` is omitted."""
    same = y is None
    y = x if y is None else y
    out = ref_poincare(x.double()[:, None, :], y.double()[None, :, :], c)
    if same:
        out.fill_diagonal_(0.0)
    return out


def ball_points(n: int, dim: int, c: float, max_frac: float, seed: int) -> torch.Tensor:
    """``n`` float32 points with random directions and radii uniform in ``[0, max_frac)`` of the radius 1/√c."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, dim, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True)
    r = torch.rand(n, 1, generator=g, dtype=torch.float64) * max_frac / math.sqrt(c)
    return (v * r).float()


def boundary_points(n: int, dim: int, c: float, frac: float, seed: int) -> torch.Tensor:
    """``n`` float32 points at ``frac`` of the radius 1/√c."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return (v / v.norm(dim=-1, keepdim=True) * frac / math.sqrt(c)).float()


def test_reference_matches_closed_forms() -> None:
    """Sanity of the reference itself: d(0, y) = (2/√c)·artanh(√c‖y‖) and d(x, x) = 0."""
    y = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    for c in CURVATURES:
        yc = y / math.sqrt(c)
        got = ref_poincare(torch.zeros_like(yc), yc, c)
        assert torch.allclose(got, torch.tensor([2.0 / math.sqrt(c) * math.atanh(0.5)], dtype=torch.float64))
        assert ref_poincare(yc, yc, c).abs().max() < 1e-15


# ---------------------------------------------------------------------------------------------------------------
# Hyperbolic distance
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", CURVATURES)
@pytest.mark.parametrize("dim", [2, 16, 128])
def test_pairwise_hyperbolic_matches_reference(c: float, dim: int) -> None:
    x = ball_points(40, dim, c, max_frac=0.9, seed=dim)
    got = pairwise_distance(x, metric="hyperbolic", curvature=c)
    assert got.dtype == torch.float32
    expected = ref_poincare_matrix(x, None, c)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0.0)


@pytest.mark.parametrize("c", CURVATURES)
def test_pairwise_hyperbolic_two_sets_and_chunks(c: float) -> None:
    """x vs y (N ≠ M) matches the reference, and row chunking does not change the result."""
    x = ball_points(13, 8, c, 0.9, seed=1)
    y = ball_points(7, 8, c, 0.9, seed=2)
    expected = ref_poincare_matrix(x, y, c)
    full = pairwise_distance(x, y, metric="hyperbolic", curvature=c)
    chunked = pairwise_distance(x, y, metric="hyperbolic", curvature=c, chunk_rows=3)
    assert full.shape == (13, 7)
    torch.testing.assert_close(full.double(), expected, atol=1e-5, rtol=0.0)
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=0.0)


@pytest.mark.parametrize("c", CURVATURES)
def test_pairwise_hyperbolic_symmetric_zero_diagonal(c: float) -> None:
    x = ball_points(30, 16, c, 0.9, seed=3)
    d = pairwise_distance(x, metric="hyperbolic", curvature=c)
    torch.testing.assert_close(d, d.T, atol=1e-6, rtol=0.0)
    assert torch.equal(d.diagonal(), torch.zeros(30))
    off = d[~torch.eye(30, dtype=torch.bool)]
    assert (off > 0).all()


@pytest.mark.parametrize("c", CURVATURES)
def test_distances_finite_near_boundary(c: float) -> None:
    """Points at 1 − 1e-6 of the radius still give finite, positive distances in both forms."""
    x = boundary_points(10, 16, c, 1.0 - 1e-6, seed=4)
    assert (x.double().norm(dim=-1) < 1.0 / math.sqrt(c)).all()
    d = pairwise_distance(x, metric="hyperbolic", curvature=c)
    p = poincare_distance(x[:, None, :], x[None, :, :], curvature=c)
    off = ~torch.eye(10, dtype=torch.bool)
    for m in (d, p):
        assert torch.isfinite(m).all()
        assert (m[off] > 0).all()
    # The matrix form stays close to the reference even there (relative error well under 1 %).
    ref = ref_poincare_matrix(x, None, c)
    assert ((d.double() - ref).abs()[off] / ref[off]).max() < 1e-2
    # Near the boundary distances are large: at least the distance from the origin to a point at 0.99.
    assert d[off].min() > 2.0 / math.sqrt(c) * math.atanh(0.99) - 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_rounded_onto_boundary_stay_finite(dtype: torch.dtype) -> None:
    """A point on (or just past) the boundary gets a huge finite distance; two identical ones get 0, never NaN."""
    x = torch.tensor([[1.0, 0.0], [0.0, 0.5], [1.0, 0.0], [0.0, -1.0000001], [0.6, 0.8]], dtype=dtype)
    d = pairwise_distance(x, metric="hyperbolic")
    assert torch.isfinite(d).all()
    assert d[0, 2] == 0.0 and d[2, 0] == 0.0
    # Farther than any pair of interior points at 0.999 of the radius on opposite sides.
    interior = 2.0 * 2.0 * math.atanh(0.999)
    assert d[0, 3] > interior and d[3, 4] > interior
    assert d[0, 1] > 2.0 * math.atanh(0.999)


@pytest.mark.parametrize("c", CURVATURES)
def test_poincare_distance_matches_reference_and_matrix_form(c: float) -> None:
    x = ball_points(20, 8, c, 0.9, seed=5)
    y = ball_points(20, 8, c, 0.9, seed=6)
    # Element-wise, float64 inputs: the Möbius form is exact to float64 precision.
    got64 = poincare_distance(x.double(), y.double(), curvature=c)
    assert got64.shape == (20,)
    torch.testing.assert_close(got64, ref_poincare(x, y, c), atol=1e-9, rtol=0.0)
    # float32: agrees with the reference and with the row-wise diagonal of the matrix form.
    got32 = poincare_distance(x, y, curvature=c)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref_poincare(x, y, c), atol=1e-4, rtol=0.0)
    matrix = pairwise_distance(x, y, metric="hyperbolic", curvature=c)
    torch.testing.assert_close(got32, matrix.diagonal(), atol=1e-4, rtol=0.0)
    # Broadcast to a full matrix, the Möbius form equals the matrix form.
    full = poincare_distance(x[:, None, :], y[None, :, :], curvature=c)
    torch.testing.assert_close(full, matrix, atol=1e-4, rtol=0.0)


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_add_matches_reference_and_identities(c: float) -> None:
    x = ball_points(10, 5, c, 0.9, seed=7).double()
    y = ball_points(10, 5, c, 0.9, seed=8).double()
    torch.testing.assert_close(mobius_add(x, y, c), ref_mobius_add(x, y, c), atol=1e-12, rtol=0.0)
    # Identities: 0 ⊕ y = y, x ⊕ 0 = x, (−x) ⊕ x = 0.
    torch.testing.assert_close(mobius_add(torch.zeros_like(y), y, c), y)
    torch.testing.assert_close(mobius_add(x, torch.zeros_like(x), c), x)
    assert mobius_add(-x, x, c).abs().max() < 1e-12


def test_poincare_distance_curvature_scaling() -> None:
    """Scaling points by 1/√c and the metric by c: d_c(x/√c, y/√c) = d_1(x, y)/√c."""
    x = ball_points(15, 4, 1.0, 0.9, seed=9)
    y = ball_points(15, 4, 1.0, 0.9, seed=10)
    d1 = pairwise_distance(x, y, metric="hyperbolic", curvature=1.0)
    for c in (0.1, 2.5):
        dc = pairwise_distance(x / math.sqrt(c), y / math.sqrt(c), metric="hyperbolic", curvature=c)
        torch.testing.assert_close(dc * math.sqrt(c), d1, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Euclidean and cosine
# ---------------------------------------------------------------------------------------------------------------


def test_euclidean_matches_cdist() -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(25, 12, generator=g) * 3
    y = torch.randn(9, 12, generator=g) * 3
    got = pairwise_distance(x, y, metric="euclidean")
    torch.testing.assert_close(got.double(), torch.cdist(x.double(), y.double()), atol=1e-4, rtol=1e-5)
    same = pairwise_distance(x, metric="euclidean")
    expected = torch.cdist(x.double(), x.double())
    torch.testing.assert_close(same.double(), expected, atol=1e-4, rtol=1e-5)
    assert torch.equal(same.diagonal(), torch.zeros(25))


def test_cosine_matches_one_minus_cosine() -> None:
    g = torch.Generator().manual_seed(12)
    x = torch.randn(25, 12, generator=g) * 5
    y = torch.randn(9, 12, generator=g) * 0.1
    got = pairwise_distance(x, y, metric="cosine")
    expected = 1.0 - torch.nn.functional.cosine_similarity(x.double()[:, None, :], y.double()[None, :, :], dim=-1)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0.0)
    same = pairwise_distance(x, metric="cosine")
    assert torch.equal(same.diagonal(), torch.zeros(25))
    # Cosine distance ignores the norm: scaling a row does not change its distances.
    scaled = x.clone()
    scaled[0] *= 1000.0
    torch.testing.assert_close(pairwise_distance(scaled, y, metric="cosine"), got, atol=1e-6, rtol=0.0)
    # Opposite directions are at distance 2.
    assert pairwise_distance(x[:1], -x[:1], metric="cosine").item() == pytest.approx(2.0, abs=1e-6)


def test_unknown_metric_raises() -> None:
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="Unknown metric"):
        pairwise_distance(x, metric="manhattan")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Exponential map, projection, mapping into the ball
# ---------------------------------------------------------------------------------------------------------------


def test_expmap0_distance_from_origin_is_twice_norm() -> None:
    g = torch.Generator().manual_seed(13)
    v = torch.randn(20, 6, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.linspace(0.01, 2.0, 20, dtype=torch.float64)[:, None]
    # float64: exact; float32: to float32 precision of points at tanh(2) ≈ 0.96.
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        p = expmap0(v.to(dtype), curvature=1.0)
        d = ref_poincare(torch.zeros_like(p), p, 1.0)
        torch.testing.assert_close(d, 2.0 * v.norm(dim=-1), atol=atol, rtol=0.0)
        # Direction is preserved.
        cos = torch.nn.functional.cosine_similarity(p.double(), v, dim=-1)
        torch.testing.assert_close(cos, torch.ones(20, dtype=torch.float64), atol=1e-6, rtol=0.0)
    # General c: Euclidean radius tanh(√c‖v‖)/√c.
    for c in (0.1, 2.5):
        p = expmap0(v, curvature=c)
        torch.testing.assert_close(p.norm(dim=-1), torch.tanh(math.sqrt(c) * v.norm(dim=-1)) / math.sqrt(c))
    # The origin maps to the origin (no 0/0).
    assert torch.equal(expmap0(torch.zeros(2, 3)), torch.zeros(2, 3))


@pytest.mark.parametrize("c", CURVATURES)
def test_project_keeps_inside_and_leaves_interior(c: float) -> None:
    inside = ball_points(10, 4, c, 0.9, seed=14)
    assert torch.equal(project(inside, c), inside)
    outside = boundary_points(10, 4, c, 3.0, seed=15)
    pulled = project(outside, c)
    assert (pulled.double().norm(dim=-1) < 1.0 / math.sqrt(c)).all()
    torch.testing.assert_close(pulled.norm(dim=-1) * math.sqrt(c), torch.ones(10), atol=1e-6, rtol=0.0)


@pytest.mark.parametrize("c", CURVATURES)
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_to_poincare_ball_strictly_inside(c: float, scale: float) -> None:
    g = torch.Generator().manual_seed(16)
    e = torch.randn(50, 16, generator=g) * scale
    e[0] *= 1e4  # one extreme outlier on top
    for kwargs in ({}, {"clip_quantile": None}, {"center": False, "clip_quantile": None}):
        b = to_poincare_ball(e, curvature=c, **kwargs)
        assert b.dtype == torch.float32 and b.shape == e.shape
        assert torch.isfinite(b).all()
        assert (b.double().norm(dim=-1) < 1.0 / math.sqrt(c)).all()
        assert torch.isfinite(pairwise_distance(b, metric="hyperbolic", curvature=c)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_to_poincare_ball_half_precision_inside(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(17)
    e = (torch.randn(40, 16, generator=g) * 1e3).to(dtype)
    if dtype == torch.bfloat16:
        e[0] *= 1e3  # bf16 has float32's range: a norm ~1e6 outlier
    for c in CURVATURES:
        b = to_poincare_ball(e, curvature=c, clip_quantile=None)
        assert b.dtype == torch.float32
        assert torch.isfinite(b).all()
        assert (b.double().norm(dim=-1) < 1.0 / math.sqrt(c)).all()


@pytest.mark.parametrize("c", CURVATURES)
@pytest.mark.parametrize("median_radius", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("center", [True, False])
def test_to_poincare_ball_median_radius(c: float, median_radius: float, center: bool) -> None:
    g = torch.Generator().manual_seed(18)
    e = torch.randn(41, 8, generator=g, dtype=torch.float64) * torch.rand(41, 1, generator=g, dtype=torch.float64)
    e = e + 2.0  # a common offset, removed by centring
    b = to_poincare_ball(e, curvature=c, median_radius=median_radius, center=center)
    x = e - e.mean(0, keepdim=True) if center else e
    norms = x.norm(dim=-1)
    median_idx = int(norms.argsort()[20])  # odd N: a real median point
    radius = b[median_idx].double().norm().item() * math.sqrt(c)
    assert radius == pytest.approx(median_radius, abs=1e-6)
    # The ordering of norms is preserved (monotone reshaping), and directions are kept.
    order_in = norms.argsort()
    out_norms = b.double().norm(dim=-1)
    assert (out_norms[order_in].diff() >= -1e-7).all()
    cos = torch.nn.functional.cosine_similarity(b.double(), x, dim=-1)
    assert (cos > 1 - 1e-5).all()


@pytest.mark.parametrize("center", [False, True])
def test_to_poincare_ball_clips_outliers_at_quantile(center: bool) -> None:
    """N = 101 and q = 0.99 put the quantile exactly on the second-largest norm, so the 1000× outlier is capped there."""
    g = torch.Generator().manual_seed(19)
    e = torch.randn(101, 8, generator=g, dtype=torch.float64)
    e[7] *= 1000.0
    b = to_poincare_ball(e, curvature=1.0, clip_quantile=0.99, center=center)
    norms = (e - e.mean(0, keepdim=True) if center else e).norm(dim=-1)
    order = norms.argsort()
    assert int(order[-1]) == 7
    quantile_point = int(order[-2])
    out = b.double().norm(dim=-1)
    assert out[7].item() == pytest.approx(out[quantile_point].item(), abs=1e-6)
    assert out.max() < 0.999  # not pushed to the boundary
    # Without clipping, the outlier lands strictly farther out than the quantile point.
    unclipped = to_poincare_ball(e, curvature=1.0, clip_quantile=None, center=center).double().norm(dim=-1)
    assert unclipped[7] > unclipped[quantile_point] + 1e-3


def test_to_poincare_ball_does_not_saturate_unlike_naive_expmap0() -> None:
    """Encoder-like embeddings (norms ~10) saturate under expmap0 but spread over the ball after rescaling."""
    g = torch.Generator().manual_seed(20)
    e = torch.randn(64, 32, generator=g) + 1.5  # common component + spread: norms around 10
    norms = e.norm(dim=-1)
    assert 6.0 < norms.median() < 14.0
    naive = expmap0(e).norm(dim=-1)
    assert (naive > 1.0 - 1e-3).all()  # the failure mode the mapping avoids
    mapped = to_poincare_ball(e).norm(dim=-1)
    assert (mapped < 1.0 - 1e-3).all()
    assert mapped.median().item() == pytest.approx(0.5, abs=1e-6)
    assert mapped.max() - mapped.min() > 0.2  # norms genuinely differ, not one thin shell


def test_to_poincare_ball_degenerate_input_maps_to_origin() -> None:
    e = torch.ones(5, 3) * 7.0
    assert torch.equal(to_poincare_ball(e), torch.zeros(5, 3))


@pytest.mark.parametrize("median_radius", [0.0, 1.0, -0.1, 1.5])
def test_to_poincare_ball_rejects_bad_median_radius(median_radius: float) -> None:
    with pytest.raises(ValueError, match="median_radius"):
        to_poincare_ball(torch.randn(4, 3), median_radius=median_radius)


@pytest.mark.parametrize("shape", [(0, 3), (5,), (2, 3, 4)])
def test_to_poincare_ball_rejects_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        to_poincare_ball(torch.randn(*shape))


# ---------------------------------------------------------------------------------------------------------------
# Half precision
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("metric", ["hyperbolic", "euclidean", "cosine"])
def test_half_inputs_give_float32_finite(dtype: torch.dtype, metric: str) -> None:
    # Points at 0.9995 of the radius: representable in half, but 1 − ‖x‖² would be badly rounded there.
    x = boundary_points(12, 8, 1.0, 0.9995, seed=21).to(dtype)
    d = pairwise_distance(x, metric=metric)  # type: ignore[arg-type]
    assert d.dtype == torch.float32
    assert torch.isfinite(d).all()
    assert torch.equal(d.diagonal(), torch.zeros(12))
    # Half inputs are upcast before any arithmetic: same result as giving the upcast points.
    torch.testing.assert_close(d, pairwise_distance(x.float(), metric=metric), atol=0.0, rtol=0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_elementwise_ops_give_float32(dtype: torch.dtype) -> None:
    x = ball_points(6, 4, 1.0, 0.9, seed=22).to(dtype)
    y = ball_points(6, 4, 1.0, 0.9, seed=23).to(dtype)
    for out in (
        poincare_distance(x, y),
        mobius_add(x, y),
        expmap0(x * 10),
        project(x * 10),
        to_poincare_ball(x),
    ):
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
    torch.testing.assert_close(poincare_distance(x, y).double(), ref_poincare(x, y, 1.0), atol=1e-4, rtol=0.0)
    assert (project(x * 10).norm(dim=-1) < 1.0).all()


@pytest.mark.parametrize("metric", ["hyperbolic", "euclidean", "cosine"])
@pytest.mark.parametrize("curvature", [0.5, 2.0])
def test_ranking_factors_order_rows_like_the_distance(metric: str, curvature: float) -> None:
    """Per anchor, the one-GEMM ranking keys sort the other points exactly as the distance does."""
    from hf_dmix.geometry import ranking_factors

    g = torch.Generator().manual_seed(11)
    raw = torch.randn(40, 8, generator=g, dtype=torch.float64)
    pts = to_poincare_ball(raw, curvature=curvature) if metric == "hyperbolic" else raw.float()
    left, right = ranking_factors(pts, metric, curvature)
    keys = (left @ right.T).double()
    dist = pairwise_distance(pts.double(), metric=metric, curvature=curvature)
    for i in range(40):
        others = torch.tensor([j for j in range(40) if j != i])
        by_key = others[torch.argsort(keys[i, others])]
        by_dist = others[torch.argsort(dist[i, others])]
        assert torch.equal(by_key, by_dist)
