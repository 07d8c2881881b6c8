"""A checkpoint whose processor does not resize (``do_resize: false``, a model trained on one image size) given images
of another size: one ``error:`` line before any compute that says what does not fit and what to do, not a traceback."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from tokenbench.cli import main
from tokenbench.models.llava import MINI_LLAVA


def _no_resize_copy(tmp_path):
    d = tmp_path / "mini-no-resize"
    shutil.copytree(MINI_LLAVA, d, ignore=shutil.ignore_patterns("calibration"))
    cfg = json.loads((d / "processor_config.json").read_text())
    cfg["image_processor"]["do_resize"] = False
    (d / "processor_config.json").write_text(json.dumps(cfg))
    return d


def test_images_the_processor_cannot_resize_are_one_clear_error(tmp_path):
    d = _no_resize_copy(tmp_path)
    out = CliRunner().invoke(main, ["compare", "random", "-M", f"llava:{d}", "-n", "2", "--no-store", "-q",
                                    "-T", "image_size=192", "-T", "grid=6"])
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.output
    assert "does not resize images (do_resize: false" in out.output and "192x192" in out.output
    assert "336x336" in out.output and "bug" not in out.output and "Traceback" not in out.output


def test_images_of_the_towers_size_still_run(tmp_path):
    d = _no_resize_copy(tmp_path)
    out = CliRunner().invoke(main, ["compare", "random", "-M", f"llava:{d}", "-n", "2", "--no-store", "-q",
                                    "--repeats", "1", "--warmup", "0"])
    assert out.exit_code == 0, out.output
    assert "| random" in out.output


def test_a_token_count_the_config_does_not_expect_names_the_processor(adapter_factory):
    import pytest

    from tokenbench.errors import ConfigError
    from tokenbench.testing import synthetic_samples

    adapter = adapter_factory("tiny-llava")
    batch = adapter.encode(synthetic_samples(1))
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"].bool()
    visual = ids == adapter.model.config.image_token_id
    visual[:, visual.nonzero()[0, 1]] = False  # one image token short of the layout
    with pytest.raises(ConfigError, match=r"gave \[575\] visual tokens, where the model's config expects 576"):
        adapter._tokens(synthetic_samples(1), ids, mask, visual, batch.layout)
