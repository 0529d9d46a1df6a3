"""Distances between sentence embeddings: the Poincaré ball of DMIX, and its Euclidean and cosine peers.

What lives here: the Poincaré-ball operations DMIX needs (Möbius addition, the exponential map at the origin,
projection into the ball, the hyperbolic distance :math:`D_h` of the paper), the mapping of raw encoder
embeddings into the ball, and pairwise distance matrices computed through one matrix product per row chunk.

What does not: choosing partners from those distances (``partners.py``) and anything that touches a model.

Numerics. Every clamp below says why it is there. The geometry is meant to run in float32 or float64, never in
half precision: ``1 - 1e-7`` rounds to ``1`` in fp16, which puts points *on* the boundary where the distance is
infinite. Callers under autocast get float32 because every public function here upcasts half inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch

Metric = Literal["hyperbolic", "euclidean", "cosine"]
METRICS: tuple[str, ...] = ("hyperbolic", "euclidean", "cosine")

# Smallest norm we divide by. Below it a vector is treated as the origin, where every direction is equivalent.
_MIN_NORM = 1e-15


def _ball_eps(dtype: torch.dtype) -> float:
    """Relative distance from the boundary that points are kept at, per dtype.

    The conformal factor ``1 - c‖x‖²`` must stay representable and positive: 4e-3 for float32 would be far too
    conservative for tests near the boundary, so we follow geoopt's per-dtype choice of a few ulps above the
    resolution of ``1 - ‖x‖²`` (float32 resolves ~6e-8, float64 ~1e-16).
    """
    return 4e-7 if dtype == torch.float32 else 1e-15


def _float(x: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32 so the boundary of the ball stays representable (see module docstring)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def project(x: torch.Tensor, curvature: float = 1.0) -> torch.Tensor:
    r"""Pull points back strictly inside the Poincaré ball of curvature :math:`-c`.

    The ball is :math:`\{x : \|x\| < 1/\sqrt{c}\}`. Points at or beyond :math:`(1-\epsilon)/\sqrt{c}` are scaled
    radially onto that sphere; points inside are returned unchanged.
    """
    x = _float(x)
    norm = x.norm(dim=-1, keepdim=True).clamp_min(_MIN_NORM)  # avoid 0/0 for the origin, which is never moved
    max_norm = (1.0 - _ball_eps(x.dtype)) / math.sqrt(curvature)
    return torch.where(norm > max_norm, x / norm * max_norm, x)


def mobius_add(x: torch.Tensor, y: torch.Tensor, curvature: float = 1.0) -> torch.Tensor:
    r"""Möbius addition :math:`x \oplus_c y` in the Poincaré ball.

    .. math::
        x \oplus_c y = \frac{(1 + 2c\langle x,y\rangle + c\|y\|^2)\,x + (1 - c\|x\|^2)\,y}
                            {1 + 2c\langle x,y\rangle + c^2\|x\|^2\|y\|^2}
    """
    x, y = _float(x), _float(y)
    c = curvature
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    den = 1 + 2 * c * xy + c**2 * x2 * y2
    # The denominator is >= (1 - sqrt(c)|x| sqrt(c)|y|)^2 > 0 inside the ball; the clamp only guards points that
    # were already rounded onto the boundary.
    return num / den.clamp_min(_MIN_NORM)


def poincare_distance(x: torch.Tensor, y: torch.Tensor, curvature: float = 1.0) -> torch.Tensor:
    r"""Hyperbolic distance :math:`D_h` of the paper (Sec. 2, "DMIX"), element-wise over the last dimension.

    .. math:: D_h(x, y) = \frac{2}{\sqrt{c}} \operatorname{artanh}\left(\sqrt{c}\,\|(-x) \oplus_c y\|\right)

    The paper prints ``2 tan^{-1}``; the Poincaré distance uses the *inverse hyperbolic* tangent (with the
    circular arctangent every distance would be bounded by π, which is not a hyperbolic distance at all). For
    whole matrices use :func:`pairwise_distance`, which computes the same quantity through a matrix product.
    """
    sqrt_c = math.sqrt(curvature)
    diff_norm = mobius_add(-x, y, curvature).norm(dim=-1)
    # artanh(1) is infinite: points rounded onto the boundary get the largest finite distance instead.
    arg = (sqrt_c * diff_norm).clamp(max=1.0 - _ball_eps(diff_norm.dtype))
    return 2.0 / sqrt_c * torch.atanh(arg)


def expmap0(v: torch.Tensor, curvature: float = 1.0) -> torch.Tensor:
    r"""Exponential map at the origin: the tangent vector :math:`v` to the point :math:`\tanh(\sqrt{c}\|v\|)\,v/(\sqrt{c}\|v\|)`.

    The result lies at hyperbolic distance :math:`2\|v\|` from the origin (the factor 2 is the ball's metric at 0).
    """
    v = _float(v)
    sqrt_c = math.sqrt(curvature)
    norm = v.norm(dim=-1, keepdim=True).clamp_min(_MIN_NORM)  # tanh(x)/x -> 1 at 0; the clamp avoids 0/0
    return project(torch.tanh(sqrt_c * norm) * v / (sqrt_c * norm), curvature)


def to_poincare_ball(
    embeddings: torch.Tensor,
    curvature: float = 1.0,
    median_radius: float = 0.5,
    clip_quantile: float | None = 0.99,
    center: bool = True,
) -> torch.Tensor:
    r"""Map Euclidean sentence embeddings into the Poincaré ball without saturating at its boundary.

    Raw encoder embeddings have norms of 5–20; :func:`expmap0` of those lands every point within float precision
    of the boundary (``tanh(10) = 1 - 4e-9``), where all points sit on one thin shell and hyperbolic ranking
    collapses into cosine ranking. We therefore rescale first, in float64:

    1. ``center``: subtract the mean embedding. Encoder embeddings share a large common component (anisotropy);
       centring puts the "typical" sentence at the origin so that the norm measures how atypical a sentence is.
    2. ``clip_quantile``: cap norms at that quantile of the norms. In the ball, distance grows without bound with
       the norm, so a handful of outliers would otherwise be the farthest points from *every* anchor ("hubs").
       ``None`` (or 1.0) disables clipping.
    3. Scale all tangent vectors by one factor so that the median-norm embedding lands at Euclidean radius
       ``median_radius / sqrt(c)``, i.e. at ``median_radius`` of the ball's radius. One global factor keeps the
       ordering of norms (and of angles), so the geometry is a monotone reshaping, not a new embedding.
    4. :func:`expmap0` and a final :func:`project`.

    Args:
        embeddings: ``(N, d)`` Euclidean embeddings.
        curvature: ``c > 0``; the ball has curvature ``-c`` and radius ``1/sqrt(c)``.
        median_radius: where the median embedding lands, as a fraction of the radius, in ``(0, 1)``.
        clip_quantile: quantile of the norms at which norms are capped, in ``(0.5, 1]``, or ``None``.
        center: whether to subtract the mean embedding first.

    Returns:
        ``(N, d)`` float32 points strictly inside the ball.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, d) matrix, got shape {tuple(embeddings.shape)}.")
    if not 0.0 < median_radius < 1.0:
        raise ValueError(f"median_radius must lie in (0, 1), got {median_radius}.")
    x = embeddings.detach().to(torch.float64)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    norms = x.norm(dim=-1)
    if clip_quantile is not None and clip_quantile < 1.0:
        cap = torch.quantile(norms, clip_quantile)
        # Norms of 0 (the centred mean itself) are never scaled up: the ratio is clamped at 1.
        x = x * (cap / norms.clamp_min(_MIN_NORM)).clamp(max=1.0).unsqueeze(-1)
        norms = norms.clamp(max=cap)
    median = norms.median()
    if median <= _MIN_NORM:
        # Degenerate input (e.g. all embeddings identical): every point maps to the origin.
        return torch.zeros_like(x, dtype=torch.float32)
    # expmap0 sends tangent norm t to Euclidean radius tanh(sqrt(c) t)/sqrt(c), so the median must get
    # t = artanh(median_radius)/sqrt(c).
    target = math.atanh(median_radius) / math.sqrt(curvature)
    points = expmap0(x * (target / median), curvature)
    return project(points.to(torch.float32), curvature)


def check_ball_settings(curvature: float, median_radius: float, clip_quantile: float) -> None:
    """Raise ``ValueError`` for ball settings :func:`to_poincare_ball` cannot use, named as ``DMixConfig`` names them
    (``curvature``, ``ball_median_radius``, ``ball_clip_quantile``): checked when a config is built."""
    if not curvature > 0:
        raise ValueError(f"curvature must be > 0 (the ball has curvature -c), got {curvature!r}.")
    if not 0.0 < median_radius < 1.0:
        raise ValueError(f"ball_median_radius must lie in (0, 1), got {median_radius!r}.")
    if not 0.5 < clip_quantile <= 1.0:
        raise ValueError(f"ball_clip_quantile must lie in (0.5, 1] (1 disables clipping), got {clip_quantile!r}.")


def _hyperbolic_block(
    x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor, curvature: float
) -> torch.Tensor:
    r"""Poincaré distances for a block of rows through the arcosh form:

    .. math:: d(x, y) = \frac{1}{\sqrt{c}}\operatorname{arcosh}\left(1 + \frac{2c\|x-y\|^2}{(1-c\|x\|^2)(1-c\|y\|^2)}\right)

    with :math:`\|x-y\|^2 = \|x\|^2 + \|y\|^2 - 2x\cdot y`, so the whole block costs one matrix product.
    """
    return _hyperbolic_from_gram(x @ y.T, x_sq[:, None], y_sq[None, :], curvature)


def _hyperbolic_from_gram(gram: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor, curvature: float) -> torch.Tensor:
    """:func:`_hyperbolic_block` from inner products and broadcastable squared norms."""
    sq = x_sq + y_sq - 2.0 * gram
    # Cancellation in the expansion can make ||x - y||^2 slightly negative for (near-)identical points.
    sq = sq.clamp_min(0.0)
    c = curvature
    # Points were projected inside the ball, so 1 - c||x||^2 > 0; the clamp keeps a rounded-onto-the-boundary
    # point at a huge but finite distance instead of dividing by zero. The floor is the conformal factor at the
    # radius :func:`project` uses: a floor of ``finfo.tiny`` made the product underflow to 0 (distance inf, and
    # NaN = 0/0 between two identical boundary points, e.g. bf16-rounded duplicates).
    floor = 1.0 - (1.0 - _ball_eps(gram.dtype)) ** 2
    den = (1.0 - c * x_sq).clamp_min(floor) * (1.0 - c * y_sq).clamp_min(floor)
    z = 2.0 * c * sq / den
    # arcosh(1 + z) = log(1 + z + sqrt(z (z + 2))), written with log1p to keep precision for small z.
    return torch.log1p(z + torch.sqrt(z * (z + 2.0))) / math.sqrt(c)


def prepare_points(points: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Put points into the form :func:`distance_block` expects: unit vectors for ``cosine``, unchanged otherwise."""
    points = _float(points)
    if metric == "cosine":
        # Zero vectors have no direction; clamping the norm leaves them at the origin (cosine distance 1 to all).
        return points / points.norm(dim=-1, keepdim=True).clamp_min(_MIN_NORM)
    return points


def distance_block(
    x: torch.Tensor,
    y: torch.Tensor,
    metric: Metric,
    curvature: float = 1.0,
    x_sq: torch.Tensor | None = None,
    y_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distances between every row of ``x`` and every row of ``y`` (already passed through :func:`prepare_points`).

    ``x_sq`` / ``y_sq`` are the squared row norms, precomputed once by callers that sweep many blocks.
    """
    if metric == "cosine":
        return 1.0 - x @ y.T
    x_sq = (x * x).sum(-1) if x_sq is None else x_sq
    y_sq = (y * y).sum(-1) if y_sq is None else y_sq
    return distance_from_gram(x @ y.T, x_sq[:, None], y_sq[None, :], metric, curvature)


def distance_from_gram(
    gram: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor, metric: Metric, curvature: float = 1.0
) -> torch.Tensor:
    """Distances from inner products ``x·y`` and squared norms that broadcast against them.

    The one place where a Gram matrix (a block from :func:`distance_block`) or a batch of per-pair inner products
    (partner draws by rejection) becomes distances, so that both compute bit-for-bit the same formula.
    Points must have gone through :func:`prepare_points` (unit vectors for ``cosine``).
    """
    if metric == "cosine":
        return 1.0 - gram
    if metric == "euclidean":
        # Same cancellation guard as in _hyperbolic_block before the square root.
        return (x_sq + y_sq - 2.0 * gram).clamp_min(0.0).sqrt()
    if metric == "hyperbolic":
        return _hyperbolic_from_gram(gram, x_sq, y_sq, curvature)
    raise ValueError(f"Unknown metric {metric!r}; expected one of {METRICS}.")


def chunk_rows_for_budget(num_columns: int, memory_bytes: int, bytes_per_value: int = 4, floor: int = 1) -> int:
    """How many rows of an ``(rows, num_columns)`` distance block fit in ``memory_bytes``.

    A block needs the distance values plus about three temporaries of the same size (the Gram product, the
    squared distances and the selection buffer), so the budget is divided by four values per entry.
    """
    per_row = max(1, num_columns) * bytes_per_value * 4
    return max(floor, memory_bytes // per_row)


def iter_distance_blocks(
    points: torch.Tensor,
    metric: Metric,
    curvature: float = 1.0,
    chunk_rows: int = 1024,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, block)`` where ``block`` is the ``(rows, N)`` distance matrix from rows ``start:start+rows``.

    Memory stays bounded by ``chunk_rows × N`` values whatever ``N`` is; the full ``N × N`` matrix never exists.
    """
    pts = prepare_points(points, metric)
    sq = (pts * pts).sum(-1)
    for start in range(0, pts.shape[0], chunk_rows):
        stop = min(start + chunk_rows, pts.shape[0])
        yield start, distance_block(pts[start:stop], pts, metric, curvature, sq[start:stop], sq)


def pairwise_distance(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    metric: Metric = "hyperbolic",
    curvature: float = 1.0,
    chunk_rows: int = 4096,
) -> torch.Tensor:
    """Full ``(N, M)`` distance matrix between the rows of ``x`` and ``y`` (``y = x`` when omitted).

    For the Poincaré metric, ``x`` and ``y`` must already lie in the ball (see :func:`to_poincare_ball`). In
    float32 the self-distances on the diagonal come out at up to ~1e-3 rather than exactly 0 (cancellation in
    the expanded norm); when ``y`` is omitted the diagonal is set to exactly 0.
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {METRICS}.")
    same = y is None
    xp = prepare_points(x, metric)
    yp = xp if y is None else prepare_points(y, metric)
    blocks = []
    for start in range(0, xp.shape[0], chunk_rows):
        blocks.append(distance_block(xp[start : start + chunk_rows], yp, metric, curvature))
    out = torch.cat(blocks) if blocks else xp.new_zeros((0, yp.shape[0]))
    if same:
        out.fill_diagonal_(0.0)
    return out


def ranking_factors(points: torch.Tensor, metric: Metric, curvature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Factors ``(L, R)`` such that, for every fixed row ``i``, ``(L @ R.T)[i, j]`` increases strictly with ``d(i, j)``.

    Partner search only needs each anchor's *ranking* of the others, and every distance here is, for a fixed
    anchor, a monotone function of one bilinear form, so a whole block of ranking keys costs a single matrix
    product — no element-wise ``arcosh``, square root or division over the ``N × N`` block:

    * cosine: :math:`-\hat x_i \cdot \hat x_j`;
    * euclidean: :math:`\|x_j\|^2 - 2 x_i \cdot x_j` (:math:`\|x_i\|^2` is constant along the row);
    * hyperbolic: :math:`\|x_i - x_j\|^2 / (1 - c\|x_j\|^2)`, since
      :math:`d = \operatorname{arcosh}(1 + 2c\,\|x_i-x_j\|^2 / ((1-c\|x_i\|^2)(1-c\|x_j\|^2)))/\sqrt{c}` and the
      factor :math:`1 - c\|x_i\|^2` is constant along the row. Writing
      :math:`\|x_i - x_j\|^2 = \|x_i\|^2 + \|x_j\|^2 - 2x_i \cdot x_j`, the key is
      :math:`[x_i, \|x_i\|^2, 1] \cdot [-2x_j/a_j, 1/a_j, \|x_j\|^2/a_j]` with :math:`a_j = 1 - c\|x_j\|^2`.

    Points must already be in the metric's space (inside the ball for ``hyperbolic``). Returned in float32.
    """
    pts = prepare_points(points, metric).float()
    if metric == "cosine":
        return pts, -pts
    sq = (pts.double() * pts.double()).sum(-1, keepdim=True)
    ones = torch.ones_like(sq)
    if metric == "euclidean":
        left = torch.cat([pts.double(), ones], dim=1)
        right = torch.cat([-2.0 * pts.double(), sq], dim=1)
    elif metric == "hyperbolic":
        # Same floor as _hyperbolic_block: a point rounded onto the boundary stays at a finite (huge) key.
        floor = 1.0 - (1.0 - _ball_eps(torch.float32)) ** 2
        inv_a = 1.0 / (1.0 - curvature * sq).clamp_min(floor)
        left = torch.cat([pts.double(), sq, ones], dim=1)
        right = torch.cat([-2.0 * pts.double() * inv_a, inv_a, sq * inv_a], dim=1)
    else:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {METRICS}.")
    # The factors are formed in float64 (1/a_j can be large near the boundary), the product runs in float32.
    return left.float(), right.float()
