"""The report's comparison charts colour each group apart: with six colours cycled, the
seventh group was drawn in the first one's colour."""

from __future__ import annotations

import colorsys
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import featdisco.report

CHARTS = Path(featdisco.report.__file__).parent / "static" / "charts.js"
GROUPS = 24


def rgb(colour: str) -> tuple[float, float, float]:
    if colour.startswith("#"):
        return tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]
    h, s, lum = (float(x) for x in re.findall(r"[\d.]+", colour))
    return colorsys.hls_to_rgb(h / 360, lum / 100, s / 100)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the report's JavaScript")
def test_two_dozen_groups_get_distinct_colours() -> None:
    script = CHARTS.read_text() + f"\nconsole.log(JSON.stringify(Array.from({{length: {GROUPS}}}, (_, j) => groupColour(j))));"
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    colours = json.loads(out)
    assert len(colours) == GROUPS
    closest = min(sum((a - b) ** 2 for a, b in zip(rgb(x), rgb(y), strict=True)) ** 0.5
                  for x, y in itertools.combinations(colours, 2))
    assert closest > 0.12, colours  # no two groups of one chart look alike (RGB distance on [0, 1]^3)
