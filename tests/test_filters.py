import pytest

from multistore.errors import FilterError
from multistore.filters import Comparison, parse_comparison


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eo:cloud_cover < 20", Comparison("eo:cloud_cover", "<", 20)),
        ("CLOUDY_PIXEL_PERCENTAGE<=12.5", Comparison("CLOUDY_PIXEL_PERCENTAGE", "<=", 12.5)),
        ("MGRS_TILE == '32TNR'", Comparison("MGRS_TILE", "=", "32TNR")),
        ('platform != "sentinel-2b"', Comparison("platform", "!=", "sentinel-2b")),
        ("sar:frequency_band = C", Comparison("sar:frequency_band", "=", "C")),
        ("flag = true", Comparison("flag", "=", True)),
        ("clc_412 > 8e-1", Comparison("clc_412", ">", 0.8)),
    ],
)
def test_parse(text, expected):
    assert parse_comparison(text) == expected


def test_matches_and_errors():
    c = parse_comparison("eo:cloud_cover < 20")
    assert c.matches({"eo:cloud_cover": 5}) and not c.matches({"eo:cloud_cover": 30})
    assert not c.matches({}) and not c.matches({"eo:cloud_cover": "low"})
    for bad in ("cloud ~ 3", "clc_412 >> 1", "< 3", 42):
        with pytest.raises(FilterError, match="cannot parse filter"):
            parse_comparison(bad, "open_params.filters[0]")
