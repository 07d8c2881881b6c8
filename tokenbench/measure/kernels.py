"""Count the kernels a run launches and the host synchronisations it forces: what predicts latency at batch 1 on an
accelerator, where launching a kernel (several microseconds in eager PyTorch) and waiting for the device at a sync
cost as much as the arithmetic of a small one. The counts depend on the code path only, never on the machine, so CI
holds them exactly (``tokenbench leaderboard --check``).

:class:`KernelCounter` is a ``TorchDispatchMode``: every aten op that reaches the dispatcher is one kernel, except one
whose output is its input's memory (a view: ``view``, ``expand``, ``t``, ``select``; or an op that may alias and did:
``reshape``, ``contiguous``, ``to`` when nothing had to be copied) or an allocation alone (``empty``: the caching
allocator hands out memory, nothing is launched). An in-place op always counts. A host sync is
an op whose result the host must wait for:

* ``aten.is_nonzero`` (a tensor used as a Python bool), ``aten.item`` / ``aten._local_scalar_dense`` (``int(t)``,
  ``float(t)``, ``t.item()``), ``aten.equal``;
* ops whose output shape depends on the data: ``aten.nonzero``, ``aten.masked_select``, ``aten.unique*``, indexing
  with a boolean mask (``aten.index.Tensor`` / ``aten.index_put_`` given a bool index);
* a copy from an accelerator to the host (``aten._to_copy`` / ``aten.copy_`` onto a CPU tensor; on a CPU run every
  tensor is on the host, so ``.tolist()`` and ``.cpu()`` are invisible there).

Regions: the decoder layers are marked by forward hooks (:meth:`KernelCounter.watch`), so a count splits into the
LLM layer loop (everything inside a layer's call: the layer, and a router's signals and ``select`` there) and the rest
(vision tower, projector, embedding, lm_head, a pre-LLM selection, the generation loop). :meth:`KernelCounter.mark`
has :class:`tokenbench.measure.timing.Clock`'s interface, so a generation run with the counter as its clock brackets
the prefill exactly as the timed rounds do (start to first token).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

#: ops that make the host wait for the device, by name (``aten.<name>``, any overload)
SYNC_OPS = frozenset({"is_nonzero", "item", "_local_scalar_dense", "equal", "nonzero", "nonzero_static_cpu_fallback",
                      "masked_select", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim"})
#: ops that only allocate memory: no kernel runs (the caching allocator hands out a block)
ALLOCATION_OPS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})
_BOOL_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})
_COPY_OPS = frozenset({"_to_copy", "copy_", "to"})


@dataclass
class Counts:
    """Kernels and host syncs, split into the decoder layers (``per_layer``: layer index -> [kernels, syncs], over
    every call of that layer in the span) and the rest (``outside``)."""

    outside: list[int] = field(default_factory=lambda: [0, 0])
    per_layer: dict[int, list[int]] = field(default_factory=dict)

    @property
    def kernels(self) -> int:
        return self.outside[0] + sum(k for k, _ in self.per_layer.values())

    @property
    def syncs(self) -> int:
        return self.outside[1] + sum(s for _, s in self.per_layer.values())

    @property
    def layer_kernels(self) -> int:
        return sum(k for k, _ in self.per_layer.values())

    @property
    def layer_syncs(self) -> int:
        return sum(s for _, s in self.per_layer.values())

    def copy(self) -> "Counts":
        return Counts(list(self.outside), {k: list(v) for k, v in self.per_layer.items()})

    def minus(self, earlier: "Counts") -> "Counts":
        """What was counted after ``earlier`` (a snapshot of the same counter)."""
        layers = {i: [k - earlier.per_layer.get(i, [0, 0])[0], s - earlier.per_layer.get(i, [0, 0])[1]]
                  for i, (k, s) in self.per_layer.items()}
        return Counts([self.outside[0] - earlier.outside[0], self.outside[1] - earlier.outside[1]],
                      {i: v for i, v in layers.items() if v != [0, 0]})

def _mode_base():
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


def _is_sync(func, args, kwargs, out) -> bool:
    import torch

    name = func._schema.name.split("::")[-1]
    if name in SYNC_OPS:
        return True
    if name in _BOOL_INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())
    if name in _COPY_OPS:  # a copy onto the host from an accelerator
        src = args[1] if name == "copy_" else args[0]
        dst = args[0] if name == "copy_" else out
        return (isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.device.type != "cpu"
                and dst.device.type == "cpu")
    return False


def _aliases(args, out) -> bool:
    """Whether an op's output is (a view of) its first input's memory: no kernel ran. Views, and ops that may alias
    (``reshape``, ``contiguous``, ``to``, ``_unsafe_view``) when they did."""
    import torch

    src = args[0] if args else None
    if not isinstance(out, torch.Tensor) or not isinstance(src, torch.Tensor):
        return False
    return out.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()


class KernelCounter:
    """Counts kernels and host syncs while active (``with counter:``); see the module docstring. ``watch(layers)``
    attributes what runs inside each decoder layer's call to that layer."""

    def __init__(self) -> None:
        self.counts = Counts()
        self._layer: list[int] = []  # the stack of decoder layers being called (nested calls: the innermost)
        self._handles: list = []
        self._mode = None

    # -- counting ----------------------------------------------------------------------------------------------------------
    def _bucket(self) -> list[int]:
        if not self._layer:
            return self.counts.outside
        return self.counts.per_layer.setdefault(self._layer[-1], [0, 0])

    def _seen(self, func, args, kwargs, out) -> None:
        if not func._schema.is_mutable and _aliases(args, out):  # a view, or an op that returned its input's memory
            return
        if func._schema.name.split("::")[-1] in ALLOCATION_OPS:
            return
        bucket = self._bucket()
        bucket[0] += 1
        if _is_sync(func, args, kwargs, out):
            bucket[1] += 1

    def __enter__(self) -> "KernelCounter":
        if self._mode is not None:
            raise RuntimeError("this KernelCounter is already counting")
        counter = self

        class _Mode(_mode_base()):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                counter._seen(func, args, kwargs, out)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self._mode = None
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- regions -----------------------------------------------------------------------------------------------------------
    def watch(self, layers) -> "KernelCounter":
        """Attribute what runs inside each module of ``layers`` (the decoder layers, in order) to its index; returns
        the counter, to enter (``with counter.watch(layers):``); the hooks go when it exits."""
        for idx, layer in enumerate(layers):
            self._handles.append(layer.register_forward_pre_hook(functools.partial(self._enter_layer, idx)))
            self._handles.append(layer.register_forward_hook(self._leave_layer, always_call=True))
        return self

    def _enter_layer(self, idx, *_):
        self._layer.append(idx)

    def _leave_layer(self, *_):
        if self._layer:
            self._layer.pop()

    # -- the Clock interface (so a generation's marks bracket what they bracket for timing) ------------------------------
    def mark(self) -> Counts:
        return self.counts.copy()

    @staticmethod
    def seconds(start, end) -> float:  # a generation's stages ask for it; counts have no seconds
        return 0.0


@contextlib.contextmanager
def host_only():
    """Run code that works on host tensors alone, whatever the run's device (e.g. an index computed from the image
    grid the processor gave), uncounted: on an accelerator it launches nothing there and waits for nothing, so it is
    neither a kernel nor a sync; only on a CPU run could the counter not tell it from device work."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        yield


def count_prefill(adapter, batch, reduction):
    """One batch's prefill under ``reduction`` (a :class:`tokenbench.api.Reduction`), counted: from the start of
    generation to the first token, as the timed rounds' ``prefill`` stage brackets it. Returns (its
    :class:`Counts`, the one-token :class:`~tokenbench.contract.model.Generation`, the router's record or None), so the
    same untimed pass serves the FLOPs accounting."""
    counter = KernelCounter()
    with adapter.reduction(reduction) as router, counter.watch(adapter.decoder_layers()):
        gen = adapter.generate(batch, 1, router=router, ignore_eos=True, clock=counter)
    record = router.record if router is not None else None
    return gen.marks["first_token"].minus(gen.marks["start"]), gen, record
