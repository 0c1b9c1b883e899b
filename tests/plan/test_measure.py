"""The tensor tracker counts storage bytes exactly: allocations, frees, views, weights, the peak."""

from __future__ import annotations

import torch

from simplesafe.plan.measure import TensorMemoryTracker


def test_peak_counts_live_storages_once_and_forgets_freed_ones():
    tracker = TensorMemoryTracker()
    with tracker:
        a = torch.zeros(1000, dtype=torch.float32)  # 4,000 bytes
        view = a[10:20]  # same storage: not counted again
        b = torch.ones(500, dtype=torch.bfloat16)  # 1,000 bytes
        assert tracker.current_bytes == 5000
        del b
        c = torch.empty(250, dtype=torch.float64)  # 2,000 bytes, after b was freed
    assert tracker.peak_bytes == 6000  # a + c (b had gone); peak reached when c appeared
    assert tracker.current_bytes == 6000 and view.numel() == 10
    del a, view, c
    assert tracker.current_bytes == 0


def test_module_weights_are_counted_when_the_module_runs():
    layer = torch.nn.Linear(100, 50)  # created before the tracker: 5,050 fp32 numbers
    tracker = TensorMemoryTracker()
    with tracker:
        with torch.no_grad():
            y = layer(torch.zeros(8, 100))
    assert tracker.peak_breakdown["weights"] == 5050 * 4
    assert tracker.peak_bytes == 5050 * 4 + 8 * 100 * 4 + 8 * 50 * 4
    del y


def test_backward_and_optimizer_tensors_are_tracked():
    layer = torch.nn.Linear(256, 256, bias=False)
    opt = torch.optim.AdamW(layer.parameters())
    tracker = TensorMemoryTracker()
    with tracker:
        layer(torch.randn(4, 256)).sum().backward()
        opt.step()
    w = 256 * 256 * 4
    # weights, their gradient and AdamW's two moments are all held after the step
    assert tracker.current_bytes >= 4 * w
    assert tracker.peak_bytes >= 4 * w
