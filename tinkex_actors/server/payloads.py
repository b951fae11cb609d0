"""Decoded request payloads shared by the JSON and protobuf codecs, and array helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tinkex_actors.server.engine_api import EngineDatum
from tinkex_actors.server.http_errors import bad_request

__all__ = ["FwdBwdPayload", "csr_to_dense", "public_array"]


@dataclass
class FwdBwdPayload:
    """One forward / forward_backward request, whichever encoding it came in."""

    model_id: str
    seq_id: int | None
    data: list[EngineDatum]
    loss_fn: str
    loss_fn_config: dict[str, float] = field(default_factory=dict)
    #: String-valued config entries (0.38 ``loss_fn_config_v2`` text values).
    loss_fn_config_text: dict[str, str] = field(default_factory=dict)
    forward_only: bool = False


def csr_to_dense(
    values: npt.NDArray[np.generic],
    crow: npt.NDArray[np.int64],
    col: npt.NDArray[np.int64],
    shape: list[int],
    where: str,
) -> npt.NDArray[np.generic]:
    """Expand a CSR matrix (unlisted cells 0), checking every index against ``shape``."""
    if len(shape) != 2:
        raise bad_request(f"{where}: a sparse tensor needs a 2-D shape, got {shape}")
    rows, cols = shape
    if rows < 0 or cols < 0 or crow.shape[0] != rows + 1:
        raise bad_request(f"{where}: crow_indices must have shape[0] + 1 = {rows + 1} entries")
    if col.shape[0] != values.shape[0] or (crow.size and (crow[0] != 0 or crow[-1] != col.size)):
        raise bad_request(f"{where}: CSR index arrays do not match the number of values")
    if np.any(np.diff(crow) < 0) or (col.size and (col.min() < 0 or col.max() >= cols)):
        raise bad_request(f"{where}: CSR indices out of range for shape {shape}")
    dense = np.zeros((rows, cols), dtype=values.dtype)
    row_of = np.repeat(np.arange(rows), np.diff(crow))
    dense[row_of, col] = values
    return dense


def public_array(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """Normalize an output array to the two public dtypes (float32, int64)."""
    if np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(array, dtype="<f4")
    return np.ascontiguousarray(array, dtype="<i8")
