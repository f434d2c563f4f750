"""Normalizing and comparing recorded values: tolerant numbers, NaN equals NaN, order-free dicts."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["normalize", "first_mismatch", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 1e-6


def normalize(value: Any) -> Any:
    """Plain, JSON-able values: tensors and numpy scalars become Python numbers, numbers become
    floats (``1`` and ``1.0`` compare equal across hosts), tuples become lists, dicts get sorted
    string keys, and checkpoint paths keep only their file name (each host writes to its own folder).
    A path is a string ending in ``.ckpt``/``.pt``/``.pth`` or an absolute path; a name with a slash
    (``train/episode_reward_mean``) stays whole."""
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # torch tensors, numpy arrays/scalars
        return normalize(value.tolist())
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and (value.endswith((".ckpt", ".pt", ".pth")) or os.path.isabs(value)):
        return os.path.basename(value)
    if value is None or isinstance(value, str):
        return value
    return repr(value)


def first_mismatch(a: Any, b: Any, tolerance: float = DEFAULT_TOLERANCE, path: str = "") -> str | None:
    """Where two normalized values differ (``"episode_info.reward: 1.5 != 1.7"``), or None if they agree."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return None
        if a == b or abs(a - b) <= tolerance:
            return None
        return f"{path or 'value'}: {a!r} != {b!r} (|diff| {abs(a - b):.3g} > {tolerance:g})"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            return f"{path or 'keys'}: keys differ (only legacy: {only_a}, only lightning: {only_b})"
        for key in a:
            found = first_mismatch(a[key], b[key], tolerance, f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path or 'list'}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_mismatch(x, y, tolerance, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path or 'value'}: {a!r} != {b!r}"
