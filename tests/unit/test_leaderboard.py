"""The leaderboard: retention intervals, rendering from result files, and the drift check CI runs."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from tokenbench.results import leaderboard as lb
from tokenbench.errors import ConfigError, IncompatibleError


def _row(method, budget, keep, correct, full_correct, device="cpu", speedup=1.0, kind="kept", flops_ratio=1.0):
    acc, ref = correct.count("1") / len(correct), full_correct.count("1") / len(full_correct)
    return {"method": method, "model": "m", "task": "t", "budget": budget, "keep": keep, "budget_kind": kind,
            "keep_ratio": keep / 576,
            "n_samples": len(correct), "n_visual": 576, "accuracy": acc, "retention": acc / ref,
            "agreement": 0.5, "tokens_avg_layer": float(keep), "flops_ratio": flops_ratio,
            "per_sample_correct": correct, "speedup_prefill": speedup, "device": device, "task_version": "2",
            "provenance": {"seed": 0, "torch_threads": 2, "gpu": "NVIDIA H100" if device == "cuda" else None}}


FULL = "1111111110" * 5
ROWS = [_row("full", "all", 576, FULL, FULL), _row("fastv", "64", 64, "1111100000" * 5, FULL, flops_ratio=0.3),
        _row("random", "64", 64, "1100000000" * 5, FULL, flops_ratio=0.25)]


def test_ratio_budgets_read_as_fractions():
    assert [lb._budget(b) for b in ("r0.111111", "r0.222222", "r0.333333", "64")] == ["1/9", "2/9", "1/3", "64"]


def test_retention_interval_contains_the_point_and_is_deterministic():
    lo, hi = lb.retention_interval(ROWS[1]["per_sample_correct"], FULL)
    assert lo < ROWS[1]["retention"] < hi and 0 < lo and hi <= 1.0
    assert lb.retention_interval(ROWS[1]["per_sample_correct"], FULL) == (lo, hi)
    assert lb.retention_interval(FULL, FULL) == (1.0, 1.0)
    assert lb.retention_interval("", FULL) is None  # rows without per-sample results get no interval


def test_render_writes_markdown_and_plot_with_devices_in_separate_columns(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "cpu.json").write_text(json.dumps(ROWS))
    gpu = [dict(r, device="cuda", speedup_prefill=3.0, n_samples=1, provenance={"gpu": "NVIDIA H100"}) for r in ROWS]
    (res / "gpu.json").write_text(json.dumps(gpu))
    written = lb.render(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["m--t.md", "m--t.png"]
    text = (tmp_path / "m--t.md").read_text()
    assert "prefill × (CPU, 2 threads)" in text and "prefill × (NVIDIA H100)" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| fastv")]
    assert len(lines) == 1 and "| 1.00 " in lines[0] and "| 3.00 " in lines[0]  # both devices, one column each
    assert (tmp_path / "m--t.png").read_bytes()[:4] == b"\x89PNG"
    assert lb.check(ROWS, str(tmp_path)) == []  # a board rendered from these rows matches them


def test_check_names_every_changed_cell(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cpu.json").write_text(json.dumps(ROWS))
    lb.render(str(tmp_path), plots=False)
    changed = [dict(r) for r in ROWS]
    changed[1] = _row("fastv", "64", 64, "1111110000" * 5, FULL, flops_ratio=0.3)
    problems = lb.check(changed, str(tmp_path))
    assert any(p.startswith("fastv @ 64 (matched budgets): accuracy committed 0.500, now 0.600") for p in problems), problems
    timing_only = [dict(r, speedup_prefill=9.0) for r in ROWS]
    assert lb.check(timing_only, str(tmp_path)) == []  # timings are never compared
    assert lb.check(ROWS[:2], str(tmp_path)) == ["random @ 64 (matched budgets): in " + str(tmp_path / "m--t.md") +
                                                 " but no longer produced"]


def test_bad_result_files_are_refused_with_the_fix(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text("{not json")
    with pytest.raises(ConfigError, match="x.json: not valid UTF-8 JSON"):
        lb.render(str(tmp_path))
    good = json.loads(json.dumps(ROWS))
    for content, message in [
        (b"\xff\xfe not utf-8", "x.json: not valid UTF-8 JSON"),
        (b"[]", "x.json: holds no rows"),
        (json.dumps([{k: v for k, v in good[0].items() if k != "model"}]).encode(), "row 0 \\(full\\) has no field 'model'"),
        (json.dumps([good[0] | {"n_samples": "ten"}]).encode(), "row 0 \\(full\\) field 'n_samples' is 'ten', not int"),
        (json.dumps(good[1:]).encode(), "x.json: has no `full` row"),
    ]:
        (tmp_path / "results" / "x.json").write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            lb.render(str(tmp_path))
    with pytest.raises(ConfigError, match="tokenbench leaderboard --update"):
        lb.render(str(tmp_path / "nowhere"))


def test_committed_board_matches_its_results():
    """The committed markdown is exactly what `tokenbench leaderboard` renders from the committed results."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "leaderboards")
    for (model, task), files in lb.boards(os.path.join(root, lb.RESULTS_SUBDIR)).items():
        text, _ = lb.render_board(model, task, files)
        with open(os.path.join(root, f"{lb._slug(model, task)}.md")) as f:
            assert f.read() == text, f"{model}/{task}: regenerate with `tokenbench leaderboard`"


def test_mini_suite_is_every_builtin_method_with_alvts_shipped_calibration():
    from tokenbench.api import METHODS
    from tokenbench.contract.registry import BUILTIN
    from tokenbench.harness.plan import method_labels

    from tokenbench.results.suites import suite_spec

    spec = suite_spec()
    names = [spec_[0] for spec_ in spec.methods]
    assert list(dict.fromkeys(names)) == [n for n in METHODS.names() if n != "full" and METHODS.origin(n).source == BUILTIN]
    assert {"alvts", "fastv", "pdrop", "dart", "visionzip", "sparsevlm", "fitprune", "vtw", "random", "pool"} <= set(names)
    labels = method_labels(spec.methods)
    assert "alvts" in labels and "alvts[skipped_as_kv=False]" in labels  # ALVTS's open choice, as rows of its own
    options = dict(zip(labels, (s[1] for s in spec.methods)))
    assert options["alvts[skipped_as_kv=False]"]["skipped_as_kv"] is False and "skipped_as_kv" not in options["alvts"]
    for label in ("alvts", "alvts[skipped_as_kv=False]"):
        calibration = options[label]["calibration"]
        assert calibration.endswith(os.path.join("mini", "llava-1.5", "calibration", "alvts", "rank4-mean.safetensors"))
        assert os.path.isfile(calibration)
    assert spec.model == "mini-llava" and spec.task_options == {"n": 200}
    assert [b.ratio for b in spec.budgets] == [1 / 9, 2 / 9, 1 / 3]
    assert (spec.warmup, spec.repeats) == (1, 3)
    checked = suite_spec(check=True)  # leaderboard --check compares no timing: one round, no warm-up, nothing else
    assert (checked.warmup, checked.repeats) == (0, 1)
    assert dataclasses.replace(checked, warmup=1, repeats=3) == spec


def test_variant_rows_render_under_their_own_label(tmp_path):
    (tmp_path / "results").mkdir()
    variant = dict(_row("alvts", "64", 64, "1110000000" * 5, FULL), label="alvts[skipped_as_kv=False]")
    rows = [*ROWS, dict(_row("alvts", "64", 64, "1111111000" * 5, FULL), label="alvts"), variant]
    (tmp_path / "results" / "cpu.json").write_text(json.dumps(rows))
    lb.render(str(tmp_path), plots=False)
    text = (tmp_path / "m--t.md").read_text()
    assert len([ln for ln in text.splitlines() if ln.startswith("| alvts ")]) == 1
    assert len([ln for ln in text.splitlines() if ln.startswith("| alvts[skipped_as_kv=False] ")]) == 1
    assert lb.check(rows, str(tmp_path)) == []
    changed = [*rows[:-1], dict(variant, accuracy=0.1)]
    assert any(p.startswith("alvts[skipped_as_kv=False] @ 64 (matched budgets): accuracy") for p in lb.check(changed, str(tmp_path)))


def test_a_method_listed_twice_is_refused():
    from tokenbench.harness.plan import method_labels

    with pytest.raises(ConfigError, match="listed twice"):
        method_labels((("fastv", {"layer": 3}), ("fastv", {"layer": 3})))
    assert method_labels((("fastv", {}), ("fastv", {"layer": 3}))) == ["fastv", "fastv[layer=3]"]  # told apart
    assert method_labels((("alvts", {}), ("alvts", {"skipped_as_kv": False}, "alvts[skipped_as_kv=False]"))) == [
        "alvts", "alvts[skipped_as_kv=False]"]


def test_boards_split_a_several_task_file_and_refuse_mixed_task_versions(tmp_path):
    import json

    import pytest

    from tokenbench.errors import ConfigError

    def row(task, version, method="full"):
        return {**ROWS[0], "method": method, "model": "m", "task": task, "task_version": version}

    (tmp_path / "a.json").write_text(json.dumps([row("pope", "1-x"), row("mme", "1-y")]))
    grouped = lb.boards(str(tmp_path))
    assert sorted(grouped) == [("m", "mme"), ("m", "pope")]
    assert [r["task"] for _, rows in grouped[("m", "mme")] for r in rows] == ["mme"]
    (tmp_path / "b.json").write_text(json.dumps([row("pope", "1-z")]))
    with pytest.raises(ConfigError, match=r"m on pope come from different task versions: a.json \(version 1-x\), "
                                          r"b.json \(version 1-z\)"):
        lb.boards(str(tmp_path))


def test_footnote_says_what_the_budget_column_shows(tmp_path):
    """The board's budget column holds ratios (`1/9`) or counts (`64`); the footnote must not call it a count."""
    (tmp_path / "results").mkdir()
    rows = [ROWS[0], dict(ROWS[1], budget="r0.111111"), dict(ROWS[2], budget="64")]
    (tmp_path / "results" / "cpu.json").write_text(json.dumps(rows))
    lb.render(str(tmp_path), plots=False)
    text = (tmp_path / "m--t.md").read_text()
    assert "| fastv    | 1/9 " in text and "| random   | 64 " in text
    footnote = next(ln for ln in text.splitlines() if ln.startswith("* `budget`"))
    assert "share of each image's visual tokens (`1/9`)" in footnote and "number of them (`64`)" in footnote
    assert "`keep`: the visual tokens it comes to" in footnote


def test_pareto_legend_covers_no_point_and_every_point_carries_its_budget(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    rows = [ROWS[0], dict(ROWS[1], budget="r0.111111"), dict(ROWS[1], budget="r0.222222", keep=128, flops_ratio=0.4),
            dict(ROWS[2], budget_kind="layer_mean")]
    lb.pareto_png(str(tmp_path / "p.png"), "m", rows)
    fig = figures[0]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not legend.overlaps(axes)  # outside the axes: no point can be under it
    assert sorted(t.get_text() for t in ax.texts) == ["1/9", "2/9", "64*"]  # one label per point, as the board writes
    monkeypatch.undo()
    plt.close(fig)


def test_device_label_names_the_processor_where_the_row_records_it():
    assert lb.device_label(ROWS[0]) == "CPU, 2 threads"  # rows from before the field
    row = dict(ROWS[0], provenance={"torch_threads": 4, "cpu_model": "Apple M2"})
    assert lb.device_label(row) == "Apple M2, 4 threads"


def test_two_conventions_render_as_two_tables_and_are_checked_apart(tmp_path):
    matched = [dict(r, match=None if r["method"] == "full" else "matched") for r in ROWS]
    nominal = [dict(_row("fastv", "64", 64, "1111110000" * 5, FULL, flops_ratio=0.35), match="nominal"),
               dict(ROWS[2], match="nominal", same_as="matched")]  # random: the same plan in both
    rows = matched + nominal
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cpu.json").write_text(json.dumps(rows))
    lb.render(str(tmp_path), plots=False)
    text = (tmp_path / "m--t.md").read_text()
    matched_at, nominal_at = text.index("## Budgets matched"), text.index("## Budgets nominal")
    assert matched_at < nominal_at
    nominal_part = text[nominal_at:]
    assert "run the same plan in both: random" in nominal_part
    table = [ln for ln in nominal_part.splitlines() if ln.startswith("| ")]
    assert [ln.split("|")[1].strip() for ln in table[1:]] == ["full", "fastv"]  # header, full, fastv; no random
    assert "0.600" in nominal_part and "0.600" not in text[matched_at:nominal_at]  # each row in its own table
    assert lb.check(rows, str(tmp_path)) == []
    changed = [dict(r) for r in rows]
    changed[3] = dict(changed[3], flops_ratio=0.4)
    assert lb.check(changed, str(tmp_path)) == ["fastv @ 64 (nominal budgets): FLOPs ratio committed 0.350, now 0.400"]


REFUSED = {"method": "vispruner", "label": "vispruner", "model": "m", "task": "t", "task_version": "2",
           "refused": "method 'vispruner' needs cls_attn | which this model's tower does not give"}


def test_a_refused_method_is_a_row_with_its_reason_in_every_table(tmp_path):
    (tmp_path / "results").mkdir()
    nominal = dict(_row("fastv", "64", 64, "1111000000" * 5, FULL), match="nominal")
    rows = [*ROWS, nominal, REFUSED]
    (tmp_path / "results" / "cpu.json").write_text(json.dumps(rows))
    lb.render(str(tmp_path), plots=True)
    text = (tmp_path / "m--t.md").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("| vispruner ")]
    assert len(lines) == 2  # the matched and the nominal table
    assert all("| refused " in ln and "needs cls_attn / which" in ln for ln in lines)  # its `|` cannot end the cell
    assert "`refused`" in text
    assert lb.check(rows, str(tmp_path)) == []
    problems = lb.check(rows[:-1], str(tmp_path))  # no longer refused (and not run): the check says so
    assert any(p.startswith("vispruner @ every") and "no longer produced" in p for p in problems), problems
    reason = lb.check([*rows[:-1], dict(REFUSED, refused="another reason")], str(tmp_path))
    assert any("vispruner @ every" in p and "another reason" in p for p in reason), reason


@pytest.mark.parametrize("bad", [{"refused": 3}, {"model": None}])
def test_a_damaged_refused_row_names_the_file_and_field(tmp_path, bad):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cpu.json").write_text(json.dumps([*ROWS, dict(REFUSED, **bad)]))
    with pytest.raises(ConfigError, match=f"cpu.json: row 3 is a refused row without a text field '{next(iter(bad))}'"):
        lb.render(str(tmp_path), plots=False)


def test_mixed_image_sizes_give_a_range_of_visual_tokens_in_the_header(tmp_path):
    (tmp_path / "results").mkdir()
    rows = [dict(r, n_visual=160.5, n_visual_range=[108, 180]) for r in ROWS]
    (tmp_path / "results" / "cpu.json").write_text(json.dumps(rows))
    lb.render(str(tmp_path), plots=False)
    assert "108–180 (mean 160.5) visual tokens per image" in (tmp_path / "m--t.md").read_text()


def test_the_suites_are_one_per_family_and_refusals_come_from_the_plan_checks():
    from tokenbench.harness.compare import RunSpec
    from tokenbench.harness.plan import plan_run
    from tokenbench.results import suites

    assert [s["model"] for s in suites.MINI_SUITES][0] == "mini-llava" and suites.MINI_SUITE is suites.MINI_SUITES[0]
    assert all(s["task_options"].get("aspect", "square") == ("square" if s["model"] == "mini-llava" else "mixed")
               for s in suites.MINI_SUITES)
    with pytest.raises(ConfigError, match="no mini suite for model 'nope'; the suites are mini-llava"):
        suites.suite_of("nope")
    spec = RunSpec(methods=(("vispruner", {}), ("fastv", {}), ("scope", {})), model="tiny-qwen2.5-vl", limit=2)
    with pytest.raises(IncompatibleError, match="vispruner"):
        plan_run(spec)  # without a dict to record them in, a refusal stops the run
    refused = {}
    plan = plan_run(spec, refused=refused)
    assert sorted(refused) == ["scope", "vispruner"] and all(
        method == label and why.startswith("needs 'cls_attn', which 'tiny-qwen2.5-vl' cannot provide: ")
        for label, (method, why) in refused.items()), refused
    assert {step.method.name for step in plan.steps} == {"fastv"}  # the refused ones are left out, fastv runs
    refused = {}
    plan_run(dataclasses.replace(spec, model="tiny-llava"), refused=refused)
    assert refused == {}



def test_families_put_methods_side_by_side_and_name_real_ranking_changes(tmp_path):
    """Two models where fastv and random swap places: far apart on both (real), and a swap within the noise."""
    (tmp_path / "results").mkdir()
    full = "1" * 100
    one = [_row("full", "all", 576, full, full), _row("fastv", "64", 64, "1" * 90 + "0" * 10, full),
           _row("random", "64", 64, "1" * 50 + "0" * 50, full), _row("dart", "64", 64, "1" * 70 + "0" * 30, full)]
    two = [dict(r, model="m2") for r in (_row("full", "all", 576, full, full), _row("fastv", "64", 64, "1" * 40 + "0" * 60, full),
                                         _row("random", "64", 64, "1" * 80 + "0" * 20, full),
                                         _row("dart", "64", 64, "1" * 79 + "0" * 21, full))]
    refused = dict(REFUSED, model="m2")
    (tmp_path / "results" / "a.json").write_text(json.dumps(one))
    (tmp_path / "results" / "b.json").write_text(json.dumps([*two, refused]))
    written = lb.render(str(tmp_path), plots=False)
    assert str(tmp_path / "t--families.md") in written
    text = (tmp_path / "t--families.md").read_text()
    fastv = next(ln for ln in text.splitlines() if ln.startswith("| fastv "))
    assert "0.900 [" in fastv and "(#1)" in fastv and "0.400 [" in fastv and "(#3)" in fastv
    assert "| vispruner | – | refused |" in text
    assert "* fastv vs random: m: +0.400 [" in text  # real: far apart on both
    real = text.split("that are real")[1].split("further ranking")[0]
    assert "dart vs random" not in real  # 0.79 vs 0.80 on m2: within the noise
    assert "dart/random (m vs m2)" in text


def test_difference_interval_is_deterministic_and_centred():
    from tokenbench.results.families import difference_interval

    lo, hi = difference_interval("1" * 90 + "0" * 10, "1" * 50 + "0" * 50, "1" * 100)
    assert lo < 0.4 < hi and lo > 0 and difference_interval("1" * 90 + "0" * 10, "1" * 50 + "0" * 50, "1" * 100) == (lo, hi)
    assert difference_interval("", "1", "1") is None
