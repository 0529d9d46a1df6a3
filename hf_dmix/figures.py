"""Figure plumbing shared by the package's pictures: a display-free figure, a wrapped title, an atomic PNG.

What lives here: :func:`new_figure` (a matplotlib figure on its own Agg canvas), :func:`wrap_to_width` and
:func:`set_title` (titles that never run past the figure's edge) and :func:`save_png` (render and write atomically),
with the sizes every picture shares. What does not: what a picture shows (``plotting.py``).

Matplotlib is optional: it is imported only when a figure is made (:func:`require_matplotlib`), so ``import hf_dmix``
never needs it. Figures are rendered through the Agg canvas directly (``FigureCanvasAgg``), never through ``pyplot``,
so drawing needs no display and never switches the backend of a notebook or a script that imports this package.
"""

from __future__ import annotations

import io
import os
import textwrap
from typing import TYPE_CHECKING, Any

from .io import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGSIZE_INCHES = 7.0
DPI = 150
TITLE_FONTSIZE = 12
# Average glyph width of DejaVu Sans as a share of the font size is ~0.55; 0.62 leaves room for wide glyphs
# (capitals, "m", "w") so that a wrapped line never runs past the figure's edge.
_GLYPH_WIDTH = 0.62


def require_matplotlib() -> Any:
    """Import matplotlib lazily, with an actionable message when it is missing."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "hf_dmix plotting needs matplotlib, which is not installed: `pip install matplotlib` "
            "(or `pip install hf-dmix[bench]`)."
        ) from err
    return matplotlib


def new_figure(width_in: float = FIGSIZE_INCHES, height_in: float = FIGSIZE_INCHES) -> Figure:
    """A figure on its own Agg canvas: rendering needs no display and leaves pyplot's global state alone."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Constrained layout reserves room for the suptitle and the legend below the axes, so nothing overlaps.
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def wrap_to_width(text: str, width_in: float, fontsize: float) -> str:
    """Break ``text`` into lines that fit ``width_in`` inches at ``fontsize`` points (long words are split too).

    Lines break only at ASCII spaces: join ``k = 60`` with no-break spaces (``\\u00a0``) to keep it on one line.

    Args:
        text: the text; existing line breaks are kept.
        width_in: the width available, in inches.
        fontsize: the font size, in points.

    Returns:
        The text with line breaks inserted.
    """
    chars = max(10, int(width_in * 72.0 / (_GLYPH_WIDTH * fontsize)))
    return "\n".join(textwrap.fill(line, chars) if line else line for line in text.split("\n"))


def set_title(fig: Figure, title: str) -> None:
    """Set ``title`` as the figure's suptitle, wrapped to the figure's width."""
    # 0.9 of the width: the suptitle is centred and constrained layout keeps a small pad at both edges.
    fig.suptitle(wrap_to_width(title, 0.9 * fig.get_figwidth(), TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)


def save_png(fig: Figure, path: str | os.PathLike) -> str:
    """Render ``fig`` to PNG and write it atomically (temporary file in the same folder, then a rename)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    path = os.fspath(path)
    write_atomic(path, buffer.getvalue())
    return path
