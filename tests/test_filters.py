import pytest

from multistore.errors import FilterError
from multistore.filters import Comparison, matches, parse_comparison, parse_filter


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


# -- CQL2 text and JSON (issue 10.8) -------------------------------------------------------

ITEMS = [
    {
        "id": f"i{n}",
        "collection": "c",
        "properties": {
            "eo:cloud_cover": cc,
            "platform": platform,
            **({"gsd": gsd} if gsd is not None else {}),
        },
    }
    for n, (cc, platform, gsd) in enumerate(
        [
            (5.0, "sentinel-2a", 10),
            (15, "sentinel-2b", 20),
            (35.5, "sentinel-2a", None),
            (80, "landsat-9", 30),
            (19.99, "sentinel-2a", 60),
            (20, "sentinel-2a", 10),
        ]
    )
]

# each CQL2 text filter with the plain Python predicate it must equal
PREDICATES = {
    "eo:cloud_cover < 20 AND platform = 'sentinel-2a'": lambda p: (
        p["eo:cloud_cover"] < 20 and p["platform"] == "sentinel-2a"
    ),
    "eo:cloud_cover >= 20 OR platform <> 'sentinel-2a'": lambda p: (
        p["eo:cloud_cover"] >= 20 or p["platform"] != "sentinel-2a"
    ),
    "NOT (eo:cloud_cover < 20)": lambda p: not p["eo:cloud_cover"] < 20,
    "platform IN ('sentinel-2b', 'landsat-9')": lambda p: (
        p["platform"] in ("sentinel-2b", "landsat-9")
    ),
    "platform NOT IN ('sentinel-2b')": lambda p: p["platform"] != "sentinel-2b",
    "eo:cloud_cover BETWEEN 15 AND 35.5": lambda p: 15 <= p["eo:cloud_cover"] <= 35.5,
    "platform LIKE 'sentinel-2_'": lambda p: (
        p["platform"].startswith("sentinel-2") and len(p["platform"]) == len("sentinel-2a")
    ),
    "platform LIKE '%9'": lambda p: p["platform"].endswith("9"),
    "gsd IS NULL": lambda p: "gsd" not in p,
    "gsd IS NOT NULL AND gsd <= 20": lambda p: "gsd" in p and p["gsd"] <= 20,
    # a missing property is unknown: neither the comparison nor its negation matches
    "NOT (gsd > 15)": lambda p: "gsd" in p and not p["gsd"] > 15,
    "(eo:cloud_cover < 10 OR eo:cloud_cover > 50) AND platform <> 'x'": lambda p: (
        p["eo:cloud_cover"] < 10 or p["eo:cloud_cover"] > 50
    ),
    "20 > eo:cloud_cover": lambda p: p["eo:cloud_cover"] < 20,
    "id = 'i3' OR collection = 'other'": lambda p: p["eo:cloud_cover"] == 80,
}


def test_and_is_two_comparisons():
    expr = parse_filter("eo:cloud_cover < 20 AND platform = 'sentinel-2a'")
    assert expr == {
        "op": "and",
        "args": [
            {"op": "<", "args": [{"property": "eo:cloud_cover"}, 20]},
            {"op": "=", "args": [{"property": "platform"}, "sentinel-2a"]},
        ],
    }


@pytest.mark.parametrize("text", sorted(PREDICATES))
def test_cql2_text_matches_python_predicate(text):
    expr = parse_filter(text)
    got = [i["id"] for i in ITEMS if matches(expr, i)]
    expected = [i["id"] for i in ITEMS if PREDICATES[text](i["properties"])]
    assert got == expected
    assert 0 < len(expected) < len(ITEMS), "the case must select some items, not all"


def test_simple_forms_keep_their_meaning():
    # one comparison: unquoted and double-quoted values are strings, == is =
    assert parse_filter("sar:frequency_band = C") == {
        "op": "=",
        "args": [{"property": "sar:frequency_band"}, "C"],
    }
    assert parse_filter('platform != "sentinel-2b"')["args"][1] == "sentinel-2b"
    assert parse_filter("MGRS_TILE == '32TNR'")["op"] == "="
    json_form = {"op": ">", "args": [{"property": "eo:cloud_cover"}, 50]}
    assert parse_filter(json_form) == json_form


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eo:cloud_cover < 20 AND", "cannot parse filter 'eo:cloud_cover < 20 AND': syntax error: it ends too early"),
        ("cloud ~ 3", "cannot parse filter 'cloud ~ 3': syntax error at column 7"),
        ("eo:cloud_cover < 20 AND platform = \"sentinel-2a\"", "compares property 'platform' with property 'sentinel-2a'"),
        ("S_INTERSECTS(geometry, POINT(1 2))", "operator 's_intersects' is not supported (use bbox / time_range"),
        ("eo:cloud_cover + 1 < 20", "'<' compares a property with a number"),
        ("datetime > TIMESTAMP('2020-01-01T00:00:00Z')", "'>' compares a property with a number"),
    ],
)  # fmt: skip
def test_errors_are_located_and_say_why(text, message):
    with pytest.raises(FilterError) as info:
        parse_filter(text, "open_params.filter")
    assert str(info.value).startswith("open_params.filter: ")
    assert message in str(info.value)


def test_invalid_cql2_json():
    for bad in ({"op": "<"}, {"op": "foo", "args": []}, {"op": "and", "args": [1]}):
        with pytest.raises(FilterError, match="open_params.filter: "):
            parse_filter(bad, "open_params.filter")


def test_simple_comparison_no_longer_swallows_the_rest():
    # issue 10.8: the value used to be "20 AND platform = 'sentinel-2a'"
    with pytest.raises(FilterError, match="cannot parse filter"):
        parse_comparison("eo:cloud_cover < 20 AND platform = 'sentinel-2a'")
