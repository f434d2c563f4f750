"""The docs agree with the code: README's event table is checked against EVENT_MAP."""

from __future__ import annotations

import re
from pathlib import Path

from fxai_compat.events import EVENT_MAP, LIGHTNING_SOURCE, RL_SOURCE
from legacy_callbacks.base import EVENTS

ROOT = Path(__file__).resolve().parent.parent


def readme_event_rows():
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`on_"):
            for name in re.findall(r"`(on_\w+)`", cells[0]):
                rows[name] = cells[1]
            if "/ `_end`" in cells[0]:
                rows["on_evaluation_end"] = cells[1]
    return rows


def test_event_map_has_one_row_per_legacy_event_in_contract_order():
    assert [route.event for route in EVENT_MAP] == list(EVENTS)
    for route in EVENT_MAP:
        if route.source != route.seed_hook:  # every departure from the guide says why
            assert route.departure, route


def test_readme_table_matches_event_map():
    rows = readme_event_rows()
    assert set(rows) == set(EVENTS)
    for route in EVENT_MAP:
        cell = rows[route.event]
        if route.kind == RL_SOURCE:
            assert f"RL `{route.source}`" in cell or f"`{route.source}`" in cell, (route.event, cell)
        elif route.kind == LIGHTNING_SOURCE:
            assert route.source.replace("on_validation_end", "_end") in cell or route.source in cell, (route.event, cell)
        else:
            assert "NotifyingCheckpointIO" in cell
