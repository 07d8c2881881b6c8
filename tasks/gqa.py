"""The ``gqa`` task: GQA test-dev balanced, compositional questions about real images, scored by lmms-eval's exact
match (ignore case, ignore punctuation).

Data: two configs of ``lmms-lab-encoder/GQA`` (then ``lmms-lab/GQA``), split ``testdev`` of each, joined as
lmms-eval's ``gqa_process_docs`` joins them:

- questions: config ``testdev_balanced_instructions`` (12,578 rows). Columns read: ``id`` (string, the question id),
  ``imageId`` (string), ``question`` (string), ``answer`` (string); ``types`` (struct of ``structural``/``semantic``/
  ``detailed`` strings) is kept in ``meta`` when present. The hub table has more columns (``fullAnswer``,
  ``isBalanced``, ``groups``, ``entailed``, ``equivalent``, ``annotations``, ``semantic``, ``semanticStr``), not
  read;
- images: config ``testdev_balanced_images`` (398 rows). Columns read: ``id`` (string, matched with ``imageId``) and
  ``image`` (image).

A local copy (``--data DIR``) is one of:

- ``DIR`` holding the two parts side by side, each in any form ``--data`` accepts (:mod:`tokenbench.data.hub`): the
  questions as ``DIR/instructions.parquet``, ``.jsonl``, ``.json`` or ``DIR/instructions`` (a ``save_to_disk``
  directory or a folder of parquet files), the images likewise as ``DIR/images...`` (the first of these names that
  exists is taken; a jsonl's image paths are relative to ``DIR``).
  ``DatasetDict({"instructions": ..., "images": ...}).save_to_disk(DIR)`` writes this layout. The hub repository's
  folder names ``DIR/testdev_balanced_instructions`` and ``DIR/testdev_balanced_images`` are accepted too, so a
  partial download of the hub repository is such a ``DIR``:
  ``huggingface-cli download --repo-type dataset lmms-lab-encoder/GQA --include 'testdev_balanced_*'
  --local-dir DIR`` (a full copy works as well; its README is not read);
- the questions alone in any ``--data`` form, with the option ``images=PATH`` (``-T images=PATH``) giving the images
  in any ``--data`` form (or a directory holding an images part as above). ``images`` also overrides the images of
  the layout above, and with no ``--data`` the questions come from the hub.

Sample: ``id`` is the question ``id``; ``question`` the question as stored (lmms-eval does not strip it); ``answer``
the gold answer; ``meta`` holds ``image_id`` and, when present, ``structural``/``semantic``/``detailed`` (the
question's types). A question whose ``imageId`` is not among the images gives a sample with no image and
``meta["error"]`` saying so.

Prompt (lmms-eval ``gqa.yaml``, ``gqa_doc_to_text``): ``<question>\\nAnswer the question using a single word or
phrase.`` for every model family here (the yaml's other prompt is for ``qwen_vl``, not Qwen2.5-VL).

Generation: 16 new tokens (lmms-eval's value).

Scoring (:mod:`tokenbench.data.scoring.exact`, following ``lmms_eval/api/metrics.py`` ``exact_match_hf_evaluate`` and the
answer stripping of ``lmms_eval/api/task.py``): the stripped answer and the gold, both lower-cased and rid of ASCII
punctuation, must be equal. Metric: ``accuracy`` (lmms-eval's ``exact_match``), the mean of the per-sample 0/1
scores; primary ``accuracy``. Nothing is ever ``unparsed``.

Differences from lmms-eval: none in prompt, generation length or scoring. lmms-eval decodes every image up front and
stops if an ``imageId`` is missing; here images are read per sample and a missing one fails that sample only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tokenbench.api import register_task
from tokenbench.errors import ConfigError
from tokenbench.data.hub import DatasetTask, load_rows, read_image
from tokenbench.data.scoring.exact import exact_match
from tokenbench.contract.task import Sample

IMAGES_CONFIG = "testdev_balanced_images"
#: the two parts of a local copy: our names and the hub repository's folder names
PARTS = {"instructions": ("instructions", "testdev_balanced_instructions"), "images": ("images", IMAGES_CONFIG)}
_PART_SUFFIXES = (".parquet", ".jsonl", ".json", "")


def find_part(directory: str, part: str) -> str | None:
    """The first of ``DIR/<name>.parquet``, ``.jsonl``, ``.json``, ``DIR/<name>`` that exists, for ``<name>`` our
    part name then the hub's folder name (``testdev_balanced_<part>``), or None."""
    if not os.path.isdir(directory):
        return None
    for name in PARTS[part]:
        for suffix in _PART_SUFFIXES:
            path = os.path.join(directory, name + suffix)
            if os.path.exists(path):
                return path
    return None


@register_task("gqa")
@dataclass
class GqaTask(DatasetTask):
    """GQA test-dev balanced questions; exact match ignoring case and punctuation, as lmms-eval."""

    name = "gqa"
    dataset_name = "GQA"
    config = "testdev_balanced_instructions"
    split = "testdev"
    image_column = "image"
    prompts = {"default": ("", "\nAnswer the question using a single word or phrase.")}
    max_new_tokens = 16
    primary_metric = "accuracy"
    percent = True
    scoring_version = "1"

    images: str = ""  # the images (config testdev_balanced_images) in any --data form; empty: as --data says

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.images, str):
            raise ConfigError(f"task 'gqa' option 'images' must be a path (string), got {self.images!r}: give the "
                              f"images data ({IMAGES_CONFIG}) in any form --data accepts")

    # -- loading -------------------------------------------------------------------------------------------------------
    def _sources(self) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
        """((questions path, config), (images path, config)); a path of "" means the hub, where the configs apply;
        a local part is read with no config."""
        questions: tuple[str, str | None] = ("", self.config)
        images: tuple[str, str | None] | None = ("", IMAGES_CONFIG)
        if self.data:
            root = os.path.abspath(os.path.expanduser(self.data))
            part = find_part(root, "instructions")
            if part:  # the two parts side by side
                questions = (part, None)
                found = find_part(root, "images")
                images = (found, None) if found else None
            else:  # the questions alone, in any --data form
                questions = (self.data, None)
                if os.path.exists(root):  # (a path that does not exist: load_rows says so first)
                    images = None
        if self.images:
            path = os.path.abspath(os.path.expanduser(self.images))
            images = (find_part(path, "images") or self.images, None)
        if images is None:
            raise ConfigError(
                f"task 'gqa': --data {self.data!r} has the questions but not the images ({IMAGES_CONFIG}: columns "
                f"id, image): put them beside the questions as DIR/images (a save_to_disk directory or a folder of "
                "parquet files) or DIR/images.parquet / .jsonl, or give them with -T images=PATH")
        return questions, images

    def rows(self):
        """The questions as a ``datasets.Dataset``; the images are loaded beside them and indexed by ``id``."""
        if getattr(self, "_rows", None) is None:
            (q_path, q_config), (i_path, i_config) = self._sources()
            ids = self.dataset_ids()
            questions, base = load_rows(self.name, ids, q_config, self.split, q_path, self.revision)
            images, images_base = load_rows(self.name, ids, i_config, self.split, i_path, self.revision)
            missing = [c for c in ("id", self.image_column) if c not in images.column_names]
            if missing:
                raise ConfigError(
                    f"task 'gqa': the images data has no column {missing[0]!r} (columns: "
                    f"{', '.join(images.column_names)}); it must have the schema of {ids[0]} ({IMAGES_CONFIG}): "
                    "id (string), image (image)")
            index: dict[str, int] = {}
            for i, image_id in enumerate(images["id"]):
                index.setdefault(str(image_id), i)
            self._images, self._images_base, self._image_index = images, images_base, index
            self._rows, self._base = questions, base
            self._fingerprint = "+".join(getattr(d, "_fingerprint", "") or "" for d in (questions, images))
        return self._rows

    def image_of(self, row: dict, base: str):
        """The image whose ``id`` is the row's ``imageId`` (``base`` is the questions' directory, unused)."""
        image_id = str(row.get("imageId"))
        i = self._image_index.get(image_id)
        if i is None:
            return None, f"no image with id {image_id!r} in the images data ({IMAGES_CONFIG})"
        return read_image(self._images[i][self.image_column], self._images_base)

    def required_columns(self) -> tuple[str, ...]:
        return ("id", "imageId", "question", "answer")

    def row_sample(self, row: dict, index: int) -> Sample:
        meta = {"image_id": str(row["imageId"])}
        types = row.get("types")
        if isinstance(types, dict):
            meta.update({k: types[k] for k in ("structural", "semantic", "detailed") if types.get(k) is not None})
        return Sample(id=str(row["id"]), image=None, question=str(row["question"]), answer=str(row["answer"]),
                      meta=meta)

    # -- scoring -------------------------------------------------------------------------------------------------------
    def score(self, sample: Sample, prediction: str) -> float:
        return float(exact_match(prediction, sample.answer))
