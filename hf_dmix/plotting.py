"""Pictures of a partner index: the training set in the Poincaré disk, and how often each example is a candidate.

What lives here: :func:`k_occurrence` (in how many candidate sets each example appears, for every
:class:`~hf_dmix.partners.PartnerIndex` representation), :func:`plot_partners` (the training set drawn in the
Poincaré disk with its hubs and one anchor's candidate set) and :func:`plot_k_occurrence` (the k-occurrence
histogram against what uniformly random candidate sets of the same size would give).

What does not: building the index (``partners.py``), mapping embeddings into the ball (``geometry.py``), the
figure plumbing every picture shares (``figures.py``: a display-free figure, the wrapped title, the atomic PNG).

"Hubs" are the examples that appear in far more candidate sets than the ``k`` an example appears in on average;
a right-skewed k-occurrence distribution is the hubness measure of Radovanović et al. (JMLR 2010). With the
``farthest`` order in the Poincaré ball, points near the boundary are far from everyone, so they become hubs —
which is why :func:`plot_partners` keeps each point's radius exact.

Matplotlib is optional: it is imported only when a plot is drawn, so ``import hf_dmix`` never needs it. Figures are
rendered through the Agg canvas directly (``FigureCanvasAgg``, in ``figures.py``), never through ``pyplot``, so
drawing needs no display and never switches the backend of a notebook or a script that imports this package.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .figures import FIGSIZE_INCHES, new_figure, require_matplotlib, save_png, set_title
from .hubness import k_occurrence, skewness
from .partners import PartnerIndex

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# ---------------------------------------------------------------------------------------------------------------
# k-occurrence
# ---------------------------------------------------------------------------------------------------------------


def num_hubs(num_examples: int, hub_share: float) -> int:
    """``max(1, floor(hub_share·N))``: how many examples count as hubs.

    The same rounding as the ``top1pct_slot_share`` of :func:`hf_dmix.partners.partner_statistics` (``max(1,
    N // 100)`` for 1 %), so the plot marks exactly the examples that statistic sums over.

    Args:
        num_examples: ``N``.
        hub_share: the share of the training set that counts as hubs, in ``(0, 1]``.

    Returns:
        The number of hubs, at least 1.
    """
    if not 0.0 < hub_share <= 1.0:
        raise ValueError(f"hub_share must lie in (0, 1], got {hub_share}.")
    # The tolerance keeps 0.29·100 = 28.999999999999996 from becoming 28.
    return max(1, min(num_examples, math.floor(hub_share * num_examples + 1e-9)))


def _ranked_by_occurrence(counts: torch.Tensor) -> torch.Tensor:
    """Examples by decreasing k-occurrence; ties go to the lower index, so the ranking is deterministic."""
    return torch.sort(-counts, stable=True).indices


def _binomial_pmf(trials: int, p: float) -> torch.Tensor:
    """``P(X = m)`` for ``m = 0..trials`` of ``Binomial(trials, p)``, through log-gamma (no overflow for large N)."""
    m = torch.arange(trials + 1, dtype=torch.float64)
    if p >= 1.0:
        return (m == trials).double()
    # float64 throughout: lgamma(N) in float32 is off by ~1e-4, which is a 1e-4 relative error in every pmf value.
    total = torch.lgamma(torch.tensor(trials + 1.0, dtype=torch.float64))
    log_choose = total - torch.lgamma(m + 1) - torch.lgamma(trials - m + 1)
    return torch.exp(log_choose + m * math.log(p) + (trials - m) * math.log1p(-p))


# ---------------------------------------------------------------------------------------------------------------
# The Poincaré disk
# ---------------------------------------------------------------------------------------------------------------


def project_to_disk(points: torch.Tensor) -> torch.Tensor:
    """2-D picture of points in the Poincaré ball: exact radius, direction from the top-2 principal components.

    ``p = ‖x‖ · u / ‖u‖`` with ``u = x V₂``, where ``V₂`` holds the two leading right singular vectors of the centred
    points. The Euclidean norm — the only thing that sets a point's hyperbolic distance to the origin, and what
    makes boundary points far from everyone (hubs under ``farthest``) — is kept exactly, so the picture never moves a
    point towards or away from the boundary. Directions are the 2-D PCA directions of the uncentred points, so the
    disk's centre stays the ball's origin. Only the angle is approximate: distances between two drawn points are
    not their hyperbolic distances. A point with ``u = 0`` is drawn on the positive horizontal axis.

    Args:
        points: ``(N, d)`` points inside the ball.

    Returns:
        ``(N, 2)`` float64 points with the same norms.
    """
    x = points.detach().double().cpu()
    if x.shape[1] < 2:
        x = torch.nn.functional.pad(x, (0, 2 - x.shape[1]))
    _, _, vh = torch.linalg.svd(x - x.mean(dim=0, keepdim=True), full_matrices=False)
    axes = vh[:2].T
    # SVD signs are arbitrary: make each axis's largest loading positive so the picture is reproducible.
    flip = torch.sign(axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)))
    axes = axes * torch.where(flip == 0, torch.ones_like(flip), flip)
    u = x @ axes
    u_norm = u.norm(dim=1, keepdim=True)
    direction = torch.where(u_norm > 0, u / u_norm.clamp_min(1e-300), torch.tensor([1.0, 0.0], dtype=x.dtype))
    return x.norm(dim=1, keepdim=True) * direction


def _validate_partner_inputs(
    points: torch.Tensor,
    index: PartnerIndex,
    labels: torch.Tensor | None,
    label_names: Sequence[str] | None,
    anchor: int | None,
    curvature: float,
    max_points: int,
) -> None:
    n = index.num_examples
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[0] != n or points.shape[1] < 1:
        got = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points must be a ({n}, d) tensor (one row per example of the index), got {got}.")
    if curvature <= 0:
        raise ValueError(f"curvature must be > 0 (the ball has curvature -c), got {curvature}.")
    radius = 1.0 / math.sqrt(curvature)
    largest = float(points.detach().double().norm(dim=1).max())
    # Slack of float32 rounding: project() keeps points at (1 - 4e-7) of the radius.
    if not largest < radius * (1 + 1e-6):
        raise ValueError(
            f"points must lie inside the Poincaré ball of radius 1/sqrt(c) = {radius:.4g}, but the largest norm is "
            f"{largest:.4g}. Map embeddings with hf_dmix.to_poincare_ball(embeddings, curvature={curvature:g}) first."
        )
    if labels is not None:
        if labels.numel() != n:
            raise ValueError(f"labels must hold one label per example ({n}), got {labels.numel()}.")
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"labels must be non-negative class ids, got {int(labels.min())}.")
        if label_names is not None and int(labels.max()) >= len(label_names):
            raise ValueError(
                f"label_names has {len(label_names)} names (ids 0..{len(label_names) - 1}) but labels contain "
                f"id {int(labels.max())}."
            )
    if anchor is not None and not 0 <= anchor < n:
        raise ValueError(f"anchor must be an example index in [0, {n}), got {anchor}.")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (the anchor and one other example), got {max_points}.")


def _drawn_subset(
    n: int, anchor: int, candidates: torch.Tensor, hubs: torch.Tensor, max_points: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples to draw: anchor and hubs always, then as many candidates as fit, then random others.

    Returns:
        ``(drawn, drawn_candidates)``: sorted example indices, and the candidates among them.
    """
    if n <= max_points:
        return torch.arange(n), candidates
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[anchor] = True
    keep[hubs[: max_points - 1]] = True
    room = max_points - int(keep.sum())
    fresh = candidates[~keep[candidates]]
    # A random share of the candidates when they do not all fit, so the picture is not biased to low indices.
    shown = fresh[torch.randperm(len(fresh), generator=g)[:room]]
    keep[shown] = True
    room = max_points - int(keep.sum())
    rest = torch.nonzero(~keep).reshape(-1)
    keep[rest[torch.randperm(len(rest), generator=g)[:room]]] = True
    return torch.nonzero(keep).reshape(-1), candidates[keep[candidates]]


def _hubs_and_anchor(counts: torch.Tensor, n_hubs: int, anchor: int | None) -> tuple[torch.Tensor, int]:
    """The ``n_hubs`` examples of highest k-occurrence (none when every count is equal) and the anchor to highlight:
    the one given, else one of median k-occurrence (position ``N // 2`` of the descending ranking)."""
    ranked = _ranked_by_occurrence(counts)
    hubs = ranked[:n_hubs] if counts.max() > counts.min() else ranked[:0]
    return hubs, int(ranked[len(counts) // 2]) if anchor is None else anchor


def _draw_disk(ax: Any, radius: float) -> None:
    """The boundary circle, the origin and a bare, square frame around them."""
    from matplotlib.patches import Circle

    ax.add_patch(Circle((0.0, 0.0), radius, fill=False, color="black", linewidth=1.2, zorder=1))
    ax.plot([0.0], [0.0], marker="+", color="black", markersize=8, linestyle="none", zorder=1)
    ax.set_aspect("equal")
    ax.set_xlim(-1.05 * radius, 1.05 * radius)
    ax.set_ylim(-1.05 * radius, 1.05 * radius)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("radius = exact Euclidean norm in the ball; angle = top-2 PCA direction", fontsize=10)


def _draw_examples(
    ax: Any, xy: torch.Tensor, drawn: torch.Tensor, labels: torch.Tensor | None, label_names: Sequence[str] | None
) -> None:
    """Every drawn example as a dot, one colour per class (a continuous scale beyond 20 classes)."""
    others = drawn.numpy()
    if labels is None:
        ax.scatter(*xy[others].T, s=10, color="tab:blue", alpha=0.55, linewidths=0, label="examples", zorder=2)
        return
    classes = sorted(set(labels[drawn].tolist()))
    colormaps = require_matplotlib().colormaps
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"] if len(classes) <= 20 else None
    if cmap is None:
        # Too many classes for a readable legend: one continuous colour scale instead of one entry each.
        ax.scatter(
            *xy[others].T,
            s=10,
            c=labels[drawn].numpy(),
            cmap="viridis",
            alpha=0.55,
            linewidths=0,
            label=f"examples ({len(classes)} classes, coloured by id)",
            zorder=2,
        )
        return
    for i, cls in enumerate(classes):
        rows = drawn[labels[drawn] == cls].numpy()
        name = label_names[cls] if label_names is not None else f"label {cls}"
        ax.scatter(*xy[rows].T, s=10, color=cmap(i), alpha=0.6, linewidths=0, label=name, zorder=2)


def _draw_marks(
    ax: Any, xy: torch.Tensor, k: int, drawn_candidates: torch.Tensor, hubs: torch.Tensor, hub_share: float
) -> None:
    """The anchor's candidates as rings and the hubs as black-edged stars."""
    shown = len(drawn_candidates)
    k_text = f"{k}" if shown == k else f"{k}, {shown} drawn"
    ax.scatter(
        *xy[drawn_candidates.numpy()].T,
        s=42,
        facecolors="none",
        edgecolors="crimson",
        linewidths=0.9,
        label=f"candidates of the anchor (k = {k_text})",
        zorder=3,
        gid="candidates",
    )
    if len(hubs):
        ax.scatter(
            *xy[hubs.numpy()].T,
            s=170,
            marker="*",
            facecolors="gold",
            edgecolors="black",
            linewidths=0.9,
            label=f"hubs: top {100 * hub_share:g}% by k-occurrence ({len(hubs)})",
            zorder=4,
            gid="hubs",
        )


def _draw_anchor(ax: Any, xy: torch.Tensor, anchor: int, occurrence: int) -> None:
    """The anchor as a large cross, labelled towards the disk's centre, where there is room, whatever its quadrant."""
    ax.scatter(
        [xy[anchor, 0]],
        [xy[anchor, 1]],
        s=260,
        marker="X",
        color="crimson",
        edgecolors="black",
        linewidths=1.0,
        label=f"anchor #{anchor} (k-occurrence {occurrence})",
        zorder=5,
        gid="anchor",
    )
    anchor_xy = (float(xy[anchor, 0]), float(xy[anchor, 1]))
    offset = (-55.0 if anchor_xy[0] > 0 else 55.0, -45.0 if anchor_xy[1] > 0 else 45.0)
    ax.annotate(
        f"anchor #{anchor}",
        xy=anchor_xy,
        xytext=offset,
        textcoords="offset points",
        fontsize=11,
        ha="center",
        va="center",
        arrowprops=dict(arrowstyle="->", color="black", linewidth=1.0),
        bbox=dict(boxstyle="round,pad=0.25", facecolor="white", alpha=0.85),
        zorder=6,
    )


def _partners_title(index: PartnerIndex, curvature: float, num_drawn: int) -> str:
    """The default title of :func:`plot_partners`: the curvature, ``N`` (and how many are drawn) and ``k``."""
    n = index.num_examples
    drawn_note = "" if num_drawn == n else f", {num_drawn} drawn"
    # No-break spaces keep "N = 300" on one line when the title wraps.
    return (
        f"DMIX candidate sets in the Poincaré disk (c\u00a0=\u00a0{curvature:g}): N\u00a0=\u00a0{n}"
        f"{drawn_note}, k\u00a0=\u00a0{index.candidates_per_example} candidates per example"
    )


def plot_partners(
    points: torch.Tensor,
    index: PartnerIndex,
    labels: torch.Tensor | Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
    anchor: int | None = None,
    path: str | os.PathLike = "partners.png",
    curvature: float = 1.0,
    title: str | None = None,
    hub_share: float = 0.01,
    max_points: int = 5000,
    seed: int = 0,
    max_anchors: int | None = None,
    return_figure: bool = False,
) -> str | tuple[str, Figure]:
    """Draw the training set in the Poincaré disk with its hubs and one anchor's candidate set, as a PNG.

    Projection (see :func:`project_to_disk`): each point keeps its exact Euclidean norm in the ball — the radius is
    what decides hyperbolic distances to everyone and hence hubness — and takes its direction from the top-2
    principal components (fitted on the drawn points). Angles, and so distances between two drawn points, are
    approximate; the radius is not.

    Marks: every drawn example as a dot coloured by label; the hubs — the ``num_hubs(N, hub_share)`` examples of
    highest k-occurrence (:func:`num_hubs`, :func:`k_occurrence`; ties to the lower index) — as black-edged stars;
    the anchor as a large cross with an annotation, and its candidate set as rings. Without hubness (every
    k-occurrence equal, e.g. ``τ = 1``) no example is marked as a hub.

    Args:
        points: ``(N, d)`` points inside the Poincaré ball of curvature ``-c`` (radius ``1/sqrt(c)``), the ones the
            index was built on (:func:`hf_dmix.geometry.to_poincare_ball`).
        index: the partner index over the same ``N`` examples.
        labels: ``N`` non-negative class ids, to colour the points; ``None`` draws every point in one colour.
        label_names: names of the class ids ``0..C-1`` for the legend.
        anchor: the example whose candidate set is highlighted; ``None`` picks one of median k-occurrence (position
            ``N // 2`` of the ranking by decreasing k-occurrence, ties by index): a typical anchor, not a hub.
        path: where to write the PNG (folders are created; written atomically).
        curvature: ``c``.
        title: the figure title (wrapped to the figure's width); ``None`` describes the index.
        hub_share: share of the training set marked as hubs, in ``(0, 1]``.
        max_points: at most this many examples are drawn. The anchor and the hubs always are, then as many of the
            anchor's candidates as fit, then a random sample of the rest.
        seed: seed of that sample.
        max_anchors: passed to :func:`k_occurrence`: for a thresholds index, rank hubs by an estimate from this
            many anchors instead of the exact ``O(N²)`` count.
        return_figure: also return the matplotlib figure (for tests and notebooks); it is never shown.

    Returns:
        The path written, or ``(path, figure)`` with ``return_figure``.

    Raises:
        ValueError: on points of the wrong shape or outside the ball, labels of the wrong length or beyond
            ``label_names``, an anchor out of range, or a bad ``hub_share`` / ``max_points``.
        ImportError: when matplotlib is not installed.
    """
    labels_t = None if labels is None else torch.as_tensor(labels).reshape(-1).long()
    _validate_partner_inputs(points, index, labels_t, label_names, anchor, curvature, max_points)
    n = index.num_examples
    n_hubs = num_hubs(n, hub_share)
    fig = new_figure()  # fails early, before any O(N²) work, when matplotlib is missing
    counts = k_occurrence(index, max_anchors=max_anchors)
    hubs, anchor = _hubs_and_anchor(counts, n_hubs, anchor)
    candidates = torch.nonzero(index.members(torch.tensor([anchor]))[0]).reshape(-1)
    drawn, drawn_candidates = _drawn_subset(n, anchor, candidates, hubs, max_points, seed)
    xy = torch.full((n, 2), float("nan"), dtype=torch.float64)
    xy[drawn] = project_to_disk(points[drawn])
    ax = fig.add_subplot()
    _draw_disk(ax, 1.0 / math.sqrt(curvature))
    _draw_examples(ax, xy, drawn, labels_t, label_names)
    _draw_marks(ax, xy, len(candidates), drawn_candidates, hubs, hub_share)
    _draw_anchor(ax, xy, anchor, int(counts[anchor]))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=9, frameon=False, markerscale=0.9)
    set_title(fig, _partners_title(index, curvature, len(drawn)) if title is None else title)
    path = save_png(fig, path)
    return (path, fig) if return_figure else path


# ---------------------------------------------------------------------------------------------------------------
# The k-occurrence histogram
# ---------------------------------------------------------------------------------------------------------------


def _draw_uniform(ax: Any, n: int, k: float, low: int, high: int, width: int) -> tuple[Any, torch.Tensor]:
    """The expected histogram of uniform random candidate sets, Binomial(N − 1, k/(N − 1)) per example, as a step
    line over the same bins; returns the artist and the expected counts."""
    p = min(1.0, k / (n - 1))
    pmf = _binomial_pmf(n - 1, p)
    support = torch.arange(n, dtype=torch.float64)
    # Expected number of examples per bin under uniform candidate sets, over a range that covers both laws.
    sd = math.sqrt((n - 1) * p * (1 - p))
    lo = min(low, max(0, math.floor(k - 5 * sd)))
    hi = max(high, min(n - 1, math.ceil(k + 5 * sd)))
    uniform_edges = torch.arange(lo - (lo - low) % width, hi + width + 1, width, dtype=torch.float64) - 0.5
    expected = torch.histogram(support, bins=uniform_edges, weight=n * pmf).hist
    uniform_skew = (1 - 2 * p) / sd if sd > 0 else float("nan")
    uniform_skew_text = "n/a" if math.isnan(uniform_skew) else f"{uniform_skew:.2f}"
    uniform = ax.stairs(
        expected.numpy(),
        uniform_edges.numpy(),
        color="black",
        linewidth=1.4,
        label=f"uniform random sets: Binomial(N−1, k/(N−1)) (skewness {uniform_skew_text})",
        gid="uniform",
    )
    return uniform, expected


def _k_occurrence_title(index: PartnerIndex, k: float, max_anchors: int | None) -> str:
    """The default title of :func:`plot_k_occurrence`: ``N``, ``k`` and whether the counts are an estimate."""
    n = index.num_examples
    estimate = (
        ""
        if max_anchors is None or index.thresholds is None or max_anchors >= n
        else (f", estimated from {max_anchors} anchors")
    )
    return (
        f"Hubness of the DMIX candidate sets: k-occurrence of N\u00a0=\u00a0{n} examples, "
        f"k\u00a0=\u00a0{k:.4g}{estimate}"
    )


def plot_k_occurrence(
    index: PartnerIndex,
    path: str | os.PathLike = "k_occurrence.png",
    title: str | None = None,
    bins: int = 50,
    max_anchors: int | None = None,
    return_figure: bool = False,
) -> str | tuple[str, Figure]:
    """Histogram of the k-occurrence against uniformly random candidate sets of the same size, as a PNG.

    If every anchor drew its ``k`` candidates uniformly from the ``N − 1`` others, each example's k-occurrence
    would be ``Binomial(N − 1, k / (N − 1))`` (mean ``k``). The overlay is that law's expected number of examples
    per bin, ``N · P(bin)``; the legend gives both skewnesses — the sample skewness ``m3 / m2^(3/2)`` of the
    k-occurrence is the hubness measure of Radovanović et al. (2010): near the binomial's, no hubs; large and
    positive, a few examples sit in very many candidate sets. The y axis is logarithmic so the single-example
    bins of a hub tail stay visible.

    Args:
        index: the partner index.
        path: where to write the PNG (folders are created; written atomically).
        title: the figure title (wrapped to the figure's width); ``None`` describes the index.
        bins: the number of histogram bins (fewer when the counts span fewer integers).
        max_anchors: passed to :func:`k_occurrence` (thresholds only: estimate from this many anchors).
        return_figure: also return the matplotlib figure (for tests and notebooks); it is never shown.

    Returns:
        The path written, or ``(path, figure)`` with ``return_figure``.

    Raises:
        ValueError: when ``bins < 1``.
        ImportError: when matplotlib is not installed.
    """
    if bins < 1:
        raise ValueError(f"bins must be a positive number of bins, got {bins}.")
    fig = new_figure(FIGSIZE_INCHES, 0.7 * FIGSIZE_INCHES)
    n = index.num_examples
    counts = k_occurrence(index, max_anchors=max_anchors)
    k = float(counts.double().mean())  # k exactly for lists; the mean set size otherwise

    low, high = int(counts.min()), int(counts.max())
    # Integer-aligned bins: bin edges at half-integers, never narrower than one count.
    width = max(1, math.ceil((high - low + 1) / bins))
    edges = torch.arange(low, high + width + 1, width, dtype=torch.float64) - 0.5
    hist = torch.histogram(counts.double(), bins=edges).hist
    skew_text = "n/a, all equal" if counts.min() == counts.max() else f"{skewness(counts):.2f}"
    ax = fig.add_subplot()
    bars = ax.bar(
        edges[:-1].numpy(),
        hist.numpy(),
        width=width,
        align="edge",
        color="tab:blue",
        alpha=0.75,
        edgecolor="white",
        linewidth=0.4,
        label=f"this index (skewness {skew_text})",
        gid="histogram",
    )

    uniform, expected = _draw_uniform(ax, n, k, low, high, width)
    mean = ax.axvline(k, color="crimson", linestyle="--", linewidth=1.2, label=f"mean = k = {k:.4g}")

    ax.set_yscale("log")
    # Bottom below one example, so the binomial's 1e-30 tails do not stretch the axis; the top leaves a decade
    # above the tallest bar for the legend.
    ax.set_ylim(0.5, 20.0 * max(float(hist.max()), float(expected.max()), 1.0))
    ax.set_xlabel("k-occurrence (number of candidate sets an example is in)", fontsize=11)
    ax.set_ylabel("number of examples", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles=[bars, uniform, mean], fontsize=9, loc="upper right")
    set_title(fig, _k_occurrence_title(index, k, max_anchors) if title is None else title)
    path = save_png(fig, path)
    return (path, fig) if return_figure else path
