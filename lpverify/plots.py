"""Figure helpers shared by the benchmark scripts: data in, a saved PNG out."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write atomically as PNG, and close the figure."""
    import io

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
