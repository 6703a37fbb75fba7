"""``PixelClient`` sends what ``ee.data.computePixels`` sends, and fails the way it fails."""

from __future__ import annotations

import json

import ee
import googleapiclient.errors
import numpy as np
import pytest
from google.oauth2.credentials import Credentials
from requests.structures import CaseInsensitiveDict

from multistore.stores.earthengine.fetch import ErrorKind, classify
from multistore.stores.earthengine.rest import PixelClient
from tests.servers.earthengine import PIXEL_GRID


@pytest.fixture
def spied(ee_emulator, monkeypatch):
    """The client initialised with OAuth credentials; every HTTP request it sends recorded."""
    from ee import _state

    ee.Initialize(credentials=Credentials(token="tok-123"), url=ee_emulator.url, project="proj-a")
    ee.data.setMaxRetries(0)
    ee.data.setDeadline(30_000)
    session = _state.get_state().requests_session
    sent: list[dict] = []
    real = session.request

    def recording(method, url, **kw):
        headers = CaseInsensitiveDict()
        for k, v in (kw.get("headers") or {}).items():  # later keys win, as in requests
            headers[k] = v
        sent.append({**kw, "method": method, "url": url, "headers": headers})
        return real(method, url, **kw)

    monkeypatch.setattr(session, "request", recording)
    yield sent


def _image():
    return (
        ee.ImageCollection("TEST/S2LIKE")
        .filterDate("2024-01-01", "2024-02-01")
        .mosaic()
        .select(["B4"])
        .unmask(65535, False)
    )


def test_same_request_and_pixels_as_ee_compute_pixels(spied):
    img = _image()
    expected = ee.data.computePixels(
        {"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": PIXEL_GRID, "bandIds": ["B4"]}
    )
    got = PixelClient().compute_pixels(ee.serializer.encode(img), PIXEL_GRID, ("B4",))
    assert got.dtype == expected.dtype and got.dtype["B4"] == np.uint16
    np.testing.assert_array_equal(got, expected)
    ref, ours = spied[-2], spied[-1]
    assert ours["method"] == ref["method"] == "POST"
    assert ours["url"] == ref["url"].rstrip("?")
    assert ours["url"].endswith("/v1/projects/proj-a/image:computePixels")
    assert json.loads(ours["data"]) == json.loads(ref["data"])
    assert ours["timeout"] == ref["timeout"] == 30.0
    for name in ("authorization", "x-goog-api-client", "x-goog-user-project", "content-type"):
        assert ours["headers"][name] == ref["headers"][name], name
    assert ours["headers"]["authorization"] == "Bearer tok-123"
    assert ours["headers"]["x-goog-user-project"] == "proj-a"


@pytest.mark.parametrize("status", [404, 429, 503])
def test_errors_are_raised_and_classified_as_ee_raises_them(spied, ee_emulator, status):
    img = _image()
    ee_emulator.inject(status, status)
    with pytest.raises(ee.EEException) as ref:
        ee.data.computePixels(
            {"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": PIXEL_GRID}
        )
    with pytest.raises(ee.EEException) as ours:
        PixelClient().compute_pixels(ee.serializer.encode(img), PIXEL_GRID, ("B4",))
    assert str(ours.value) == str(ref.value)
    cause = ours.value.__cause__
    assert isinstance(cause, googleapiclient.errors.HttpError) and cause.resp.status == status
    kind = ErrorKind.PERMANENT if status == 404 else ErrorKind.TRANSIENT
    assert classify(ours.value) == classify(ref.value)
    assert classify(ours.value).kind is kind


def test_size_error_is_recognised(spied):
    too_big = dict(PIXEL_GRID, dimensions={"width": 40000, "height": 4})
    with pytest.raises(ee.EEException) as ours:
        PixelClient().compute_pixels(ee.serializer.encode(_image()), too_big, ("B4",))
    assert classify(ours.value).kind is ErrorKind.TOO_LARGE
