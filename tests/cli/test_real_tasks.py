"""`tokenbench compare` on the benchmark tasks, end to end on local copies in the real schema (the mini model)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from task_fixtures import FIXTURES
from tokenbench.cli import main
from tokenbench.testing import write_task_data

FAST = ["--repeats", "1", "--warmup", "0", "-q"]


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = {}
    for name in ("pope", "mme"):
        out[name] = write_task_data(FIXTURES[name](), str(tmp_path_factory.mktemp(name)), forms=("save_to_disk",))
    return out


def test_compare_on_pope_prints_and_writes_every_official_metric(data, tmp_path):
    out = tmp_path / "rows.json"
    result = invoke("compare", "alvts", "fastv", "--task", "pope", "--data", data["pope"]["save_to_disk"], *FAST,
                    "--json", str(out))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "pope metrics (%)" in text
    for category in ("adversarial", "popular", "random"):
        for metric in ("accuracy", "precision", "recall", "f1"):
            assert f"{category}/{metric}" in text
    rows = json.loads(out.read_text())
    assert [r["label"] for r in rows] == ["full", "alvts", "fastv"]
    for r in rows:
        assert r["task"] == "pope" and r["metric"] == "f1" and r["score"] == r["metrics"]["f1"]
        for key in ("accuracy", "precision", "recall", "f1", "yes_ratio", "adversarial/f1", "random/accuracy"):
            assert 0.0 <= r["metrics"][key] <= 1.0
        assert len(r["per_sample_scores"]) == r["n_samples"] == len(r["sample_ids"])
        assert r["task_options"]["data"] == data["pope"]["save_to_disk"] and r["dataset"].startswith("local:")
        assert r["task_version"] == rows[0]["task_version"]
    full = rows[0]
    assert full["retention"] == 1.0
    for r in rows[1:]:
        assert r["retention"] == pytest.approx(r["score"] / full["score"]) if full["score"] else r["retention"] is None


def test_several_tasks_print_the_papers_average(data, tmp_path):
    out = tmp_path / "rows.json"
    result = invoke("compare", "fastv", "--task", "pope,mme", "--data", f"pope={data['pope']['save_to_disk']}",
                    "--data", f"mme={data['mme']['save_to_disk']}", "-n", "4", *FAST, "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "average retention % over 2 tasks (pope, mme)" in result.output
    rows = json.loads(out.read_text())
    assert [(r["task"], r["label"]) for r in rows] == [("pope", "full"), ("pope", "fastv"), ("mme", "full"),
                                                        ("mme", "fastv")]
    from tokenbench.results.rows import average_retention

    (fastv,) = [a for a in average_retention(rows) if a["label"] == "fastv"]
    if all(r["retention"] is not None for r in rows):
        assert fastv["mean_retention"] == pytest.approx((rows[1]["retention"] + rows[3]["retention"]) / 2)


def test_a_sample_whose_image_is_corrupt_is_counted_and_the_run_goes_on(tmp_path):
    import os

    paths = write_task_data(FIXTURES["pope"](), str(tmp_path), forms=("jsonl",))
    first = sorted(os.listdir(tmp_path / "images"))[0]
    (tmp_path / "images" / first).write_bytes(b"garbage")
    out = tmp_path / "rows.json"
    result = invoke("compare", "fastv", "--task", "pope", "--data", paths["jsonl"], *FAST, "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "failed: 1 sample(s) could not be loaded" in result.output
    rows = json.loads(out.read_text())
    assert all(len(r["failed_to_load"]) == 1 and r["n_failed"] >= 1 for r in rows)
    assert rows[0]["n_samples"] == len(FIXTURES["pope"]()) - 1


@pytest.mark.parametrize("args, fragment", [
    (["--task", "pope", "--data", ""], "--data is empty"),
    (["--task", "pope", "-T", "data=5"], "option 'data' expects str"),
    (["--task", "pope,pope"], "lists 'pope' twice"),
    (["--task", "pope,mme", "-T", "ocr=True"], "no task in --task (pope, mme) has option 'ocr'"),
    (["--task", "pope", "--data", "/nowhere/at/all"], "does not exist"),
])
def test_bad_task_input_is_one_error_line(args, fragment):
    result = invoke("compare", "fastv", *args, *FAST)
    assert result.exit_code == 2
    assert fragment in result.output and "Traceback" not in result.output
