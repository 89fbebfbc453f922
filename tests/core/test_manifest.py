"""Manifest text formats round-trip."""

import math

from synthmed.core.manifest import format_shape, format_spacing, parse_shape, parse_spacing, spatial_shape


def test_shape_round_trip_and_spatial_part():
    assert format_shape((1, 197, 233, 189)) == "1x197x233x189"
    assert parse_shape("1x197x233x189") == (1, 197, 233, 189)
    assert spatial_shape("3x48x40") == (48, 40)


def test_spacing_round_trip_keeps_unknown_as_nan():
    text = format_spacing((0.661468, float("nan")))
    assert text == "0.661468xnan"
    parsed = parse_spacing(text)
    assert parsed[0] == 0.661468 and math.isnan(parsed[1])
