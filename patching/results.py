"""PatchResult: a tensor of metric values with named axes, tick labels and the settings that made it.

    result = activation_patch(model, prompts, "resid_pre", logit_diff)
    result.values              # [layer pos]
    result.to_dataframe()      # one row per cell
    result.top(5)              # the 5 cells of largest |value|
    fig = result.plot()        # heatmap, RdBu centred at zero, tokens on the position axis
    result.save("r.pt"); PatchResult.load("r.pt")
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.errors import InputError
from interp.tokenizers import plot_label


@dataclass
class PatchResult:
    """Metric values over named axes.

    ``values``: a tensor with one axis per name in ``axes`` (e.g. ``("layer", "pos")``,
    ``("layer", "head")``, ``("layer", "pos", "head")`` or ``("site",)``). ``labels[axis]`` holds
    one tick label per index of that axis. ``settings`` records how the values were produced.
    """

    values: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = tuple(self.axes)
        if self.values.ndim != len(self.axes):
            raise InputError(f"PatchResult: values of shape {tuple(self.values.shape)} need {self.values.ndim} axis names, got {self.axes}.")
        for i, axis in enumerate(self.axes):
            if axis not in self.labels:
                self.labels[axis] = [str(j) for j in range(self.values.shape[i])]
            elif len(self.labels[axis]) != self.values.shape[i]:
                raise InputError(f"PatchResult: axis {axis!r} has {self.values.shape[i]} entries but {len(self.labels[axis])} labels.")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def __repr__(self) -> str:
        return f"PatchResult(axes={self.axes}, shape={self.shape}, settings={self.settings})"

    # ------------------------------------------------------------------ tables
    def to_dataframe(self):
        """One row per cell: an integer column per axis, a ``{axis}_label`` column, and ``value``."""
        import pandas as pd

        rows = []
        values = self.values.detach().cpu()
        for index in itertools.product(*(range(n) for n in self.shape)):
            row: dict[str, Any] = {}
            for axis, i in zip(self.axes, index, strict=True):
                row[axis] = i
                row[f"{axis}_label"] = self.labels[axis][i]
            row["value"] = float(values[index])
            rows.append(row)
        return pd.DataFrame(rows)

    def top(self, k: int = 10):
        """The ``k`` cells of largest absolute value (a DataFrame, largest first)."""
        if not isinstance(k, int) or k < 1:
            raise InputError(f"top(k) needs a positive int k, got {k!r}.")
        df = self.to_dataframe()
        order = df["value"].abs().sort_values(ascending=False, kind="stable").index
        return df.loc[order[:k]].reset_index(drop=True)

    # ------------------------------------------------------------------ figures
    def plot(self, title: str | None = None):
        """A matplotlib Figure: a heatmap (RdBu, symmetric about zero) with labelled axes and a colour
        bar; a 3-D result is drawn as one heatmap per index of its last axis."""
        import matplotlib.pyplot as plt

        values = self.values.detach().float().cpu()
        if values.ndim == 1:
            values, axes = values[None], ("", *self.axes)
            labels = {"": [""], **self.labels}
        else:
            axes, labels = self.axes, self.labels
        if values.ndim > 3:
            raise InputError(f"plot draws results with at most 3 axes; this one has {self.axes}. Slice .values first.")
        panels = [values] if values.ndim == 2 else [values[..., j] for j in range(values.shape[-1])]
        limit = float(values.abs().max()) or 1.0
        n = len(panels)
        cols = min(n, 4)
        rows = (n + cols - 1) // cols
        width = max(4.0, 0.35 * values.shape[1] + 2.0)
        fig, grid = plt.subplots(rows, cols, figsize=(width * cols, max(2.0, 0.4 * values.shape[0] + 1.5) * rows), squeeze=False)
        image = None
        for j, ax in enumerate(grid.flat):
            if j >= n:
                ax.axis("off")
                continue
            image = ax.imshow(panels[j].numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_ylabel(axes[0])
            ax.set_xlabel(axes[1])
            ax.set_yticks(range(values.shape[0]), [plot_label(t) for t in labels[axes[0]]])
            ax.set_xticks(range(values.shape[1]), [plot_label(t) for t in labels[axes[1]]], rotation=90)
            if n > 1:
                ax.set_title(f"{axes[2]} {labels[axes[2]][j]}")
        fig.colorbar(image, ax=grid.ravel().tolist(), label=self.settings.get("metric", "value"))
        fig.suptitle(title or self._title())
        return fig

    def _title(self) -> str:
        s = self.settings
        parts = [str(s[k]) for k in ("kind", "direction", "source") if s.get(k) is not None]
        return " · ".join(parts) or "patching result"

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write values, axes, labels and settings to one file (``torch.save``; plain data only)."""
        path = Path(path)
        torch.save(
            {"values": self.values.detach().cpu(), "axes": list(self.axes), "labels": self.labels, "settings": self.settings},
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> PatchResult:
        """Read a result written by `save` (loaded with ``weights_only=True``: no code runs)."""
        data = torch.load(Path(path), weights_only=True)
        return cls(data["values"], tuple(data["axes"]), dict(data["labels"]), dict(data["settings"]))
