"""The evaluation reports' plots: matplotlib on its headless backend and the folder the PNGs go to.
One owner for what every plotting function needs, so that each says only what it draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerkit.errors import UserError


class PlotFolder:
    """PNGs written into ``directory`` (made when missing). ``plt`` is matplotlib's pyplot on the
    Agg backend; without matplotlib a `UserError` says how to install it or turn plots off."""

    def __init__(self, directory: str | Path) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise UserError("plots need matplotlib", hint="pip install 'steerkit[eval]' or pass --no-plots") from None
        self.plt: Any = plt
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []

    def save(self, fig: Any, name: str) -> Path:
        """Lay out ``fig``, write it as ``name`` in the folder (120 dpi) and close it."""
        fig.tight_layout()
        path = self.directory / name
        fig.savefig(path, dpi=120)
        self.plt.close(fig)
        self.paths.append(path)
        return path
