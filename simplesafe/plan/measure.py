"""Measure the bytes held by tensors: the peak a memory plan is checked against.

    from simplesafe.plan.measure import TensorMemoryTracker
    with TensorMemoryTracker() as tracker:
        train_sft(...)
    tracker.peak_bytes, tracker.peak_breakdown

On a GPU, ``torch.cuda.max_memory_allocated`` answers this directly. On a CPU nothing in
torch does (the allocator keeps no statistics, and the process's RSS mixes tensors with
the interpreter, libraries, tokenizers and the allocator's free lists), so this tracker
counts tensor storage itself:

- every storage an aten op creates while the tracker is on is added when it first appears
  as an op's output (a ``TorchDispatchMode``: forward, backward, optimizer and sampling
  ops alike) and subtracted when it is freed (a weak reference to the storage with a
  callback);
- parameters and buffers of every module that runs a forward pass are added the same way
  the first time they are seen (weights memory-mapped from safetensors never pass through
  an op, so the op hook alone would miss them);
- the peak is the largest running total, taken after every op; ``peak_breakdown`` is the
  total at that moment split into module weights and everything else (activations,
  gradients, optimizer states, logits, KV cache).

``torch.distributed._tools.mem_tracker.MemTracker`` does the same with a finer split, but
in torch 2.13 it registers a gradient hook on every parameter and fails on frozen ones
(every LoRA base), so this is the small part of it that these stages need. Views share
their base's storage and are counted once; tensors created before the tracker starts and
never touched by a module are not counted. Ops are slower under the mode (about 2x on a
CPU), so measure a few steps, not a run.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """Running total and peak of the bytes held by tensor storages on ``device_type``."""

    def __init__(self, device_type: str = "cpu", record_where: bool = False):
        super().__init__()
        self.device_type = device_type
        self.record_where = record_where  # keep the Python stack of the op that set the peak (slow; for debugging)
        self.peak_where: list[str] = []
        self.peak_largest: list[tuple[int, str]] = []
        self._desc: dict[int, str] = {}
        self._live: dict[int, tuple[int, str, weakref.ref]] = {}
        self.current = {"weights": 0, "other": 0}
        self.peak_bytes = 0
        self.peak_breakdown: dict[str, int] = {"weights": 0, "other": 0}
        self._hook = None

    # ------------------------------------------------------------------ bookkeeping
    def _freed(self, key: int, _ref) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current[entry[1]] -= entry[0]

    def _add(self, t: torch.Tensor, kind: str) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type != self.device_type or t.is_meta:
            return
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse or opaque tensors
            return
        key, nbytes = st._cdata, st.nbytes()
        entry = self._live.get(key)
        if entry is not None:
            size, old_kind, ref = entry
            if size != nbytes or (kind == "weights" and old_kind != "weights"):  # resized, or now known as weights
                self.current[old_kind] -= size
                new_kind = "weights" if kind == "weights" else old_kind
                self.current[new_kind] += nbytes
                self._live[key] = (nbytes, new_kind, ref)
            return
        ref = weakref.ref(st, lambda r, k=key: self._freed(k, r))
        self._live[key] = (nbytes, kind, ref)
        self.current[kind] += nbytes
        if self.record_where:
            self._desc[key] = f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} {kind}"

    def _update_peak(self) -> None:
        total = self.current["weights"] + self.current["other"]
        if total > self.peak_bytes:
            self.peak_bytes = total
            self.peak_breakdown = dict(self.current)
            if self.record_where:
                import traceback

                self.peak_where = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}"
                                   for f in traceback.extract_stack()[-14:-3]]
                self.peak_largest = sorted(((size, self._desc.get(k, "?")) for k, (size, _, _) in self._live.items()),
                                           reverse=True)[:40]

    def track_module(self, module: torch.nn.Module) -> None:
        """Count ``module``'s parameters and buffers (also done for every module that runs forward)."""
        for t in list(module.parameters()) + list(module.buffers()):
            self._add(t, "weights")
        self._update_peak()

    @property
    def current_bytes(self) -> int:
        return self.current["weights"] + self.current["other"]

    def reset_peak(self) -> None:
        self.peak_bytes = self.current_bytes
        self.peak_breakdown = dict(self.current)

    # ------------------------------------------------------------------ hooks
    def __enter__(self):
        seen: set[int] = set()

        def pre_forward(module, _args):
            if id(module) not in seen:
                seen.add(id(module))
                for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                    self._add(t, "weights")

        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(pre_forward)
        return super().__enter__()

    def __exit__(self, *exc):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t, "other")
        # in-place ops and resizes change their first argument's storage
        if args and isinstance(args[0], torch.Tensor) and args[0] is not out:
            self._add(args[0], "other")
        self._update_peak()
        return out
