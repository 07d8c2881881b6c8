"""Train a tokenbench-mini model from scratch on the synthetic task, on a CPU, deterministically from its seed.

    python -m tokenbench.models.mini.train --out models/mini/llava-1.5 --seed 0

The recipe (``../shared/docs/transformers-notes.md`` §Q5, adapted to 576 visual tokens):

* **Architecture**: LLaVA-1.5's exactly (``LlavaForConditionalGeneration``: a CLIP ViT at 336 px with 14 px patches, so
  576 visual tokens, the penultimate layer's patch features, a 2-layer GELU projector, a Llama decoder) at toy width.
* **Data**: fresh synthetic scenes every step (the task's defaults: grid 6, 2-6 objects), never a held-out one (training seeds are the
  strings ``mini-train-{seed}-{step}-{j}``, evaluation uses ``synthetic-{seed}-{i}``). Each image carries
  ``--qa`` packed turns, ``USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...``, the first
  formatted exactly as the adapter formats an evaluation prompt; the loss is on every answer and its ``</s>``.
* **A dense auxiliary loss** on the projector's output: two linear heads predict, for each visual token, the colour
  and the shape of the object in its slot (or none). It stands in for a pretrained vision encoder; the heads are not
  saved.
* AdamW, linear warm-up then cosine decay, gradient clipping at 1.

Every run is deterministic from ``--seed`` on a given machine and thread count (``torch.manual_seed`` for the
initialisation, named ``random.Random`` streams for the data). The directory written holds ``model.safetensors``,
the config, tokenizer, processor and ``training.json`` (settings, wall time, versions, the validation curve).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time

#: (CLIP hidden, layers, heads, FFN), (Llama hidden, layers, heads, FFN)
SIZES = {"llava-1.5": ((64, 3, 4, 256), (64, 12, 4, 176))}
IMAGE, PATCH = 336, 28  # 12 x 12 = 144 visual tokens (see README.md: 576 did not learn within the budget)


def build_model(arch: str, seed: int):
    """The untrained model (initialised from ``seed``) and its processor."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from tokenbench.models.llava import llava_processor
    from tokenbench.models.mini.tokenizer import word_tokenizer

    (vh, vl, vheads, vffn), (h, layers, heads, ffn) = SIZES[arch]
    tok = word_tokenizer()
    vision = CLIPVisionConfig(hidden_size=vh, intermediate_size=vffn, num_hidden_layers=vl, num_attention_heads=vheads,
                              image_size=IMAGE, patch_size=PATCH, projection_dim=vh)
    text = LlamaConfig(hidden_size=h, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=heads, vocab_size=len(tok), max_position_embeddings=1024,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model, llava_processor(tok, IMAGE, PATCH)


def training_batch(processor, seed: int, step: int, size: int, qa: int):
    """One batch of fresh scenes: model inputs, answer-token labels and the per-token auxiliary labels."""
    import torch

    from tokenbench.models.llava import LlavaAdapter
    from tokenbench.tasks.synthetic import COLORS, QUESTION_TYPES, SHAPES, qa_pairs, render, scene_for

    grid, patches = 6, IMAGE // PATCH
    texts, images, aux = [], [], []
    for j in range(size):
        rng = random.Random(f"mini-train-{seed}-{step}-{j}")
        qtype = rng.choice(QUESTION_TYPES)
        scene, target = scene_for(qtype, rng, grid, rng.randint(2, 6))
        pairs = qa_pairs(scene, target, qtype, rng, qa)
        first = LlavaAdapter.template.format(question=pairs[0][0])
        texts.append(first + f" {pairs[0][1]}</s>" + "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in pairs[1:]))
        images.append(render(scene, IMAGE, grid))
        labels = torch.zeros(2, patches, patches, dtype=torch.long)
        per = patches // grid
        for (r, c), (colour, shape) in scene.items():
            labels[0, r * per:(r + 1) * per, c * per:(c + 1) * per] = 1 + list(COLORS).index(colour)
            labels[1, r * per:(r + 1) * per, c * per:(c + 1) * per] = 1 + SHAPES.index(shape)
        aux.append(labels.flatten(1))
    processor.tokenizer.padding_side = "right"
    enc = processor(images=images, text=texts, return_tensors="pt", padding=True)
    ids = enc["input_ids"]
    tok = processor.tokenizer
    assistant = tok.convert_tokens_to_ids("ASSISTANT")
    targets = torch.full_like(ids, -100)
    rows, cols = (ids == assistant).nonzero(as_tuple=True)
    for r, c in zip(rows.tolist(), cols.tolist()):  # ASSISTANT : answer </s>
        targets[r, c + 2:c + 4] = ids[r, c + 2:c + 4]
    return enc, targets, torch.stack(aux)  # aux: (B, 2, 576)


def first_token_accuracy(model, processor, samples) -> dict[str, float]:
    """Share of ``samples`` whose greedy first answer token is the gold answer, per question type and overall."""
    import torch

    from tokenbench.models.llava import LlavaAdapter

    processor.tokenizer.padding_side = "left"
    hits: dict[str, list[bool]] = {}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(samples), 50):
            chunk = samples[start:start + 50]
            enc = processor(images=[s.image for s in chunk], return_tensors="pt", padding=True,
                            text=[LlavaAdapter.template.format(question=s.question) for s in chunk])
            pred = model(**enc).logits[:, -1].argmax(-1).tolist()
            for s, p in zip(chunk, pred):
                hits.setdefault(s.meta["type"], []).append(processor.tokenizer.convert_ids_to_tokens(p) == s.answer)
    model.train()
    out = {k: sum(v) / len(v) for k, v in sorted(hits.items())}
    out["all"] = sum(sum(v) for v in hits.values()) / len(samples)
    return out


def train(args) -> dict:
    import torch
    import transformers

    from tokenbench.tasks.synthetic import COLORS, SHAPES, SyntheticTask

    model, processor = build_model(args.arch, args.seed)
    hidden = model.config.text_config.hidden_size
    heads = torch.nn.ModuleList([torch.nn.Linear(hidden, 1 + len(COLORS)), torch.nn.Linear(hidden, 1 + len(SHAPES))])
    captured = {}
    model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.__setitem__("v", o))
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step):  # linear warm-up, then cosine decay to 5 % of the peak
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    val = SyntheticTask(n=args.val, seed=2).samples()
    curve, start = [], time.perf_counter()
    model.train()
    for step in range(args.steps):
        enc, targets, aux = training_batch(processor, args.seed, step, args.batch, args.qa)
        logits = model(**enc).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())
        v = captured["v"]  # (B, 576, hidden): the LLM's visual-token inputs
        aux_loss = sum(torch.nn.functional.cross_entropy(head(v).flatten(0, 1), aux[:, i].flatten())
                       for i, head in enumerate(heads))
        (loss + args.aux_weight * aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        last = step + 1 == args.steps
        if (step + 1) % args.eval_every == 0 or last:
            acc = first_token_accuracy(model, processor, val)
            point = {"step": step + 1, "wall_s": round(time.perf_counter() - start, 1), "loss": round(loss.item(), 4),
                     "aux_loss": round(aux_loss.item(), 4), "val": {k: round(x, 4) for k, x in acc.items()}}
            curve.append(point)
            print(json.dumps(point), flush=True)
    wall = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    processor.tokenizer.padding_side = "left"
    processor.save_pretrained(args.out)
    record = {
        "arch": args.arch, "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "sizes": SIZES[args.arch], "parameters": sum(p.numel() for p in model.parameters()),
        "train_wall_s": round(wall, 1), "images_seen": args.steps * args.batch,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(), "curve": curve,
    }
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="llava-1.5", choices=sorted(SIZES))
    p.add_argument("--out", required=True, help="directory to write the trained model to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1700)
    p.add_argument("--batch", type=int, default=32, help="images per step")
    p.add_argument("--qa", type=int, default=12, help="question/answer turns packed per image")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--aux-weight", type=float, default=1.0)
    p.add_argument("--val", type=int, default=200, help="validation samples (synthetic seed 2) at each evaluation")
    p.add_argument("--eval-every", type=int, default=100)
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
