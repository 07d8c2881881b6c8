"""DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters More",
EMNLP 2025, arXiv:2502.11494; official code ZichenWen1/DART, ``llava/model/language_model/modeling_llama_self.py``,
class ``DART``, ``get_retained_image_token``; read from the copy in Chenfei-Liao/VTC-Bench ``external/DART``).

Rule, before decoder layer K (default 2 of 32 layers, placed at other depths by ``tokenbench.api.at_depth``):

1. pivots: the ``pivot_image`` image tokens and the ``pivot_text`` text tokens with the largest **L1 norm of their
   key** at layer K-1 (after RoPE, all heads); text candidates are the tokens after the image only (the question and
   answer prompt, not the system prompt), as in the official ``any_states[start + len:]``;
2. the similarity space is the input of layer K passed through the language model's **final norm** (official
   ``self.norm(layer_outputs[0])``);
3. for each pivot in turn, the image tokens **least** cosine-similar to it are added, excluding pivots and earlier
   picks; the retained set is the image pivots plus every pick (text pivots are not image tokens). No attention map is
   needed. Kept tokens keep their original position ids (official ``position_ids = keep_indexs``).

Two stated choices. Count: the official code adds ``max_num_trunction // 8`` tokens per pivot, so "128" keeps
4 + 8 x 16 = 132; tokenbench keeps exactly the budget by sharing ``keep - pivot_image`` picks over the pivots (the first
ones take one more when it does not divide). Order: the official loop walks a Python ``set`` of sequence positions,
whose order is an implementation detail; tokenbench walks the pivots in sequence order (image pivots, then text).

Options: ``layer`` in 1..L-1; ``pivot_image`` >= 1 and ``pivot_text`` >= 0, together at most the image's N visual
tokens (each pivot picks image tokens). Image pivots are kept tokens, so a budget below ``pivot_image`` keeps that
many pivots and nothing else; a prompt with fewer text tokens after the image than ``pivot_text`` uses them all.

Under ``--budget-scope crop`` (LLaVA-NeXT: base image and crops) the budget is split over the crops
(``ctx.crop_shares``) and so are the image pivots (``split_budget(pivot_image, quotas)``, so a crop never holds more
pivots than its quota): each crop's image pivots are its top-L1-norm keys, and each crop fills the rest of its quota
with its own tokens least similar to the pivots (every image and text pivot, in the same order and sharing rule as
above). The pivots and the duplication rule are DART's; only the candidates of each pick are limited to one crop. At
the global scope (the default) the rule is exactly the one above.
"""

from dataclasses import dataclass

from tokenbench.api import Need, Step, TokenReducer, layer_at_depth, register_method, split_budget


@register_method("dart")
@dataclass(frozen=True)
class DART(TokenReducer):
    stage = "prune"
    budget_scopes = ("global", "crop")
    layer: int | None = None  # K: keys of layer K-1, pruning before layer K; None: official pruned_layer 2 of 32, at depth
    pivot_image: int = 4  # official pivot_image_token
    pivot_text: int = 4  # official pivot_text_token

    def check(self, n_layers):
        if self.layer is not None and not 1 <= self.layer < n_layers:
            raise self.option_error("layer", f"must be in 1..{n_layers - 1} for this {n_layers}-layer model (it "
                                    "reads the keys of layer K-1 and prunes before layer K)", max(1, n_layers // 2))
        layer_at_depth(self.layer, 2, n_layers, "dart.layer")
        if self.pivot_image < 1:
            raise self.option_error("pivot_image", "must be at least 1 (the image pivots)", 4)
        if self.pivot_text < 0:
            raise self.option_error("pivot_text", "must be at least 0 (0: no text pivots)", 4)

    def plan(self, keep, n_visual, n_layers):
        if self.pivot_image > n_visual:
            raise self.option_error("pivot_image", f"is more than this image's {n_visual} visual tokens (image "
                                    f"pivots are image tokens); use 1..{n_visual}", min(4, n_visual))
        if self.pivot_image + self.pivot_text > n_visual:
            most = n_visual - self.pivot_image
            raise self.option_error("pivot_text", f"with pivot_image={self.pivot_image} makes more pivots than this "
                                    f"image's {n_visual} visual tokens, so some could never pick a token; use "
                                    f"0..{most}", min(4, most))
        return self.steps(n_layers)

    @staticmethod
    def _needs(k: int):
        return (Need("keys", layer=k - 1), Need("keys", layer=k - 1, tokens="text"),
                Need("final_normed", layer=k), Need("final_normed", layer=k, tokens="text"))

    def steps(self, n_layers):
        k = layer_at_depth(self.layer, 2, n_layers, "dart.layer")
        return (Step(k, needs=self._needs(k)),)

    def select(self, ctx):
        import torch

        keys_v, keys_t, h_v, h_t = (ctx.signal(n) for n in self._needs(ctx.layer))
        norm_v = keys_v.float().abs().sum(dim=(1, 3))  # (B, n) L1 norm over every head's key
        norm_t = keys_t.float().abs().sum(dim=(1, 3)).masked_fill(~ctx.text_after_image, -1.0)
        h_v = torch.nn.functional.normalize(h_v.float(), dim=-1)
        h_t = torch.nn.functional.normalize(h_t.float(), dim=-1)
        n_pivots = self.pivot_image + self.pivot_text  # at most n_visual (plan)
        shares = ctx.crop_shares(ctx.keep)  # None: one budget over the whole image
        rows = []
        for b in range(ctx.batch_size):
            # groups of candidates, each with its quota and its image pivots: the whole image, or each crop
            n_img = min(self.pivot_image, ctx.keep)
            if shares is None:
                groups = [(None, ctx.keep, n_img)]
            else:
                owner, quotas = shares[0][b], shares[1][b]
                groups = [(owner == c, q, p) for c, (q, p) in enumerate(zip(quotas, split_budget(n_img, quotas)))]
            img = torch.cat([norm_v[b].topk(p).indices if member is None
                             else norm_v[b].masked_fill(~member, float("-inf")).topk(p).indices
                             for member, _, p in groups]).sort().values
            after = ctx.n_text_after_image[b] if ctx.n_text_after_image else int(ctx.text_after_image[b].sum())
            n_txt = min(self.pivot_text, after)  # the count is known on the host: no sync to read it
            txt = norm_t[b].topk(n_txt).indices.sort().values
            pivots = torch.zeros(n_pivots, h_v.shape[-1], dtype=h_v.dtype, device=h_v.device)
            pivots[: len(img)] = h_v[b, img]  # image pivots, then text pivots, in sequence order
            pivots[len(img): len(img) + n_txt] = h_t[b, txt]
            sims = h_v[b] @ pivots.T  # (n, pivots): one matmul, counted in select_macs
            taken = torch.zeros(ctx.n_active, dtype=torch.bool, device=h_v.device)
            taken[img] = True
            used = len(img) + n_txt
            for member, quota_all, p_img in groups:
                picks = quota_all - p_img
                for p in range(used):
                    quota = picks // used + (p < picks % used)
                    if quota:
                        excluded = taken if member is None else taken | ~member
                        chosen = sims[:, p].masked_fill(excluded, float("inf")).topk(quota, largest=False).indices
                        taken[chosen] = True
            # the positions taken (exactly ctx.keep), ascending: a stable sort rather than nonzero (no host sync)
            rows.append(taken.to(torch.uint8).argsort(descending=True, stable=True)[: ctx.keep])
        return torch.stack(rows)

    def select_macs(self, dims, n_text, n_active, layer, n_visual=0):
        return n_active * dims.hidden * (self.pivot_image + self.pivot_text)  # the cosine-similarity matmul
