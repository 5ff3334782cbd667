"""Figure helpers shared by the benchmark scripts: data in, a saved figure (PNG, PDF or SVG) out."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import numpy as np  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402


FORMATS = ("png", "pdf", "svg")


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write atomically in the format the suffix names (.png, .pdf or .svg), and close the figure."""
    import io

    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        plt.close(fig)
        raise ValueError(f"{path}: a figure's suffix must be one of {', '.join('.' + f for f in FORMATS)}")
    fig.tight_layout()
    buffer = io.BytesIO()
    # No creation date in PDF or SVG metadata: the same figure gives the same bytes.
    metadata = {"png": None, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[fmt]
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def draw_polytope(
    ax,
    cells: np.ndarray,
    lp_polygon: np.ndarray,
    dual_polygon: np.ndarray,
    interval_box: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> None:
    """One panel of Figures 6–7: the true set (filled cells), the LP and dual polygons, the interval box.

    The view fits the dual polygon; the interval box is drawn when it fits
    within three times that view, and named in the corner otherwise.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Polygon, Rectangle

    ax.add_collection(PolyCollection(cells, facecolors="0.55", edgecolors="none", label="true (sampled)"))
    ax.add_patch(Polygon(lp_polygon, closed=True, fill=False, edgecolor="tab:blue", lw=1.4, label="LP (eq. 19)"))
    ax.add_patch(Polygon(dual_polygon, closed=True, fill=False, edgecolor="tab:orange", lw=1.2, ls="--",
                         label="dual (Thm. 1)"))
    lo, hi = dual_polygon.min(0), dual_polygon.max(0)
    pad = 0.15 * (hi - lo) + 1e-9
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    if interval_box is not None:
        (x0, x1), (y0, y1) = interval_box
        view = np.array([hi - lo + 2 * pad])
        if x1 - x0 <= 3 * view[0, 0] and y1 - y0 <= 3 * view[0, 1]:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="tab:green", lw=1, label="interval"))
            ax.set_xlim(min(x0, lo[0] - pad[0]), max(x1, hi[0] + pad[0]))
            ax.set_ylim(min(y0, lo[1] - pad[1]), max(y1, hi[1] + pad[1]))
        else:
            ax.text(0.02, 0.02, f"interval box {x1 - x0:.2g} × {y1 - y0:.2g}", transform=ax.transAxes, fontsize=7,
                    color="tab:green")
    ax.tick_params(labelsize=7)
