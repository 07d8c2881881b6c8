"""`tokenbench leaderboard`: renders from result files; bad input is one `error:` line and exit status 2."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tokenbench.cli import main


def _rows():
    full = {"method": "full", "model": "m", "task": "t", "budget": "all", "keep": 576, "keep_ratio": 1.0, "budget_kind": "kept",
            "n_samples": 4, "n_visual": 576, "accuracy": 1.0, "retention": 1.0, "agreement": 1.0,
            "tokens_avg_layer": 576.0, "flops_ratio": 1.0, "per_sample_correct": "1111", "speedup_prefill": 1.0,
            "device": "cpu", "provenance": {"torch_threads": 2, "seed": 0}}
    return [full, dict(full, method="fastv", budget="64", keep=64, keep_ratio=64 / 576, accuracy=0.5, retention=0.5, agreement=0.5,
                       tokens_avg_layer=100.0, flops_ratio=0.3, per_sample_correct="1010", speedup_prefill=1.8)]


def test_renders_markdown_and_plot(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cpu.json").write_text(json.dumps(_rows()))
    result = CliRunner().invoke(main, ["leaderboard", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "m--t.md").is_file() and (tmp_path / "m--t.png").is_file()
    assert "| fastv" in (tmp_path / "m--t.md").read_text()


def test_update_and_check_together_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["leaderboard", "--update", "--check", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "error:" in result.output and "exclude each other" in result.output
    assert "Traceback" not in result.output


def test_missing_results_directory_says_how_to_make_it(tmp_path):
    result = CliRunner().invoke(main, ["leaderboard", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and "tokenbench leaderboard --update" in result.output


def test_a_model_without_a_suite_or_without_update_or_check_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["leaderboard", "--check", "-M", "tiny-llava", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "no mini suite for model 'tiny-llava'" in result.output
    assert "the suites are mini-llava" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["leaderboard", "-M", "mini-llava", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "--model picks the suites --update or --check runs" in result.output


def test_update_then_check_a_suite_with_a_refused_method(tmp_path, monkeypatch):
    """The CI path end to end on a small suite: --update writes the rows and the refused method's row, renders; --check
    on the same code passes; a changed committed cell fails with exit 1, naming it."""
    from tokenbench.results import suites

    suite = {**suites.COMMON, "model": "tiny-qwen2.5-vl", "task_options": {"n": 2}, "keep_ratio": (1 / 9,),
             "match": "matched", "methods": ["fastv", "vispruner"], "warmup": 0, "repeats": 1, "batch_size": 2}
    monkeypatch.setattr(suites, "MINI_SUITES", (suite,))
    result = CliRunner().invoke(main, ["leaderboard", "--update", "-q", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results" / "cpu-tiny-qwen2.5-vl--synthetic.json").read_text())
    assert [r.get("label", r["method"]) for r in rows if "refused" in r] == ["vispruner"]
    assert rows[-1]["refused"].startswith("needs 'cls_attn', which 'tiny-qwen2.5-vl' cannot provide")
    board = (tmp_path / "tiny-qwen2.5-vl--synthetic.md").read_text()
    (line,) = [ln for ln in board.splitlines() if ln.startswith("| vispruner ")]
    assert [c.strip() for c in line.strip("|").split("|")][3] == "refused"
    result = CliRunner().invoke(main, ["leaderboard", "--check", "-q", "-M", "tiny-qwen2.5-vl", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "rows of 1 board(s) match" in result.output, result.output
    (tmp_path / "tiny-qwen2.5-vl--synthetic.md").write_text(board.replace(line, line.replace("| refused ", "| 0.500   ")))
    result = CliRunner().invoke(main, ["leaderboard", "--check", "-q", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "vispruner @ every (matched budgets): accuracy committed 0.500, now refused" \
        in result.output, result.output
