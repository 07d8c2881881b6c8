"""Analytic compute counts for a VLM prefill: the generic formulas (linear layers, MLP projectors, a ViT layer, the
LLM's layers and LM head, attention probes, the literature's FastV convention) and one prefill's breakdown. A model
family's own vision tower is counted in its ``models/`` module from these pieces (``models/clip.py``: CLIP towers;
``models/qwen_vision.py``: Qwen2.5-VL's windowed tower and patch merger), so a new family touches no file here.

Convention (read this before quoting a number)
----------------------------------------------
* **Every function here returns MACs** (multiply-accumulates, Python ``int``). One MAC is one multiply
  and one add, so **FLOPs = 2 x MACs**. tokenbench's JSON rows report **FLOPs**
  (:meth:`PrefillCount.as_flops_dict`, :attr:`PrefillCount.total_flops`).
* A matmul ``(n, d_in) @ (d_in, d_out)`` costs ``n * d_in * d_out`` MACs. Biases are not counted.
* The LLM's SwiGLU FFN (Llama, Vicuna, Qwen2) has **three** matrices: ``3 * n * d * m``.
* Attention is **GQA-aware**: the k and v projections map ``d -> n_kv_heads * head_dim``, and only the
  new (query) tokens are projected; cached keys cost nothing.
* Attention scores ``Q K^T`` and the weighted sum ``A V`` are counted as the **full n_q x n_kv rectangle**
  (``n_q * n_kv * n_heads * head_dim`` MACs each). The causal upper triangle is *not* subtracted. This is
  what ``torch.utils.flop_counter.FlopCounterMode`` does (``sdpa_flop_count`` / ``bmm_flop``), so an
  analytic count here equals a FlopCounterMode measurement divided by 2.
* Elementwise work is not counted: RMSNorm/LayerNorm, rotary embedding, softmax, activations,
  residual adds, position-embedding adds, the class-token concat. FlopCounterMode ignores these as well.

These counts are exact for the matmul work (the unit tests check them against FlopCounterMode on tiny
Llama and CLIP models, to 0 FLOPs). They are not estimates of wall-clock time.

The literature form
-------------------
Most visual-token-reduction papers (VisionZip, PDrop, DART, HiPrune, ...) copy FastV's per-layer
estimate (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", arXiv:2403.06764, its theoretical
FLOPs estimate for one transformer layer with n tokens, hidden size d, FFN size m)::

    F(n) = 4 n d^2 + 2 n^2 d + 2 n d m          (MACs, although the papers call them FLOPs)

It assumes multi-head attention (k/v as wide as q) and a **two**-matrix FFN. For Llama/Vicuna it
undercounts the FFN by ``n d m`` (about 22 % of the total). For GQA models it overcounts k and v.
:func:`fastv_convention_macs` reproduces it, so a row can quote both.

Following nanoGPT's ``estimate_mfu`` (which writes its ``6N + 12 L H Q T`` per-token formula next to its
source, PaLM arXiv:2204.02311 Appendix B), each function below spells out its formula term by term.

Sources: ``torch/utils/flop_counter.py`` (``mm_flop``, ``bmm_flop``, ``conv_flop``, ``sdpa_flop_count``;
1 MAC = 2 FLOPs, full-rectangle attention); FastV arXiv:2403.06764; nanoGPT ``model.py``
``estimate_mfu`` for the practice of writing the formula next to its citation.

This module imports neither torch nor transformers. The ``from_config`` constructors duck-type
transformers configs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LMDims",
    "PrefillCount",
    "check_count",
    "sub_config",
    "linear_macs",
    "mlp_projector_macs",
    "llm_layer_macs",
    "llm_prefill_macs",
    "lm_head_macs",
    "decode_macs",
    "vit_layer_macs",
    "attention_rows_macs",
    "fastv_convention_macs",
    "fastv_formula_macs",
]


def check_count(name: str, value: int) -> int:
    """``value``, checked as a token/row count: a non-negative int (bool and float are refused: 36.0 tokens is a bug
    upstream)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def sub_config(config: Any, attr: str) -> Any:
    """Accept either the sub-config itself or a composite VLM config holding it (``config.text_config``)."""
    sub = getattr(config, attr, None)
    return sub if sub is not None else config


# --------------------------------------------------------------------------------------------------
# Dimensions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LMDims:
    """Shape of a decoder-only LLM with SwiGLU FFN and (grouped-query) attention.

    ``hidden`` = d, ``intermediate`` = m (FFN width), ``n_heads`` = H query heads, ``n_kv_heads`` = Hkv,
    ``head_dim`` = hd (H * hd need not equal d), ``vocab`` = V.
    """

    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    n_layers: int
    vocab: int

    def __post_init__(self) -> None:
        for name in ("hidden", "n_heads", "n_kv_heads", "head_dim", "intermediate", "n_layers", "vocab"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LMDims.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"LMDims.n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )

    @classmethod
    def from_config(cls, text_config: Any) -> LMDims:
        """Read a transformers text config (``LlamaConfig``, ``Qwen2Config``, ...), duck-typed.

        A composite VLM config (``LlavaConfig``) is accepted too: its ``text_config`` is used.
        ``num_key_value_heads`` defaults to ``num_attention_heads``; ``head_dim`` (absent or ``None``)
        defaults to ``hidden_size // num_attention_heads``.
        """
        c = sub_config(text_config, "text_config")
        hidden = c.hidden_size
        n_heads = c.num_attention_heads
        n_kv = getattr(c, "num_key_value_heads", None) or n_heads
        head_dim = getattr(c, "head_dim", None) or hidden // n_heads
        return cls(
            hidden=hidden,
            n_heads=n_heads,
            n_kv_heads=n_kv,
            head_dim=head_dim,
            intermediate=c.intermediate_size,
            n_layers=c.num_hidden_layers,
            vocab=c.vocab_size,
        )

    @property
    def q_dim(self) -> int:
        """Width of the q (and attention output) projection: H * hd."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of each of the k and v projections: Hkv * hd."""
        return self.n_kv_heads * self.head_dim


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def linear_macs(n: int, d_in: int, d_out: int) -> int:
    """One ``nn.Linear(d_in, d_out)`` applied to ``n`` tokens: ``n * d_in * d_out`` MACs (bias not counted)."""
    return check_count("n", n) * d_in * d_out


def mlp_projector_macs(dims: Sequence[int], n_tokens: int) -> int:
    """An MLP of linears ``dims[0] -> dims[1] -> ... -> dims[-1]`` on ``n_tokens`` tokens.

    LLaVA-1.5's ``mlp2x_gelu`` projector is ``dims = (vision_hidden, d, d)``:
    ``n * (dv * d + d * d)`` MACs, with ``n`` = patches only (the "default" feature-select strategy drops
    the class token before the projector). The GELU between the linears is elementwise and not counted.
    """
    if len(dims) < 2:
        raise ValueError(f"mlp_projector_macs needs at least (d_in, d_out), got dims={tuple(dims)!r}")
    return sum(linear_macs(n_tokens, a, b) for a, b in zip(dims[:-1], dims[1:]))


def llm_layer_macs(lm: LMDims, n_q: int, n_kv: int, n_kv_new: int | None = None) -> int:
    """One decoder layer on ``n_q`` new tokens attending to ``n_kv`` keys (``n_kv = n_q`` in a cache-less
    prefill; ``n_kv = cache + n_q`` with a KV cache)::

        q, o      : 2 * n_q * d * (H * hd)
        k, v      : 2 * n_kv_new * d * (Hkv * hd)   the tokens projected to keys/values here (default n_q)
        QK^T, AV  : 2 * n_q * n_kv * H * hd         full rectangle, as FlopCounterMode
        SwiGLU FFN: 3 * n_q * d * m                 gate, up, down

    ``n_kv_new > n_q`` is a layer whose keys include tokens that are not its queries (ALVTS with skipped tokens as
    keys and values: their K/V are projected, nothing else).
    """
    check_count("n_q", n_q)
    check_count("n_kv", n_kv)
    n_new = n_q if n_kv_new is None else check_count("n_kv_new", n_kv_new)
    d = lm.hidden
    proj = 2 * n_q * d * lm.q_dim + 2 * n_new * d * lm.kv_dim
    attn = 2 * n_q * n_kv * lm.q_dim
    ffn = 3 * n_q * d * lm.intermediate
    return proj + attn + ffn


def llm_prefill_macs(lm: LMDims, tokens_per_layer: Sequence[int],
                     kv_tokens_per_layer: Sequence[int] | None = None) -> list[int]:
    """Per-layer MACs of a prefill without KV cache where layer ``i`` processes ``tokens_per_layer[i]``
    tokens (``n_q = n_kv`` = that count). ``tokens_per_layer`` must have one entry per layer.
    ``kv_tokens_per_layer`` gives layers whose keys/values cover more tokens than their queries (every such token's
    K/V projected, ``n_kv`` = that count); by default each layer's keys are its queries.

    Unpruned: ``[n] * lm.n_layers``. FastV (K=2, keep k of v image tokens):
    ``[n] * 2 + [n - v + k] * (lm.n_layers - 2)``. The method's own scoring cost (for example
    :func:`attention_rows_macs`) is *not* included; book it as ``PrefillCount.overhead``.
    """
    counts = list(tokens_per_layer)
    if len(counts) != lm.n_layers:
        raise ValueError(
            f"tokens_per_layer has {len(counts)} entries but the model has {lm.n_layers} layers; "
            f"give one token count per decoder layer"
        )
    kv = counts if kv_tokens_per_layer is None else list(kv_tokens_per_layer)
    if len(kv) != len(counts):
        raise ValueError(f"kv_tokens_per_layer has {len(kv)} entries but the model has {lm.n_layers} layers")
    return [llm_layer_macs(lm, n, c, c) for n, c in zip(counts, kv)]


def lm_head_macs(lm: LMDims, n_logits: int) -> int:
    """The output projection for ``n_logits`` positions: ``n_logits * d * V``.

    A full-sequence forward computes logits for every position (``n_logits = n``); ``generate`` with
    ``logits_to_keep=1`` computes one per step.
    """
    return check_count("n_logits", n_logits) * lm.hidden * lm.vocab


def decode_macs(lm: LMDims, cached_per_layer: Sequence[int], n_steps: int) -> list[int]:
    """Per-layer MACs of ``n_steps`` greedy decode steps after a prefill that left ``cached_per_layer[l]`` tokens in
    layer ``l``'s KV cache (what that layer processed: a pruned layer caches fewer). Step ``s`` (1-based) feeds one
    token, which attends to the cache plus itself and the ``s - 1`` tokens decoded before it::

        layer l: sum over s = 1..n_steps of llm_layer_macs(lm, n_q=1, n_kv=cached_per_layer[l] + s)

    The lm_head adds ``lm_head_macs(lm, n_steps)`` (one row per step).
    """
    counts = list(cached_per_layer)
    if len(counts) != lm.n_layers:
        raise ValueError(f"cached_per_layer has {len(counts)} entries but the model has {lm.n_layers} layers")
    check_count("n_steps", n_steps)
    return [sum(llm_layer_macs(lm, 1, c + s) for s in range(1, n_steps + 1)) for c in counts]


def vit_layer_macs(v: Any, n_tokens: int) -> int:
    """One ViT layer (CLIP's: full MHA, a two-matrix MLP) on ``n_tokens`` tokens, for a tower of ``v.hidden`` width and
    MLP width ``v.intermediate`` (e.g. :class:`tokenbench.models.clip.VisionDims`)::

        q, k, v, o : 4 * n * dv^2
        QK^T, AV   : 2 * n^2 * dv
        MLP        : 2 * n * dv * mv
    """
    n = check_count("n_tokens", n_tokens)
    dv = v.hidden
    return 4 * n * dv * dv + 2 * n * n * dv + 2 * n * dv * v.intermediate


def attention_rows_macs(lm: LMDims, n_rows: int, n_keys: int, project_keys: bool = True) -> int:
    """Cost of recomputing attention probabilities of ``n_rows`` queries against ``n_keys`` keys at one
    layer, outside the model's own attention (an "attention probe", e.g. FastV's last-token row)::

        q projection of the rows : n_rows * d * (H * hd)
        k projection of the keys : n_keys * d * (Hkv * hd)     only if project_keys
        scores Q K^T             : n_rows * n_keys * H * hd

    Set ``project_keys=False`` when the keys are taken from the layer's own k projection (for example a
    KV cache). Softmax is elementwise and not counted; no ``A V`` product is needed for the probabilities.
    """
    check_count("n_rows", n_rows)
    check_count("n_keys", n_keys)
    d = lm.hidden
    macs = n_rows * d * lm.q_dim + n_rows * n_keys * lm.q_dim
    if project_keys:
        macs += n_keys * d * lm.kv_dim
    return macs


def fastv_convention_macs(n: int, d: int, m: int, n_layers: int) -> int:
    """The literature's count (FastV, arXiv:2403.06764), in MACs::

        T * (4 n d^2 + 2 n^2 d + 2 n d m)

    (MHA, two-matrix FFN). LLaVA-1.5-7B, n = 576 image + 60 text = 636: 3.31e12. The papers call these
    "FLOPs". Use it only to compare with published tables; :func:`llm_prefill_macs` is the exact count.
    """
    check_count("n", n)
    return n_layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)


def fastv_formula_macs(lm: LMDims, tokens_per_layer: Sequence[int],
                       kv_tokens_per_layer: Sequence[int] | None = None) -> int:
    """The FastV formula applied layer by layer, each layer with its own token count ``n_l``::

        sum over layers of 4 n_l d^2 + 2 n_l^2 d + 2 n_l d m

    This is how the papers compute a pruned model's "FLOPs" (FastV's Eq. for K full layers and T - K pruned ones);
    with every ``n_l = n`` it equals :func:`fastv_convention_macs`. A layer whose keys cover ``c_l > n_l`` tokens
    (``kv_tokens_per_layer``) counts its parts separately, 2 n_l d^2 (q, o) + 2 c_l d^2 (k, v) + 2 n_l c_l d +
    2 n_l d m, which is the same formula when ``c_l = n_l``."""
    d, m = lm.hidden, lm.intermediate
    counts = [check_count("n", x) for x in tokens_per_layer]
    kv = counts if kv_tokens_per_layer is None else [check_count("n", x) for x in kv_tokens_per_layer]
    return sum(2 * n * d * d + 2 * c * d * d + 2 * n * c * d + 2 * n * d * m for n, c in zip(counts, kv))


# --------------------------------------------------------------------------------------------------
# One prefill's breakdown
# --------------------------------------------------------------------------------------------------


@dataclass
class PrefillCount:
    """The compute of one prefill, split by stage, in MACs.

    ``llm`` may be left at 0 when ``per_layer`` is given: it is then set to ``sum(per_layer)``. If both
    are given they must agree. ``overhead`` holds a method's own extra work (scoring, attention probes,
    clustering matmuls).
    """

    vision: int = 0
    projector: int = 0
    llm: int = 0
    lm_head: int = 0
    overhead: int = 0
    per_layer: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("vision", "projector", "llm", "lm_head", "overhead"):
            check_count(name, getattr(self, name))
        for i, x in enumerate(self.per_layer):
            check_count(f"per_layer[{i}]", x)
        if self.per_layer:
            layer_sum = sum(self.per_layer)
            if self.llm == 0:
                self.llm = layer_sum
            elif self.llm != layer_sum:
                raise ValueError(
                    f"PrefillCount.llm={self.llm} but sum(per_layer)={layer_sum}; give one or make them agree"
                )

    @property
    def total_macs(self) -> int:
        return self.vision + self.projector + self.llm + self.lm_head + self.overhead

    @property
    def total_flops(self) -> int:
        """FLOPs = 2 x MACs."""
        return 2 * self.total_macs

    def as_flops_dict(self) -> dict[str, Any]:
        """The breakdown in **FLOPs** (ints), ready for a JSON row: vision, projector, llm, lm_head,
        overhead, total, and per_layer (list)."""
        return {
            "vision": 2 * self.vision,
            "projector": 2 * self.projector,
            "llm": 2 * self.llm,
            "lm_head": 2 * self.lm_head,
            "overhead": 2 * self.overhead,
            "total": self.total_flops,
            "per_layer": [2 * x for x in self.per_layer],
        }
