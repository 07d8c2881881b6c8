"""models/mini/train.py for both architectures it trains: the loss sits on each answer and its end-of-turn token
only, the auxiliary labels follow each visual token's slot, and a short Qwen2.5-VL
run and a short LLaVA-NeXT run write checkpoints that their adapters load with the token counts they were trained on."""

from __future__ import annotations

import json

import pytest
import torch

from tokenbench.models.mini import train as T


@pytest.mark.parametrize("arch,end", [("llava-1.5", "</s>"), ("llava-next", "</s>"), ("qwen2.5-vl", "<|im_end|>")])
def test_the_loss_is_on_every_answer_and_its_end_token(arch, end):
    _, processor = T.build_model(arch, 0)
    enc, targets, aux = T.training_batch(processor, 0, 3, 2, 4, arch)
    tok = processor.tokenizer
    for row in range(2):
        labelled = tok.convert_ids_to_tokens(targets[row][targets[row] != -100].tolist())
        assert len(labelled) == 2 * 4 and labelled[1::2] == [end] * 4, labelled
        assert set(labelled[::2]) <= set(T.task_answers()), labelled
    assert aux.shape[0] == 2 and aux.shape[1] == int((enc["input_ids"] == processor.tokenizer.convert_tokens_to_ids(
        "<|image_pad|>" if arch == "qwen2.5-vl" else "<image>")).sum())


def test_aux_labels_follow_each_tokens_centre():
    scene = {(0, 0): ("red", "circle"), (5, 5): ("blue", "square"), (2, 3): ("green", "triangle")}
    square = T.aux_labels(scene, 12, 12, 6).view(2, 12, 12)
    assert (square[:, :2, :2] > 0).all() and (square[:, 10:, 10:] > 0).all() and (square[:, 4:6, 6:8] > 0).all()
    assert int((square[0] > 0).sum()) == 3 * 4  # each object: its slot's 2 x 2 tokens
    wide = T.aux_labels(scene, 10, 18, 6).view(2, 10, 18)  # 504 x 280 px: 18 x 10 tokens
    for r in range(10):
        for c in range(18):
            slot = (int((r + 0.5) * 6 / 10), int((c + 0.5) * 6 / 18))
            assert bool(wide[0, r, c] > 0) == (slot in scene)


def test_a_short_qwen_run_loads_through_the_adapter(tmp_path):
    from tokenbench.harness.resolve import resolve_model
    from tokenbench.tasks.synthetic import SyntheticTask

    T.main(["--arch", "qwen2.5-vl", "--out", str(tmp_path), "--steps", "2", "--batch", "2", "--qa", "2", "--val", "4",
            "--eval-every", "2", "--warmup", "1"])
    adapter = resolve_model(f"qwen2.5-vl:{tmp_path}").configure(image_pixels="checkpoint").load()
    samples = SyntheticTask(n=4, seed=2, aspect="mixed").samples()
    sizes = {s.image.size: adapter.layout_of(s).n_visual for s in samples}
    assert all(n == (w // 28) * (h // 28) for (w, h), n in sizes.items()), sizes  # trained at 28 px per token
    with torch.no_grad():
        gen = adapter.generate(adapter.encode(samples[:1]), 2)
    assert gen.first_logits.isfinite().all()


def test_next_aux_labels_skip_exactly_the_newlines(tmp_path):
    """Every image token of a NeXT batch has a label; the -100s sit where the adapter's layout puts the newlines."""
    from tokenbench.harness.resolve import resolve_model

    model, processor = T.build_model("llava-next", 0)
    enc, _, aux = T.training_batch(processor, 0, 5, 4, 1, "llava-next")
    model.config.save_pretrained(tmp_path)
    adapter = resolve_model(f"llava-next:{tmp_path}").load_config()
    image = enc["input_ids"] == model.config.image_token_id
    start = 0
    for row, (h, w) in enumerate(enc["image_sizes"].tolist()):
        n = int(image[row].sum())
        layout = adapter.layout((w, h))
        assert n == layout.n_visual + layout.n_structural
        visual = adapter._visual_mask(enc["input_ids"][row:row + 1], layout)[0][image[row]]
        assert torch.equal(aux[0, start:start + n] == -100, ~visual)
        start += n
    assert start == aux.shape[1]


def test_a_short_llava_next_run_loads_through_the_adapter(tmp_path):
    from tokenbench.harness.resolve import resolve_model
    from tokenbench.tasks.synthetic import SyntheticTask

    T.main(["--arch", "llava-next", "--out", str(tmp_path), "--steps", "2", "--batch", "2", "--qa", "2", "--val", "4",
            "--eval-every", "2", "--warmup", "1"])
    adapter = resolve_model(f"llava-next:{tmp_path}").load()
    samples = SyntheticTask(n=8, seed=2, aspect="mixed").samples()
    layouts = {s.image.size: adapter.layout_of(s) for s in samples}
    assert len(layouts) > 1 and {len(lay.crops) for lay in layouts.values()} <= {5}  # base + 2 x 2 crops
    assert layouts[(336, 336)].n_visual == 36 + 144 and layouts[(336, 336)].n_structural == 12
    with torch.no_grad():
        gen = adapter.generate(adapter.encode(samples[:1]), 2)
    assert gen.first_logits.isfinite().all()


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    """Four steps at once, and two steps then a rerun of the same command (a run stopped after its state at step 2):
    the same weights and curve; a rerun with other settings is refused with one line."""
    from safetensors.torch import load_file

    from tokenbench.models.mini import resume

    args = ["--arch", "llava-next", "--steps", "4", "--batch", "2", "--qa", "2", "--val", "2", "--eval-every", "2",
            "--warmup", "1"]
    T.main([*args, "--out", str(tmp_path / "once")])
    stopped = tmp_path / "stopped"
    real_save = resume.save

    def stop_after_first_state(*a, **kw):
        real_save(*a, **kw)
        raise KeyboardInterrupt

    resume.save = stop_after_first_state
    try:
        with pytest.raises(KeyboardInterrupt):
            T.main([*args, "--out", str(stopped)])
    finally:
        resume.save = real_save
    assert (stopped / resume.STATE / "state.safetensors").is_file() and not (stopped / "model.safetensors").exists()
    with pytest.raises(SystemExit, match="other settings \\(lr: 0.002\\)"):
        T.main([*args, "--out", str(stopped), "--lr", "0.001"])
    T.main([*args, "--out", str(stopped)])
    a, b = load_file(tmp_path / "once" / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    once, again = (json.loads((d / "training.json").read_text()) for d in (tmp_path / "once", stopped))
    assert [p["val"] for p in once["curve"]] == [p["val"] for p in again["curve"]] and again["resumed_at"] == [2]
    assert not (stopped / resume.STATE).exists()
    assert again["threads_from"] == once["threads_from"] == [[0, torch.get_num_threads()]]


def test_a_resumed_run_may_change_its_thread_count_and_records_it(tmp_path, monkeypatch):
    from tokenbench.models.mini import resume

    args = ["--arch", "llava-1.5", "--steps", "4", "--batch", "2", "--qa", "2", "--val", "2", "--eval-every", "2",
            "--warmup", "1", "--out", str(tmp_path)]
    real_save = resume.save

    def stop_after_first_state(*a, **kw):
        real_save(*a, **kw)
        raise KeyboardInterrupt

    before = torch.get_num_threads()
    monkeypatch.setattr(resume, "save", stop_after_first_state)
    with pytest.raises(KeyboardInterrupt):
        T.main([*args, "--threads", "1"])
    monkeypatch.setattr(resume, "save", real_save)
    try:
        T.main([*args, "--threads", "2"])
    finally:
        torch.set_num_threads(before)
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["threads_from"] == [[0, 1], [2, 2]] and record["settings"]["threads"] == 2


def test_a_second_stage_starts_from_a_finished_run_and_records_it(tmp_path):
    """``--init-from``: zero steps of a second stage give back the first stage's weights exactly; training.json
    records the first stage (its path, weights' digest and record); bad first stages are one line each."""
    from safetensors.torch import load_file

    from tokenbench.results.store import file_digest

    small = ["--arch", "llava-next", "--batch", "2", "--qa", "2", "--val", "2", "--warmup", "1"]
    first, second = tmp_path / "first", tmp_path / "second"
    T.main([*small, "--steps", "2", "--out", str(first)])
    T.main([*small, "--steps", "0", "--seed", "1", "--init-from", str(first), "--out", str(second)])
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((second / "training.json").read_text())
    assert record["init_from"]["sha256"] == file_digest(str(first / "model.safetensors"))
    assert record["init_from"]["training"] == json.loads((first / "training.json").read_text())
    assert record["settings"]["init_from"] == str(first) and record["settings"]["seed"] == 1
    T.main([*small, "--steps", "2", "--seed", "1", "--init-from", str(first), "--out", str(tmp_path / "trained")])
    c = load_file(tmp_path / "trained" / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # it trains from there

    with pytest.raises(SystemExit, match="is the output directory; write the second stage to another one"):
        T.main([*small, "--steps", "1", "--init-from", str(first), "--out", str(first)])
    with pytest.raises(SystemExit, match="is not a finished training run .*give the --out directory of one"):
        T.main([*small, "--steps", "1", "--init-from", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="is a llava-next model, not qwen2.5-vl; give a run of the same --arch"):
        T.main(["--arch", "qwen2.5-vl", "--steps", "1", "--init-from", str(first), "--out", str(tmp_path / "y")])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "training.json").write_text("[1, 2]")
    (tmp_path / "x" / "model.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit, match="its training.json is not a training record"):
        T.main([*small, "--steps", "1", "--init-from", str(tmp_path / "x"), "--out", str(tmp_path / "z")])


def test_a_stopped_second_stage_refuses_a_changed_first_stage(tmp_path, monkeypatch):
    from tokenbench.models.mini import resume

    small = ["--arch", "llava-next", "--batch", "2", "--qa", "2", "--val", "2", "--warmup", "1"]
    first, second = tmp_path / "first", tmp_path / "second"
    T.main([*small, "--steps", "1", "--out", str(first)])
    real_save = resume.save

    def stop_after_first_state(*a, **kw):
        real_save(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", stop_after_first_state)
    stage2 = [*small, "--steps", "2", "--eval-every", "1", "--seed", "1", "--init-from", str(first), "--out", str(second)]
    with pytest.raises(KeyboardInterrupt):
        T.main(stage2)
    monkeypatch.setattr(resume, "save", real_save)
    T.main([*small, "--steps", "1", "--seed", "3", "--out", str(first)])  # the first stage trained again, otherwise
    with pytest.raises(SystemExit, match="other settings \\(init_sha256: "):
        T.main(stage2)
