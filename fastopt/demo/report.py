"""What every part writes: the numbers behind each curve (JSON), a terminal table, progress bars."""

import json
import math
from pathlib import Path

import numpy as np


def _plain(value):
    """JSON-ready: arrays to lists, numpy scalars to Python, floats to 7 significant digits."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return float(f"{v:.7g}") if math.isfinite(v) else None
    return value


def write_json(data, path):
    path = Path(path)
    path.write_text(json.dumps(_plain(data), indent=1) + "\n")
    return path


def format_table(headers, rows):
    """A plain-text table, columns aligned: numbers right, text left."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float, np.number)) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.2e}"
    return str(value)


def progress(iterable, description, enabled=True, **kwargs):
    """tqdm around a long loop (only on a terminal, and only when enabled)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=description, leave=False, disable=None, **kwargs)
