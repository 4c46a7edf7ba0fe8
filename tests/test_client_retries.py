"""Retries through a real loopback proxy that injects faults in front of the real Midnight
server: 503s and dropped connections are retried until the job completes; `Retry-After` is
honoured; a 400 is never retried and fails only its own item; exhausted retries fail only the
items of that request; a rejected API key stops the run."""

import time

import numpy as np
import pytest

from client_helpers import b64, embed_direct, images_sent, random_pngs
from vfm_client import MidnightClient, RetryPolicy, RunError
from vfm_client.transport import parse_retry_after

FAST = RetryPolicy(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05)


def test_503s_and_dropped_connections_are_retried_until_the_job_completes(midnight, proxy):
    images = random_pngs(24, seed=11)
    proxy.script = [(503, {}), "drop", (502, {}), "pass", "drop", "drop", "pass", (500, {})]
    client = MidnightClient(proxy.url, max_items=8, concurrency=1, retry=FAST)
    embeddings = client.embed(images)

    # 3 requests of 8 images; 6 of the 8 scripted faults hit before a pass.
    assert len(proxy.records) == 3 + 6
    np.testing.assert_allclose(embeddings, embed_direct(midnight.predict_url, images),
                               rtol=0, atol=1e-5)


def test_retry_after_is_honoured(midnight, proxy):
    images = random_pngs(2, seed=12)
    proxy.script = [(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"})]
    started = time.monotonic()
    embeddings = MidnightClient(proxy.url, retry=FAST).embed(images)
    arrivals = [r["time"] for r in proxy.records]
    assert len(arrivals) == 3
    # The backoff alone would wait <= 0.05 s: each retry came only after the 1 s asked for.
    assert arrivals[1] - arrivals[0] >= 1.0 and arrivals[2] - arrivals[1] >= 1.0
    assert time.monotonic() - started < 10
    assert embeddings.shape[0] == 2


def test_a_400_is_not_retried_and_fails_only_its_item(midnight, proxy):
    images = random_pngs(23, seed=13)
    bad = b"\x89PNG\r\n\x1a\n" + b"not really a png"
    inputs = images[:13] + [bad] + images[13:]
    results = MidnightClient(proxy.url, max_items=8, concurrency=2, retry=FAST).embed_results(
        inputs)

    assert [i for i, e in enumerate(results.errors) if e is not None] == [13]
    assert results.errors[13].code == "image_decode_failed"
    assert results.errors[13].status == 400
    carrying = [b for b in proxy.bodies() if b64(bad) in images_sent(b)]
    assert len(carrying) == 1  # sent once, never retried
    # 3 chunks + one resend of the bad chunk's other 7 images.
    assert len(proxy.records) == 4
    good = results.array()[[i for i in range(24) if i != 13]]
    np.testing.assert_allclose(good, embed_direct(midnight.predict_url, images), rtol=0, atol=1e-5)


def test_exhausted_retries_fail_only_that_requests_items(midnight, proxy):
    images = random_pngs(12, seed=14)
    # Request 1 passes, request 2 gets 503 on all 3 attempts, request 3 passes.
    proxy.script = ["pass", (503, {}), (503, {}), (503, {})]
    client = MidnightClient(proxy.url, max_items=4, concurrency=1,
                            retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01))
    results = client.embed_results(images)
    codes = [e.code if e else None for e in results.errors]
    assert codes == [None] * 4 + ["injected_503"] * 4 + [None] * 4
    assert all(e.status == 503 for e in results.errors[4:8])
    assert len(proxy.records) == 1 + 3 + 1


def test_connection_errors_exhausted_on_the_first_request_stop_the_run(midnight):
    from tools.local_server import free_port
    client = MidnightClient(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(
        max_attempts=2, backoff_base_s=0.01))
    with pytest.raises(RunError, match="cannot reach"):
        client.embed(random_pngs(2))


def test_api_key_is_sent_and_a_rejected_key_stops_the_run(midnight, proxy, monkeypatch):
    def auth(body):
        headers = proxy.records[-1]["headers"]
        return None if headers.get("Authorization") == "Api-Key good-key" else (401, {})

    proxy.rule = auth
    monkeypatch.setenv("BASETEN_API_KEY", "good-key")
    assert MidnightClient(proxy.url).embed(random_pngs(1)).shape[0] == 1
    with pytest.raises(RunError, match="HTTP 401"):
        MidnightClient(proxy.url, api_key="wrong", retry=FAST).embed(random_pngs(3))
    assert len(proxy.records) == 2  # the 401 was not retried


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
