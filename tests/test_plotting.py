"""Tests of ``hf_dmix.plotting``: k-occurrence against brute force, the marks the plots draw, and input checks."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

import hf_dmix
import hf_dmix.partners as partners_mod
from hf_dmix.geometry import ranking_factors
from hf_dmix.partners import build_partner_index, partner_statistics
from hf_dmix.plotting import k_occurrence, num_hubs, plot_k_occurrence, plot_partners, project_to_disk

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

N = 300
TAU = 0.2
K = math.ceil(TAU * (N - 1))  # 60
LABEL_NAMES = ["negative", "neutral", "positive"]
# The figures are 7 in at 150 dpi (1050 px); "tight" saving trims the margins of the square disk plot and may grow
# by its 0.1 in pad, so each side lies within these bounds.
MIN_PX, MAX_PX = 600, 1100


@pytest.fixture(scope="module")
def points() -> torch.Tensor:
    # Seed 1: no near-tie at the τ cut (see test_k_occurrence_of_thresholds_equals_lists).
    return hf_dmix.to_poincare_ball(torch.randn(N, 16, generator=torch.Generator().manual_seed(1)))


@pytest.fixture(scope="module")
def index(points):
    return build_partner_index(points, N, "hyperbolic", tau=TAU, show_progress=False)


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return torch.arange(N) % len(LABEL_NAMES)


def brute_force_counts(candidates: torch.Tensor, n: int) -> list[int]:
    """k-occurrence by walking every candidate list, independently of ``bincount``."""
    counts = [0] * n
    for row in candidates.tolist():
        for j in row:
            counts[j] += 1
    return counts


def title_artist(fig):
    """The suptitle's Text artist, found through the public ``findobj`` (wrapping only turns spaces into breaks)."""
    from matplotlib.text import Text

    wanted = " ".join(fig.get_suptitle().split())
    found = [t for t in fig.findobj(Text) if t.get_text() and " ".join(t.get_text().split()) == wanted]
    assert found, "no suptitle drawn"
    return found[0]


def assert_title_inside(fig) -> None:
    fig.canvas.draw()
    box = title_artist(fig).get_window_extent(fig.canvas.get_renderer())
    frame = fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (box, frame)
    assert frame.y0 <= box.y0 and box.y1 <= frame.y1, (box, frame)


def artist(fig, gid: str):
    found = fig.findobj(lambda a: a.get_gid() == gid)
    assert len(found) == 1, f"expected one artist with gid {gid!r}, found {len(found)}"
    return found[0]


def histogram_bars(fig):
    (container,) = fig.axes[0].containers  # the one bar chart; its gid is copied onto every bar
    return list(container)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]


def assert_png(path: str) -> tuple[int, int]:
    assert os.path.getsize(path) > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        # A blank canvas has one colour; a drawn figure has many.
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 20
    assert MIN_PX <= width <= MAX_PX and MIN_PX <= height <= MAX_PX, (width, height)
    return width, height


# ---------------------------------------------------------------------------------------------------------------
# k-occurrence
# ---------------------------------------------------------------------------------------------------------------


def test_k_occurrence_of_lists_matches_brute_force_and_sums_to_n_k(index):
    counts = k_occurrence(index)
    assert counts.dtype == torch.int64 and counts.shape == (N,)
    assert counts.tolist() == brute_force_counts(index.candidates, N)
    assert int(counts.sum()) == N * K
    # Hyperbolic farthest sets on Gaussian data are skewed: the test data really has hubs to draw.
    assert int(counts.max()) > 2 * K


def test_k_occurrence_of_thresholds_equals_lists(points, index):
    thresholds = build_partner_index(points, N, "hyperbolic", tau=TAU, show_progress=False, representation="thresholds")
    assert thresholds.candidates is None and thresholds.thresholds is not None
    # A tiny memory budget forces chunks of 7 anchors, so the chunked sum is exercised against one row at a time.
    counts = k_occurrence(thresholds, memory_bytes=N * 5 * 4 * 7)
    one_by_one = sum(thresholds.members(torch.tensor([i]))[0].long() for i in range(N))
    assert torch.equal(counts, one_by_one)
    # Thresholds admit every key within a small relative slack (_KEY_RTOL) of the k-th one; lists cut exactly at k.
    # The two agree when no (k+1)-th key lies within that slack, which the seed of `points` was chosen for.
    left, right = ranking_factors(points, "hyperbolic")
    keys = (left @ right.T).double().fill_diagonal_(-math.inf)
    top = keys.topk(K + 1, dim=1).values
    gap = float(((top[:, K - 1] - top[:, K]) / top[:, K - 1].abs().clamp_min(1.0)).min())
    assert gap > 1.5 * partners_mod._KEY_RTOL, "test data has a near-tie at the τ cut; pick another seed"
    assert torch.equal(counts, k_occurrence(index))


def test_k_occurrence_estimate_from_sampled_anchors(points, index):
    thresholds = build_partner_index(points, N, "hyperbolic", tau=TAU, show_progress=False, representation="thresholds")
    exact = k_occurrence(index).double()
    estimate = k_occurrence(thresholds, max_anchors=150).double()
    # Each sampled anchor holds exactly K members, so the scaled total is N·K up to per-example rounding.
    assert abs(float(estimate.sum()) - N * K) <= N / 2
    assert float(torch.corrcoef(torch.stack([exact, estimate]))[0, 1]) > 0.9
    assert not torch.equal(estimate, exact)  # it really is a sample
    assert torch.equal(k_occurrence(thresholds, max_anchors=N).double(), exact)  # m >= N is exact
    with pytest.raises(ValueError, match="max_anchors must be a positive"):
        k_occurrence(thresholds, max_anchors=0)


def test_k_occurrence_of_all_others_is_n_minus_1():
    everyone = build_partner_index(None, N, "random", tau=TAU, show_progress=False)
    assert everyone.candidates is None and everyone.thresholds is None
    assert k_occurrence(everyone).tolist() == [N - 1] * N


def test_num_hubs_matches_partner_statistics_rounding(index):
    assert num_hubs(300, 0.01) == 3
    assert num_hubs(50, 0.01) == 1  # never zero
    assert num_hubs(100, 0.29) == 29  # 0.29·100 = 28.999999999999996 in floating point
    assert num_hubs(10, 1.0) == 10
    for n in (99, 100, 101, 250, 12345):
        assert num_hubs(n, 0.01) == max(1, n // 100)
    # The hubs the plot marks hold exactly the slots that partner_statistics' top-1 % share counts.
    counts = k_occurrence(index)
    top = torch.sort(counts, descending=True).values[: num_hubs(N, 0.01)]
    assert float(top.sum()) / (N * K) == pytest.approx(partner_statistics(index)["top1pct_slot_share"])
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"hub_share must lie in \(0, 1\]"):
            num_hubs(N, bad)


# ---------------------------------------------------------------------------------------------------------------
# The projection
# ---------------------------------------------------------------------------------------------------------------


def test_project_to_disk_keeps_every_radius_exactly(points):
    with_origin = torch.cat([points, torch.zeros(1, points.shape[1])])
    xy = project_to_disk(with_origin)
    assert xy.shape == (N + 1, 2)
    torch.testing.assert_close(xy.norm(dim=1), with_origin.double().norm(dim=1), rtol=1e-12, atol=1e-15)
    assert xy[-1].tolist() == [0.0, 0.0]


def test_project_to_disk_directions_are_the_leading_principal_plane():
    # Points spread in the first two coordinates only: their picture is that plane, up to a rotation/reflection.
    g = torch.Generator().manual_seed(1)
    plane = 0.5 * torch.rand(40, 2, generator=g) - 0.25
    points = torch.cat([plane, torch.zeros(40, 6)], dim=1)
    xy = project_to_disk(points)
    gram = lambda z: z.double() @ z.double().T  # noqa: E731 - inner products are invariant to rotations/reflections
    torch.testing.assert_close(gram(xy), gram(plane), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# plot_partners
# ---------------------------------------------------------------------------------------------------------------


def test_plot_partners_draws_hubs_anchor_and_candidates(tmp_path, points, index, labels):
    target = tmp_path / "nested" / "partners.png"
    path, fig = plot_partners(points, index, labels=labels, label_names=LABEL_NAMES, path=target, return_figure=True)
    assert path == str(target)
    assert_png(path)
    assert os.listdir(target.parent) == ["partners.png"]  # atomic write: no temporary file left behind

    texts = legend_texts(fig)
    assert any(t.startswith("hubs: top 1% by k-occurrence") for t in texts), texts
    assert set(LABEL_NAMES) <= set(texts)

    counts = k_occurrence(index)
    ranked = torch.sort(-counts, stable=True).indices
    hubs = artist(fig, "hubs").get_offsets()
    assert len(hubs) == num_hubs(N, 0.01) == 3
    # The stars sit at the radii of the three most frequent candidates (the projection keeps radii).
    torch.testing.assert_close(
        torch.as_tensor(hubs).norm(dim=1).sort().values,
        points[ranked[:3]].double().norm(dim=1).sort().values,
    )
    # Default anchor: the example of (lower) median k-occurrence, whose K candidates are ringed.
    anchor = int(ranked[N // 2])
    assert any(t.startswith(f"anchor #{anchor} (k-occurrence {int(counts[anchor])})") for t in texts), texts
    sorted_counts = counts.sort().values
    assert int(counts[anchor]) == int(sorted_counts[(N - 1) // 2])
    rings = artist(fig, "candidates").get_offsets()
    assert len(rings) == K
    torch.testing.assert_close(
        torch.as_tensor(rings).norm(dim=1).sort().values,
        points[index.candidates[anchor].long()].double().norm(dim=1).sort().values,
    )
    assert_title_inside(fig)


def test_plot_partners_explicit_anchor_and_long_title_fit(tmp_path, points, index):
    title = "Partner sets of a very long experiment name " * 6 + "averyveryverylongunbreakablewordthatmustbesplit" * 3
    _, fig = plot_partners(points, index, anchor=7, title=title, path=tmp_path / "p.png", return_figure=True)
    assert any(t.startswith("anchor #7 ") for t in legend_texts(fig))
    assert len(artist(fig, "candidates").get_offsets()) == K
    assert title_artist(fig).get_text().count("\n") >= 3  # wrapped, not shrunk off the page
    assert_title_inside(fig)


@pytest.mark.parametrize("max_points", [80, 30])
def test_plot_partners_subsample_keeps_anchor_hubs_and_candidates(tmp_path, points, index, labels, max_points):
    anchor = 5
    _, fig = plot_partners(
        points, index, labels=labels, anchor=anchor, max_points=max_points, path=tmp_path / "p.png", return_figure=True
    )
    label_dots = [c for c in fig.axes[0].collections if c.get_label() in ("label 0", "label 1", "label 2")]
    assert sum(len(c.get_offsets()) for c in label_dots) == max_points
    assert len(artist(fig, "hubs").get_offsets()) == 3
    # Anchor and hubs first; candidates fill the room left (hubs that are candidates are ringed as well).
    hubs = set(torch.sort(-k_occurrence(index), stable=True).indices[:3].tolist())
    candidates = index.candidate_set(anchor)
    assert anchor not in hubs
    shown = len(hubs & candidates) + min(K - len(hubs & candidates), max_points - 1 - len(hubs))
    assert len(artist(fig, "candidates").get_offsets()) == shown
    assert (shown == K) == (max_points == 80)
    note = f"k = {K})" if shown == K else f"k = {K}, {shown} drawn)"
    assert any(t.endswith(note) for t in legend_texts(fig)), legend_texts(fig)


def test_plot_partners_without_hubness_marks_no_hub(tmp_path, points):
    everyone = build_partner_index(None, N, "random", show_progress=False)
    _, fig = plot_partners(points, everyone, path=tmp_path / "p.png", return_figure=True)
    assert not fig.findobj(lambda a: a.get_gid() == "hubs")
    assert len(artist(fig, "candidates").get_offsets()) == N - 1


# ---------------------------------------------------------------------------------------------------------------
# plot_k_occurrence
# ---------------------------------------------------------------------------------------------------------------


def test_plot_k_occurrence_histogram_overlay_and_skewness(tmp_path, index):
    scipy_stats = pytest.importorskip("scipy.stats")
    path, fig = plot_k_occurrence(index, path=tmp_path / "k.png", return_figure=True)
    assert_png(path)
    assert sum(bar.get_height() for bar in histogram_bars(fig)) == N
    counts = k_occurrence(index).numpy()
    skew = scipy_stats.skew(counts, bias=True)
    assert skew > 1.0  # hubs
    texts = legend_texts(fig)
    assert f"this index (skewness {skew:.2f})" in texts
    p = K / (N - 1)
    assert any(f"(skewness {(1 - 2 * p) / math.sqrt((N - 1) * p * (1 - p)):.2f})" in t for t in texts), texts
    # The binomial overlay is an expected number of examples per bin: it sums to N over the plotted range.
    uniform = artist(fig, "uniform")
    assert float(uniform.get_data().values.sum()) == pytest.approx(N, rel=1e-6)
    assert fig.axes[0].get_yscale() == "log"
    assert_title_inside(fig)


def test_plot_k_occurrence_without_hubness(tmp_path):
    everyone = build_partner_index(None, N, "random", show_progress=False)
    _, fig = plot_k_occurrence(everyone, path=tmp_path / "k.png", title="x " * 200, return_figure=True)
    heights = [bar.get_height() for bar in histogram_bars(fig)]
    assert heights == [N]
    assert "this index (skewness n/a, all equal)" in legend_texts(fig)
    assert_title_inside(fig)


# ---------------------------------------------------------------------------------------------------------------
# Input checks and the optional dependency
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(points="short"), r"points must be a \(300, d\) tensor .* got \(299, 16\)"),
        (dict(points="outside"), r"inside the Poincaré ball of radius 1/sqrt\(c\) = 1, but the largest norm is 2"),
        (dict(curvature=0.0), r"curvature must be > 0"),
        (dict(labels=torch.zeros(10, dtype=torch.long)), r"one label per example \(300\), got 10"),
        (dict(labels=torch.full((N,), 3), label_names=LABEL_NAMES), r"3 names \(ids 0..2\) but labels contain id 3"),
        (dict(labels=torch.full((N,), -1)), r"non-negative class ids, got -1"),
        (dict(anchor=N), r"anchor must be an example index in \[0, 300\), got 300"),
        (dict(anchor=-1), r"anchor must be an example index in \[0, 300\), got -1"),
        (dict(hub_share=0.0), r"hub_share must lie in \(0, 1\], got 0.0"),
        (dict(max_points=1), r"max_points must be at least 2.*got 1"),
    ],
)
def test_plot_partners_rejects_bad_inputs(tmp_path, points, index, change, message):
    kwargs = dict(points=points, index=index, path=tmp_path / "p.png")
    kwargs.update(change)
    if change.get("points") == "short":
        kwargs["points"] = points[:-1]
    elif change.get("points") == "outside":
        kwargs["points"] = points.clone()
        kwargs["points"][0] = 0.0
        kwargs["points"][0, 0] = 2.0
    with pytest.raises(ValueError, match=message):
        plot_partners(**kwargs)
    assert not (tmp_path / "p.png").exists()


def test_plot_k_occurrence_rejects_bad_bins(tmp_path, index):
    with pytest.raises(ValueError, match="bins must be a positive number of bins, got 0"):
        plot_k_occurrence(index, path=tmp_path / "k.png", bins=0)


def test_missing_matplotlib_names_the_install_command(tmp_path, points, index, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_partners(points, index, path=tmp_path / "p.png")
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_k_occurrence(index, path=tmp_path / "k.png")


def test_import_hf_dmix_does_not_import_matplotlib():
    code = "import sys, hf_dmix; hf_dmix.plot_partners; sys.exit('matplotlib' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=root).returncode == 0
