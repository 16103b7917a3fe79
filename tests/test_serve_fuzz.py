"""Fuzzing the API with Hypothesis: whatever comes in, the answer is 2xx or a JSON 4xx, never a 5xx.

Inputs are drawn from the app's own OpenAPI schema (its paths and query
parameters) plus mutated real files: JPEG, PNG and DICOM seeds with bytes
flipped, inserted or cut off, so decoders see almost-valid files (the hard
case) and not only noise. Derandomized, so CI runs the same examples each time.
"""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxrkit.inference.bundle import resolve_model
from cxrkit.serving import create_app
from serve_support import dicom_bytes, encode, film

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_small = film("PNEUMONIA")[::4, ::4].copy()
SEEDS = [encode(_small, "JPEG"), encode(_small, "PNG"), dicom_bytes(_small.astype(np.uint16) * 16),
         dicom_bytes(_small.astype(np.uint16), "MONOCHROME1", window=(128, 200)), b"", b"\x00" * 200]


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(resolve_model(None), max_upload_mb=1, max_files=3, workers=1))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "cut"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=64))
        else:
            del data[at:]
    return bytes(data)


def _query_values(client) -> st.SearchStrategy:
    """Query strings for /api/predict built from the parameters its OpenAPI schema declares."""
    params = client.app.openapi()["paths"]["/api/predict"]["post"]["parameters"]
    names = [p["name"] for p in params]
    value = st.one_of(st.sampled_from(["true", "false", "1", "0", "cxr_cnn", ""]), st.text(max_size=30))
    return st.dictionaries(st.sampled_from(names), value, max_size=len(names))


def _check(r) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code >= 400:  # one error shape for every refusal
        assert isinstance(body["detail"], str) and isinstance(body["errors"], list) and "Traceback" not in r.text


@FUZZ
@given(data=st.data())
def test_fuzz_uploads_never_5xx(client, data):
    files = data.draw(st.lists(st.tuples(st.text(max_size=40), mutated()), min_size=1, max_size=4))
    query = data.draw(_query_values(client))
    r = client.post("/api/predict", params=query,
                    files=[("files", (name or "x", blob, "application/octet-stream")) for name, blob in files])
    _check(r)
    if r.status_code == 200:
        assert len(r.json()["results"]) == len(files)


@FUZZ
@given(content_type=st.one_of(st.text(max_size=60), st.builds("multipart/form-data; boundary={}".format,
                                                               st.text(max_size=20))),
       body=st.one_of(st.binary(max_size=2000), st.sampled_from(SEEDS)))
def test_fuzz_raw_bodies_never_5xx(client, content_type, body):
    try:
        headers = {"content-type": content_type}
        r = client.post("/api/predict", content=body, headers=headers)
    except (UnicodeEncodeError, ValueError):  # not a header value an HTTP client can send at all
        return
    _check(r)


@FUZZ
@given(path=st.sampled_from(["/", "/healthz", "/api/models", "/api/predict", "/openapi.json", "/static/app.js",
                              "/static/../app.py", "/nope"]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       query=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
def test_fuzz_routes_and_methods_never_5xx(client, path, method, query):
    r = client.request(method, path, params=query)
    assert r.status_code < 500
    if r.status_code >= 400:
        assert isinstance(r.json()["detail"], str)
