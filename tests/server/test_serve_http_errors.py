"""End to end: error statuses and bodies that the openai client cannot provoke itself."""

from __future__ import annotations

import json

import openai
import pytest

from tests.server.conftest import API_KEY, MAX_BODY_MB
from tests.server.harness import request

pytestmark = pytest.mark.timeout(120)


def error_of(body: bytes) -> dict:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_invalid_json_is_400(served, auth):
    status, _, body = request(served.url, "POST", "/v1/completions", b'{"prompt": ', auth)
    assert status == 400 and error_of(body)["code"] == "invalid_json"
    status, _, body = request(served.url, "POST", "/v1/completions", b"[1, 2]", auth)
    assert status == 400


def test_missing_or_wrong_key_is_401(served):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        status, _, body = request(
            served.url, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1}, headers
        )
        assert status == 401 and error_of(body)["type"] == "authentication_error"
    bad = openai.OpenAI(base_url=served.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_health_and_metrics_need_no_key(served):
    assert request(served.url, "GET", "/health")[0] == 200
    assert request(served.url, "GET", "/metrics")[0] == 200


def test_oversized_body_is_413(served, auth):
    big = {"prompt": "x" * (MAX_BODY_MB * 2**20 + 10), "max_tokens": 1}
    status, _, body = request(served.url, "POST", "/v1/completions", big, auth)
    assert status == 413 and error_of(body)["code"] == "request_too_large"


def test_unknown_route_is_404_and_wrong_method_405(served, auth):
    status, _, body = request(served.url, "GET", "/v1/nothing-here", None, auth)
    assert status == 404 and error_of(body)["type"] == "not_found_error"
    status, headers, body = request(served.url, "GET", "/v1/completions", None, auth)
    assert status == 405 and "POST" in headers["allow"]
    error_of(body)


def test_dashboard_serves_html(served):
    status, headers, body = request(served.url, "GET", "/dashboard")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<html" in body.lower()
