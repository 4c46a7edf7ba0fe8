"""The dynamic batcher on its own: caps, order, grouping, fallback, and the health check of a
real (tiny) model whose weights change after load."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vfm_serving.batching import DynamicBatcher
from vfm_serving.errors import ModelError


class Recorder:
    """A forward function that records every pass it is given and doubles the items."""

    def __init__(self, fail_on: object = None, delay_s: float = 0.0) -> None:
        self.passes: list = []
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.passes.append(list(items))
        time.sleep(self.delay_s)
        if self.fail_on in items:
            raise ValueError("poison")
        return [2 * x for x in items]


def run_all(batcher, items, caps=None, groups=None):
    futures = [batcher.submit(x, None if caps is None else caps[i],
                              None if groups is None else groups[i])
               for i, x in enumerate(items)]
    return [f.result(timeout=10) for f in futures]


def test_items_merge_up_to_the_max_and_keep_their_own_results():
    forward = Recorder()
    batcher = DynamicBatcher(forward, max_batch_size=4, max_wait_s=0.2, name="t")
    results = run_all(batcher, list(range(10)))
    batcher.close()
    assert [value for value, _ in results] == [2 * x for x in range(10)]
    assert [len(p) for p in forward.passes] == [4, 4, 2]
    assert sorted(x for p in forward.passes for x in p) == list(range(10))
    assert {info.size for _, info in results} == {4, 2}


def test_a_request_cap_bounds_every_pass_it_joins():
    forward = Recorder()
    batcher = DynamicBatcher(forward, max_batch_size=8, max_wait_s=0.2, name="t")
    caps = [8, 8, 2, 8, 8, 8, 8, 8]
    run_all(batcher, list(range(8)), caps=caps)
    batcher.close()
    for batch in forward.passes:
        assert len(batch) <= min(caps[x] for x in batch)
    assert sorted(x for p in forward.passes for x in p) == list(range(8))


def test_without_merging_a_pass_holds_one_group_only():
    forward = Recorder()
    batcher = DynamicBatcher(forward, max_batch_size=8, max_wait_s=0.2, name="t",
                             merge_groups=False)
    groups = ["a", "b", "a", "b", "a", "b"]
    run_all(batcher, list(range(6)), groups=groups)
    batcher.close()
    assert all(len({groups[x] for x in p}) == 1 for p in forward.passes)
    assert sorted(x for p in forward.passes for x in p) == list(range(6))


def test_a_failing_pass_is_retried_one_item_at_a_time():
    forward = Recorder(fail_on=3)
    batcher = DynamicBatcher(forward, max_batch_size=4, max_wait_s=0.2, name="t")
    results = run_all(batcher, [1, 2, 3, 4])
    batcher.close()
    values = [value for value, _ in results]
    assert values[:2] == [2, 4] and values[3] == 8
    assert isinstance(values[2], ModelError) and values[2].code == "model_error"
    assert forward.passes == [[1, 2, 3, 4], [1], [2], [3], [4]]


def test_max_wait_bounds_the_delay_of_a_lone_item():
    batcher = DynamicBatcher(Recorder(), max_batch_size=64, max_wait_s=0.05, name="t")
    started = time.monotonic()
    value, info = batcher.submit(21).result(timeout=5)
    elapsed = time.monotonic() - started
    batcher.close()
    assert (value, info.size) == (42, 1)
    assert 0.04 <= elapsed < 2.0


def test_announced_items_fill_the_pass_instead_of_running_what_arrived_first():
    """Items still decoding (announced with expect) keep the pass open past max_wait: the
    late ones join the first pass; without the announcement they would run in a second."""
    forward = Recorder()
    batcher = DynamicBatcher(forward, max_batch_size=8, max_wait_s=0.01, name="t",
                             fill_wait_s=5.0)
    request = object()
    for _ in range(4):
        batcher.expect(request)
    early = [batcher.submit(x, group=request, expected=True) for x in (1, 2)]
    time.sleep(0.2)  # far beyond max_wait: only the announcement holds the pass
    late = [batcher.submit(x, group=request, expected=True) for x in (3, 4)]
    results = [f.result(timeout=10) for f in early + late]
    batcher.close()
    assert forward.passes == [[1, 2, 3, 4]]
    assert [value for value, _ in results] == [2, 4, 6, 8]


def test_a_withdrawn_item_releases_the_pass_and_fill_wait_bounds_the_delay():
    forward = Recorder()
    batcher = DynamicBatcher(forward, max_batch_size=8, max_wait_s=0.01, name="t",
                             fill_wait_s=5.0)
    request, slow = object(), object()
    batcher.expect(request)
    batcher.expect(request)
    started = time.monotonic()
    first = batcher.submit(1, group=request, expected=True)
    time.sleep(0.1)
    batcher.withdraw(request)  # its decode failed: nothing more is coming
    assert first.result(timeout=10)[0] == 2
    assert time.monotonic() - started < 2.0
    # An announced item that never arrives delays a pass by fill_wait_s at most.
    bounded = DynamicBatcher(forward, max_batch_size=8, max_wait_s=0.01, name="t2",
                             fill_wait_s=0.3)
    bounded.expect(slow)
    started = time.monotonic()
    assert bounded.submit(5).result(timeout=10)[0] == 10
    elapsed = time.monotonic() - started
    bounded.withdraw(slow)
    bounded.close()
    batcher.close()
    assert 0.25 <= elapsed < 2.5


def test_health_check_notices_a_model_that_changed(tmp_path: Path):
    """A real tiny DINOv2: healthy after load, unhealthy once its weights are corrupted."""
    import torch

    from tools.standins.midnight import make
    from vfm_serving.apis.midnight import MidnightApi, ServedModel
    from vfm_serving.embeddings.dinov2 import load_backbone
    from vfm_serving.embeddings.embedder import DinoV2Embedder
    from vfm_serving.serving import ServingPipeline
    from vfm_serving.settings import ServingSettings

    settings = ServingSettings(health_recheck_s=0.0)
    backbone = load_backbone(str(make(tmp_path / "m")), input_size=224, mean=(0.5,) * 3,
                             std=(0.5,) * 3, model_id="test")
    runner = DinoV2Embedder(backbone, settings)
    api = MidnightApi(settings, ServedModel("test", 224, runner.optimal_batch_size, None))
    pipeline = ServingPipeline("health-test", api, runner, settings)
    assert not pipeline.healthy()  # nothing recorded yet
    pipeline.record_golden()
    assert pipeline.healthy()
    with torch.no_grad():
        for param in backbone.model.parameters():
            param.copy_(torch.randn_like(param))
    assert not pipeline.healthy()
    with torch.no_grad():
        next(backbone.model.parameters()).fill_(float("nan"))
    assert not pipeline.healthy()
    pipeline.batcher.close()


@pytest.mark.parametrize("fmt,dtype,code", [("float", "float32", "<f4"),
                                            ("base64", "float16", "<f2")])
def test_encode_items_round_trips(fmt, dtype, code):
    import base64

    from vfm_serving.outputs.arrays import encode_items

    values = np.random.RandomState(0).randn(3, 5, 2, 2).astype(np.float32)
    encoded = encode_items(values, fmt, dtype)
    if fmt == "float":
        np.testing.assert_array_equal(encoded, values.astype(dtype))
    else:
        decoded = np.stack([np.frombuffer(base64.b64decode(s), code).reshape(5, 2, 2)
                            for s in encoded])
        np.testing.assert_array_equal(decoded, values.astype(dtype))


def test_skipped_array_items_stay_queued_and_the_worker_survives():
    """Regression: queue entries holding numpy arrays were removed by value (ambiguous truth
    value), which killed the worker when a cap made a pass skip an item."""
    batcher = DynamicBatcher(lambda items: [a.sum() for a in items], max_batch_size=8,
                             max_wait_s=0.1, name="t")
    arrays = [np.full(3, i) for i in range(3)]
    futures = [batcher.submit(a, cap) for a, cap in zip(arrays, [8, 1, 8], strict=True)]
    assert [f.result(timeout=5)[0] for f in futures] == [0, 3, 6]
    assert batcher.submit(np.ones(2)).result(timeout=5)[0] == 2
    batcher.close()
