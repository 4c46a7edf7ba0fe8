"""The SAFE dataset runner (tools/safe/dataset_runner.py), quick mode, against the real local
Truss server: every case gets its expected status and a valid contract response."""

import json

import pytest

from tools.safe.dataset_runner import check_contract, run


@pytest.fixture(scope="module")
def safe(truss_server_factory):
    return truss_server_factory("safe_detector")


def test_quick_run_is_100_percent(safe, tmp_path):
    out = tmp_path / "results.json"
    result = run(safe.predict_url, quick=True, concurrency=2, out=out)
    summary = result["summary"]
    assert summary["failures"] == []
    assert summary["success_rate"] == 1.0
    assert set(summary["categories"]) == {"standard", "edge_case", "performance"}
    assert summary["latency_p50_s"] > 0 and summary["latency_p95_s"] >= summary["latency_p50_s"]
    assert summary["sequential_requests_per_s"] > 0
    assert json.loads(out.read_text())["summary"]["cases"] == summary["cases"]
    statuses = {o["expected_status"] for o in result["outcomes"]}
    assert statuses == {200, 400}


def test_runner_catches_contract_violations():
    """The checker can fail: wrong sizes, unnormalized logprobs, Natural with a mask."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    def png(mask):
        buf = io.BytesIO()
        Image.fromarray(mask.astype(bool)).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    good_lp = list(np.log([0.1, 0.2, 0.3, 0.4]))
    ok = {"logprobs": good_lp,
          "localizationMask": {"mediaType": "image/png", "data": png(np.ones((5, 8)))}}
    assert check_contract(ok, (8, 5)) == ""
    assert "mask is" in check_contract(ok, (5, 8))
    assert "normalized" in check_contract({**ok, "logprobs": [0.0, 0.0, 0.0, 0.0]}, (8, 5))
    natural = {"logprobs": list(np.log([0.7, 0.1, 0.1, 0.1])),
               "localizationMask": ok["localizationMask"]}
    assert "Natural" in check_contract(natural, (8, 5))
