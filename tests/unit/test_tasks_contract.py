"""Every benchmark task against the task contract, offline, on its fixture (a few rows in the real hub schema): each
loads from every local form --data accepts, passes tokenbench.testing.check_task, and versions follow the data."""

from __future__ import annotations

import os

import pytest

from task_fixtures import FIXTURES, write
from tokenbench.api import TASKS
from tokenbench.errors import ConfigError
from tokenbench.harness.resolve import build_task
from tokenbench.testing import check_task, write_task_data

BENCHMARKS = sorted(n for n in TASKS.names() if n != "synthetic")
ISSUE_TASKS = ("pope", "mme", "textvqa", "okvqa", "vizwiz_vqa", "vqav2", "gqa", "scienceqa_img", "ai2d", "mmbench_en",
               "seedbench", "realworldqa", "coco_cap", "nocaps")


def test_every_task_of_the_suite_is_registered_with_a_fixture():
    missing = [t for t in ISSUE_TASKS if t not in TASKS.names()]
    assert not missing, f"not registered: {missing}"
    assert not [t for t in BENCHMARKS if t not in FIXTURES], "every benchmark task needs a fixture"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Each fixture written once in every local form, on first use: task -> {form: path}."""
    cache: dict = {}

    def get(name):
        if name not in cache:
            cache[name] = write(name, str(tmp_path_factory.mktemp(name)))
        return cache[name]

    return get


@pytest.mark.parametrize("name", BENCHMARKS)
def test_contract_on_the_fixture(name, written):
    check_task(name, {"data": written(name)["save_to_disk"]})


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_local_form_gives_the_same_samples(name, written):
    def view(path):
        task = build_task(name, {"data": path}, seed=0)
        return [(s.id, s.question, repr(s.answer), None if s.image is None else tuple(s.image.size))
                for s in task.samples()]

    forms = written(name)
    first = view(forms["save_to_disk"])
    assert first
    for form, path in forms.items():
        assert view(path) == first, f"{name}: --data as {form} differs from save_to_disk"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_images_decode_to_rgb(name, written):
    from tokenbench.contract.task import as_pil

    task = build_task(name, {"data": written(name)["save_to_disk"]}, seed=0)
    s = next(s for s in task.samples() if s.image is not None)
    image = as_pil(s.image)
    assert image.mode == "RGB" and image.size == tuple(s.image.size)


def test_version_follows_the_data_and_the_options(tmp_path):
    name = "pope"
    data = FIXTURES[name]()
    a = write_task_data(data, str(tmp_path / "a"), forms=("save_to_disk",))["save_to_disk"]
    b = write_task_data(data.select(range(len(data) - 1)), str(tmp_path / "b"), forms=("save_to_disk",))["save_to_disk"]

    def version(path):
        task = build_task(name, {"data": path}, seed=0)
        task.samples()
        return task.version

    assert version(a) == version(a)
    assert version(a) != version(b)  # other data, other version: rows of the two are never mixed


def test_task_options_are_typed():
    with pytest.raises(ConfigError, match=r"task 'pope' option 'data' expects str, got 5 .*Example: -T data=text"):
        build_task("pope", {"data": 5}, seed=0)
    with pytest.raises(ConfigError, match="task 'synthetic' option 'n' expects int, got 'abc'"):
        build_task("synthetic", {"n": "abc"}, seed=0)
    with pytest.raises(ConfigError, match="has no option 'dat'. Did you mean 'data'"):
        build_task("pope", {"dat": "x"}, seed=0)


def test_missing_data_says_where_it_looked_and_how_to_point_at_a_copy(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # both libraries read these once, at import, which an earlier test may have done: without this the hub is tried
    # over the network, with retries (47 s before the error on a machine without it)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    task = build_task("pope", {}, seed=0)
    with pytest.raises(ConfigError) as err:
        task.samples(2)
    msg = str(err.value)
    assert "lmms-lab-encoder/POPE" in msg and "lmms-lab/POPE" in msg and "--data" in msg
    with pytest.raises(ConfigError, match="does not exist"):
        build_task("pope", {"data": str(tmp_path / "nowhere")}, seed=0).samples(2)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file")
    with pytest.raises(ConfigError, match="could not be read"):
        build_task("pope", {"data": str(junk)}, seed=0).samples(2)


def test_a_corrupt_or_missing_image_is_one_failed_sample(tmp_path):
    data = FIXTURES["pope"]()
    paths = write_task_data(data, str(tmp_path), forms=("jsonl",))
    images = sorted(os.listdir(tmp_path / "images"))
    (tmp_path / "images" / images[0]).write_bytes(b"\x89PNG broken")
    os.remove(tmp_path / "images" / images[1])
    samples = build_task("pope", {"data": paths["jsonl"]}, seed=0).samples()
    bad = [s for s in samples if s.image is None]
    assert len(bad) == 2 and len(samples) == len(data)
    assert "cannot be decoded" in bad[0].meta["error"] and "does not exist" in bad[1].meta["error"]


def test_the_checkpoints_chat_template_is_used_when_its_processor_ships_one():
    from tokenbench.api import MODELS

    adapter = MODELS.get("tiny-llava")()
    adapter.load("cpu", "float32", "sdpa")
    assert adapter.chat("Is it red?") == adapter.prompt("Is it red?")  # no template shipped: the preset
    adapter.processor.chat_template = ("{% for m in messages %}<<{% for c in m['content'] %}{% if c['type'] == 'image' %}"
                                       "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}>>{% endfor %}"
                                       "{% if add_generation_prompt %}ANSWER:{% endif %}")
    assert adapter.chat("Is it red?") == "<<<image>Is it red?>>ANSWER:"


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI installs lmms-eval (the README's test command); elsewhere "
                                                     "the comparisons with it skip when it is absent")
def test_ci_can_import_lmms_eval_so_the_comparisons_with_it_run():
    import importlib

    for module in ("pope", "mme", "gqa", "textvqa", "ok_vqa", "vizwiz_vqa", "vqav2", "scienceqa", "ai2d", "seedbench",
                   "realworldqa", "coco_cap", "nocaps"):
        importlib.import_module(f"lmms_eval.tasks.{module}.utils")
    importlib.import_module("lmms_eval.tasks.mmbench.en_utils")
