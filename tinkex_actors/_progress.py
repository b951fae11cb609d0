"""Progress bars: tqdm, whose ``bar_format`` may also name fields of our own.

Every progress bar of the package (the CLI's download bar, the demo's training bar) is a
:class:`FieldBar`; tqdm draws it, throttles redraws and handles the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

__all__ = ["FieldBar"]


class FieldBar(tqdm):  # type: ignore[misc]  # tqdm is not type-checked (pyproject: mypy)
    """A tqdm bar whose ``bar_format`` may name the keys of :attr:`fields` too.

    Args:
        fields: the extra values, e.g. ``{"loss": "1.234"}`` for ``"... loss={loss}"``; update
            :attr:`fields` before ``update()``/``refresh()`` to show new values.
        args, kwargs: tqdm's.
    """

    #: No tqdm monitor thread (it corrects the redraw rate of bars updated in bursts): a
    #: library leaves no threads behind, and our bars are updated steadily.
    monitor_interval = 0

    def __init__(self, *args: Any, fields: Mapping[str, object] | None = None, **kwargs: Any):
        # Set before tqdm's constructor, which may already draw the bar.
        self.fields: dict[str, object] = dict(fields or {})
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        """tqdm's format fields plus :attr:`fields`."""
        return {**super().format_dict, **self.fields}

    @staticmethod
    def line(n: float, total: float | None, *, fields: Mapping[str, object], **kwargs: Any) -> str:
        """The text tqdm would draw for ``n`` of ``total`` (``kwargs``: ``format_meter``'s,
        e.g. ``prefix``, ``ascii``, ``bar_format``), without a bar instance."""
        text: str = tqdm.format_meter(n, total, 0, **kwargs, **fields)
        return text
