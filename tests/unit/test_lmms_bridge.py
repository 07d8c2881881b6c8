"""tokenbench inside lmms-eval (tokenbench/lmms.py), offline: lmms-eval's own CLI runs ``--model tokenbench`` on a
local yaml task built here from the synthetic task's samples, and its answers equal the samples ``tokenbench compare``
stores for the same model, method, budget and batch size; ``method=full`` equals the unreduced model's; under
``accelerate launch`` with 2 CPU processes too."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install --no-deps lmms-eval==0.7.3)")

N, BATCH, KEEP = 6, 2, 64

UTILS = '''
from PIL import Image

from tokenbench.contract.task import normalize_answer


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(normalize_answer(results[0]) == normalize_answer(doc["answer"]))}
'''


@pytest.fixture(scope="module")
def local_task(tmp_path_factory):
    """A local lmms-eval task over the synthetic task's first N samples for a model: PNG images (lossless, the same
    pixels), questions as tokenbench prompts them for the model's family, gold answers."""
    from tokenbench.harness.resolve import build_task, resolve_model

    made = {}

    def make(model: str):
        family = resolve_model(model).family
        if family in made:
            return made[family]
        root = made[family] = tmp_path_factory.mktemp(f"lmms-task-{family}")
        task = build_task("synthetic", {"n": N}, seed=0)
        with open(root / "data.jsonl", "w") as f:
            for i, s in enumerate(task.samples()):
                s.image.save(root / f"{i}.png")
                f.write(json.dumps({"id": s.id, "image": str(root / f"{i}.png"), "question": task.prompt(s, family),
                                    "answer": s.answer}) + "\n")
        (root / "utils.py").write_text(UTILS)
        (root / "tb_local.yaml").write_text(textwrap.dedent(f"""\
            task: tb_local
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {root / "data.jsonl"}
            test_split: test
            output_type: generate_until
            doc_to_visual: !function utils.doc_to_visual
            doc_to_text: !function utils.doc_to_text
            doc_to_target: answer
            generation_kwargs:
              max_new_tokens: {task.max_new_tokens}
              until: ["</never>"]
              do_sample: false
            process_results: !function utils.process_results
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
            """))
        return root

    return make


def lmms_eval(task_dir, out, model_args: str, processes: int = 1) -> tuple[dict[int, str], float]:
    """lmms-eval's CLI on the local task (under ``accelerate launch`` with ``processes`` > 1: torchrun, gloo on CPU):
    ({doc id: answer}, its exact_match)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(out.parent / "hf"), "PYTHONWARNINGS": "ignore"}
    launcher = []
    if processes > 1:
        import socket

        with socket.socket() as free:  # a port of our own: other tests may launch at the same time
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        launcher = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(port)]
    proc = subprocess.run(
        [sys.executable, *launcher, "-m", "lmms_eval", "--model", "tokenbench", "--model_args", model_args, "--tasks", "tb_local",
         "--include_path", str(task_dir), "--batch_size", str(BATCH), "--device", "cpu", "--log_samples",
         "--output_path", str(out)],
        cwd=out.parent, env=env, capture_output=True, text=True, timeout=600, check=False)
    files = sorted(glob.glob(str(out / "**" / "*.json*"), recursive=True))  # an error still exits 0: no files then
    assert proc.returncode == 0 and len(files) == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    results, samples = files  # <time>_results.json, <time>_samples_tb_local.jsonl
    with open(samples) as f:
        docs = [json.loads(line) for line in f]
    with open(results) as f:
        score = json.load(f)["results"]["tb_local"]["exact_match,none"]
    return {d["doc_id"]: d["filtered_resps"] for d in docs}, score


@pytest.fixture(scope="module")
def tokenbench_run(tmp_path_factory):
    """``tokenbench compare fastv --keep K --batch-size 2`` on the same samples: its rows and each method's stored
    answers by sample index."""
    from tokenbench.budgets import Budget
    from tokenbench.harness.compare import RunSpec, compare
    from tokenbench.results.store import Store

    done = {}

    def run(model: str, keep: int):
        if (model, keep) in done:
            return done[model, keep]
        path = str(tmp_path_factory.mktemp("store") / "runs.sqlite")
        rows = compare(RunSpec(methods=(("fastv", {}),), model=model, task="synthetic", task_options={"n": N},
                               budgets=(Budget(keep=keep),), batch_size=BATCH, warmup=0, repeats=1, store=path),
                       progress=False)
        store = Store(path)
        [stored_run] = store.runs()
        answers: dict[str, dict[int, str]] = {}
        for _, spec, sid, rec in store.cell_records(stored_run["cells"]):
            answers.setdefault(spec["method"]["name"], {})[int(sid.rsplit("-", 1)[1])] = rec["answer"]
        store.close()
        done[model, keep] = {r["method"]: r for r in rows}, answers
        return done[model, keep]

    return run


# tiny-llava (random weights: 576 visual tokens, byte-level answers) as the command; mini-llava (trained: 144
# tokens, real answers) so that the scores say something: full gets all 6 right, FastV at 16 (4 after its layer, in
# the data-parallel test below) 5
@pytest.mark.parametrize(("model", "method", "keep"), [("tiny-llava", "fastv", 64), ("mini-llava", "full", 16)])
def test_lmms_eval_answers_equal_tokenbench_compare(local_task, tokenbench_run, tmp_path, model, method, keep):
    rows, stored = tokenbench_run(model, keep)
    answers, score = lmms_eval(local_task(model), tmp_path / "out", f"model={model},method={method},keep={keep}")
    assert sorted(answers) == list(range(N))
    assert answers == stored[method]  # sample by sample, the same text
    assert score == pytest.approx(rows[method]["score"])
    if method == "fastv":  # the method really ran: its answers are not full's on every sample
        assert answers != stored["full"]
    if model == "mini-llava":
        assert score == 1.0


def test_lmms_eval_data_parallel_over_two_processes(local_task, tokenbench_run, tmp_path):
    """``accelerate launch -m lmms_eval`` with 2 processes: lmms-eval shards the docs by rank (0, 2, 4 and 1, 3, 5,
    so the batches are not compare's) and merges them; every answer and the score are still compare's."""
    rows, stored = tokenbench_run("mini-llava", 16)
    answers, score = lmms_eval(local_task("mini-llava"), tmp_path / "out", "model=mini-llava,method=fastv,keep=16",
                               processes=2)
    assert answers == stored["fastv"] != stored["full"]
    assert score == pytest.approx(rows["fastv"]["score"]) == 5 / 6


def test_model_args_are_checked_before_any_request():
    from lmms_eval.models import get_model

    from tokenbench.errors import ConfigError

    cls = get_model("tokenbench")  # found through the entry point
    m = cls.create_from_arg_string("model=tiny-llava,method=pdrop,keep_ratio=0.25,pdrop.layers=[1,3],match=nominal",
                                   {"batch_size": "4", "max_batch_size": None, "device": "cpu"})
    assert (m.method.layers, m.budget.ratio, m.convention.kind, m.batch_size) == ((1, 3), 0.25, "nominal", 4)
    for args, words in [
        ("model=tiny-llava,method=fastv,lyer=1", "Did you mean 'layer'"),
        ("model=tiny-llava,method=fastv,keep=9999", "out of range"),
        ("model=tiny-llava,method=fastv,match=flops=alvts", "matched or nominal"),
        ("model=tiny-llava,method=fastv,layer=x", "expects int"),
    ]:
        with pytest.raises(ConfigError, match=words):
            cls.create_from_arg_string(args, {"batch_size": 1})
    with pytest.raises(ConfigError, match="loglikelihood"):
        m.loglikelihood([])


def test_requests_the_bridge_cannot_run_are_refused():
    from tokenbench.errors import ConfigError
    from tokenbench.integrations.lmms import TokenBench, cut_at, generation_settings

    assert cut_at(" yes\n\nno", ["\n\n"]) == "yes" and cut_at("a.b", ".") == "a"
    assert generation_settings({"until": "\n", "max_new_tokens": 7}) == (7, ("\n",))
    with pytest.raises(ConfigError, match="greedily"):
        generation_settings({"do_sample": True, "temperature": 0.7})
    with pytest.raises(ConfigError, match="num_beams=4"):
        generation_settings({"num_beams": 4})
    for visuals in ([], ["clip.mp4"]):
        with pytest.raises(ConfigError, match="one image per request"):
            TokenBench.sample("q", lambda doc, v=visuals: v, {}, "t", "test", 0)
