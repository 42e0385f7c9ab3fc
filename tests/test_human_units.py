"""Sizes and ages as people read them (mlxk.output.units): the unit changes at each power of 1000,
the largest unit takes whatever is left, ages count whole units in the past."""

from __future__ import annotations

import pytest

from mlxk.output.units import human_age, human_size


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (1_234_567, "1.2 MB"),
        (5 * 10**9, "5.0 GB"),
        (999_949, "999.9 KB"),
        (10**15, "1.0 PB"),
        (2 * 10**18, "2000.0 PB"),  # past the largest unit: still that unit
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0 seconds ago"),  # a clock that went back: never "in the future"
        (1, "1 second ago"),
        (59.9, "59 seconds ago"),
        (60, "1 minute ago"),
        (7200, "2 hours ago"),
        (86400, "1 day ago"),
        (86400 * 45, "1 month ago"),
        (86400 * 365, "1 year ago"),
        (86400 * 365 * 3, "3 years ago"),
    ],
)
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text
