"""Tasks over real benchmark datasets: loading with the ``datasets`` library, from the hub or a local copy.

A :class:`DatasetTask` names its dataset ids (lmms-eval's: ``lmms-lab-encoder/X`` since 2026-07-30, ``lmms-lab/X``
before; both are tried in that order), its config and split, and turns each row into a :class:`~tokenbench.contract.task.Sample`
(:meth:`DatasetTask.row_sample`). The option ``data`` (``--data PATH`` on the command line) points at a local copy
instead of the hub:

- a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (the task's split is taken from a
  ``DatasetDict``);
- a directory holding a copy of the hub repository (``huggingface-cli download --repo-type dataset <id>``), or any
  folder of parquet or jsonl files: loaded with ``load_dataset(PATH, <config>, split=<split>)``;
- one ``.parquet`` file, or one ``.jsonl``/``.json`` file whose image column holds paths relative to the file's own
  directory (or absolute), e.g. ``{"question_id": 1, "image": "images/1.jpg", ...}``.

Every form must have the columns of the hub dataset (the task's docstring lists them). Images are decoded here, one
sample at a time: an image that is missing or cannot be decoded gives a sample with ``image=None`` and the reason in
``meta["error"]``; the harness leaves it out of every method's run and counts it as failed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from tokenbench.errors import ConfigError
from tokenbench.contract.task import ImageRef, Sample, Task

#: lmms-eval's dataset namespaces, newest first (lmms-eval PR #1416 moved them on 2026-07-30)
NAMESPACES = ("lmms-lab-encoder", "lmms-lab")

LOCAL_FORMS = ("a directory written by save_to_disk, a copy of the hub repository, a folder of parquet or jsonl files, "
               "or one .parquet/.jsonl file with its images")


def load_rows(task: str, ids: tuple[str, ...], config: str | None, split: str, data: str = "", revision: str = ""):
    """``(dataset, image base directory)``: the split as a ``datasets.Dataset`` (images not decoded), from ``data``
    when given, else from the first of ``ids`` that loads; relative image paths start at the base directory. Raises :class:`ConfigError` with where it looked and how to point at a local copy."""
    import datasets
    import huggingface_hub

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()  # a failed id is reported once, in the error below, not as retry noise
    huggingface_hub.utils.logging.set_verbosity_error()
    if data:
        return _load_local(task, data, config, split)

    tried = []
    for dataset_id in ids:
        try:
            kw = {"revision": revision} if revision else {}
            ds = datasets.load_dataset(dataset_id, config, split=split, **kw)
        except Exception as exc:  # noqa: BLE001 - any failure means: try the next id, then report them all
            tried.append(f"{dataset_id} ({_first_line(exc)})")
            continue
        return _undecoded(ds), ""
    raise ConfigError(
        f"task {task!r}: its data could not be loaded; tried {'; '.join(tried)}. Download it where the hub is "
        f"reachable (e.g. `huggingface-cli download --repo-type dataset {ids[0]} --local-dir DIR`, or "
        f"`datasets.load_dataset(...).save_to_disk(DIR)`) and pass --data DIR ({LOCAL_FORMS})"
    )


def _load_local(task: str, data: str, config: str | None, split: str):

    path = os.path.abspath(os.path.expanduser(data))
    if not os.path.exists(path):
        raise ConfigError(f"task {task!r}: --data {data!r} does not exist; give {LOCAL_FORMS}")
    base = path if os.path.isdir(path) else os.path.dirname(path)
    return _read_local(task, data, path, config, split), base


def _read_local(task: str, data: str, path: str, config: str | None, split: str):
    import datasets

    ext = os.path.splitext(path)[1].lower()
    try:
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "dataset_dict.json")):
            dd = datasets.load_from_disk(path)
            if split not in dd:
                if len(dd) != 1:
                    raise ConfigError(f"task {task!r}: --data {data!r} has splits {', '.join(dd)}, not {split!r}; "
                                      f"save the {split!r} split")
                split = next(iter(dd))
            return _undecoded(dd[split])
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "state.json")):
            return _undecoded(datasets.load_from_disk(path))
        if os.path.isdir(path):
            return _undecoded(_load_folder(path, config, split))
        if ext == ".parquet":
            return _undecoded(datasets.load_dataset("parquet", data_files=path, split="train"))
        if ext in (".jsonl", ".json"):
            return _undecoded(datasets.load_dataset("json", data_files=path, split="train"))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line naming it
        raise ConfigError(f"task {task!r}: --data {data!r} could not be read: {_first_line(exc)}; give "
                          f"{LOCAL_FORMS}") from exc
    raise ConfigError(f"task {task!r}: --data {data!r} is a {ext or 'extension-less'} file; give {LOCAL_FORMS}")


def _load_folder(path: str, config: str | None, split: str):
    """A hub-repository copy (configs in its README) or a plain folder of parquet/jsonl files (one split, whatever
    its files are called: taken when the task's split is not there).

    The folder's files are resolved by ``datasets`` (configs, splits, shards) and then loaded by their absolute paths
    with the packaged builder (``parquet``, ``json``, ...): ``datasets`` caches a folder loaded as a whole under the
    folder's name, so two copies in folders of the same name would otherwise read each other's cache."""
    import datasets

    last: Exception | None = None
    for cfg in dict.fromkeys([config, None]):  # the task's config; a plain folder has none
        try:
            builder = datasets.load_dataset_builder(path, cfg)
        except ValueError as exc:  # no such config here
            last = exc
            continue
        files = builder.config.data_files or {}
        if split not in files:
            if len(files) != 1:
                raise ConfigError(f"the folder has splits {', '.join(files) or '(none)'}, not {split!r}; give the "
                                  f"{split!r} split's files (or the folder of that split)")
            split = next(iter(files))
        kind = type(builder).__module__.rsplit(".", 1)[-1]  # the packaged builder: parquet, json, csv, ...
        return datasets.load_dataset(kind, data_files=list(files[split]), split="train")
    raise last if last else ValueError("no data files found")


def _undecoded(ds):
    """``ds`` with every image column left as bytes/paths, so that one bad image is one failed sample."""
    import datasets

    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, (datasets.Sequence, datasets.List)) and isinstance(
                getattr(feature, "feature", None), datasets.Image):
            ds = ds.cast_column(name, type(feature)(datasets.Image(decode=False)))
    return ds


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_image(value: Any, base: str = ""):
    """``(PIL RGB image, None)`` or ``(None, reason)`` for an image cell: a PIL image, ``{"bytes", "path"}`` as the
    ``Image`` feature stores it, or a path (relative to ``base``)."""
    from PIL import Image

    try:
        if value is None:
            return None, "no image"
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes"):
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, (dict, str)):
            p = value.get("path") if isinstance(value, dict) else value
            if not p:
                return None, "no image"
            p = p if os.path.isabs(p) else os.path.join(base, p)
            if not os.path.isfile(p):
                return None, f"image file {p!r} does not exist"
            image = Image.open(p)
        else:
            return None, f"image cell of type {type(value).__name__} is not an image"
        image.load()
        return image.convert("RGB"), None
    except Exception as exc:  # noqa: BLE001 - a corrupt image is a failed sample, not a failed run
        return None, f"image cannot be decoded ({_first_line(exc)})"


@dataclass
class DatasetTask(Task):
    """A task over one split of a hub dataset. Subclasses set the class attributes and implement :meth:`row_sample`.

    Options common to every dataset task: ``data`` (a local copy, see the module docstring) and ``revision`` (the
    dataset's hub revision)."""

    dataset_name: ClassVar[str] = ""  # e.g. "POPE": tried as lmms-lab-encoder/POPE, then lmms-lab/POPE
    config: ClassVar[str | None] = None  # the dataset config (e.g. "Full"), None for the default
    split: ClassVar[str] = "test"
    image_column: ClassVar[str] = "image"
    #: (pre_prompt, post_prompt) per lmms-eval model name, "default" for every other: lmms-eval's task yaml
    prompts: ClassVar[dict[str, tuple[str, str]]] = {"default": ("", "\nAnswer the question using a single word or phrase.")}
    #: bump when the scoring changes (the version also hashes the prompts and the data's fingerprint)
    scoring_version: ClassVar[str] = "1"

    data: str = ""  # a local copy of the dataset (see tokenbench.data.hub); empty: the hub
    revision: str = ""  # the dataset's hub revision (a tag, branch or commit); empty: the default branch

    def __post_init__(self) -> None:
        for f in ("data", "revision"):
            if not isinstance(getattr(self, f), str):
                raise ConfigError(f"task {self.name!r} option {f!r} must be a string, got {getattr(self, f)!r}")
        self._fingerprint = ""

    def dataset_ids(self) -> tuple[str, ...]:
        """The hub ids tried, in order: ``lmms-lab-encoder/<dataset_name>``, then ``lmms-lab/<dataset_name>`` (an
        option may choose another ``dataset_name`` by setting it on the instance)."""
        return tuple(f"{ns}/{self.dataset_name}" for ns in NAMESPACES)

    @classmethod
    def default_dataset(cls) -> str:
        """The default dataset in words, for ``tokenbench list tasks``: id, config and split."""
        return f"{NAMESPACES[0]}/{cls.dataset_name}" + (f" ({cls.config})" if cls.config else "") + f" [{cls.split}]"

    # -- loading -------------------------------------------------------------------------------------------------------
    def rows(self):
        """The split as a ``datasets.Dataset`` with undecoded images (loaded once per task object)."""
        if getattr(self, "_rows", None) is None:
            self._rows, self._base = load_rows(self.name, self.dataset_ids(), self.config, self.split, self.data, self.revision)
            self._fingerprint = getattr(self._rows, "_fingerprint", "") or ""
        return self._rows

    def samples(self, limit: int | None = None) -> list[Sample]:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a positive integer or None (the whole split), got {limit!r}")
        ds = self.rows()
        missing = [c for c in self.required_columns() if c not in ds.column_names]
        if missing:
            raise ConfigError(
                f"task {self.name!r}: the data has no column {missing[0]!r} (columns: {', '.join(ds.column_names)}); "
                f"it must have the schema of {self.dataset_ids()[0]} (see `tokenbench list tasks` and the task's "
                "docstring)"
            )
        base = self._base
        n = len(ds) if limit is None else min(limit, len(ds))
        out = []
        for i in range(n):
            row = ds[i]
            image, error = self.image_of(row, base)  # decoded once here: a corrupt image is found before any run
            sample = self.row_sample(row, i)
            meta = {**sample.meta, "error": error} if error else sample.meta
            ref = None if error else ImageRef(functools.partial(self._reopen, i), image.size)
            out.append(Sample(sample.id, ref, sample.question, sample.answer, meta))
        return distinct_ids(out)

    def _reopen(self, index: int):
        image, error = self.image_of(self.rows()[index], self._base)
        if error:
            raise RuntimeError(f"task {self.name!r}: the image of row {index} could be read before and not now: {error}")
        return image

    def image_of(self, row: dict, base: str):
        """(image, None) or (None, reason) for ``row``'s image."""
        return read_image(row.get(self.image_column), base)

    def required_columns(self) -> tuple[str, ...]:
        """The columns :meth:`row_sample` reads (checked before any row is read)."""
        return (self.image_column,)

    def row_sample(self, row: dict, index: int) -> Sample:
        """The sample of one row (its ``image`` is filled in by :meth:`samples`: an :class:`~tokenbench.contract.task.ImageRef`
        read from the dataset again whenever a batch is encoded)."""
        raise NotImplementedError

    # -- prompting -----------------------------------------------------------------------------------------------------
    def prompt_parts(self, family: str) -> tuple[str, str]:
        """(pre_prompt, post_prompt) lmms-eval uses for ``family``'s lmms-eval model (the one its adapter class
        declares, :attr:`~tokenbench.contract.model.ModelInterface.lmms_eval_model`), else its default. A family no
        adapter declares is refused (:func:`~tokenbench.contract.model.model_family`)."""
        from tokenbench.contract.model import model_family

        return self.prompts.get(model_family(family).lmms_eval_model, self.prompts["default"])

    def prompt(self, sample: Sample, family: str) -> str:
        pre, post = self.prompt_parts(family)
        return f"{pre}{sample.question}{post}"

    # -- versioning ----------------------------------------------------------------------------------------------------
    @property
    def version(self) -> str:  # type: ignore[override]
        """``<scoring_version>-<hash>``: the hash covers the prompts, the generation length, the options, the dataset
        and its fingerprint (known once loaded), so a change of any of them gives another version."""
        key = json.dumps({"prompts": self.prompts, "scoring": self.scoring_version, "max_new_tokens": self.max_new_tokens,
                          "dataset": [self.dataset_ids(), self.config, self.split, self.revision],
                          "options": self.version_options(), "data": getattr(self, "_fingerprint", "")},
                         sort_keys=True, default=str)
        return f"{self.scoring_version}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def version_options(self) -> dict[str, Any]:
        """The options that change the prompts, the samples or the scoring (all but ``data`` and ``revision``, which
        the data's fingerprint and the dataset key cover)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.init and f.name not in ("data", "revision")}


def distinct_ids(samples: list[Sample]) -> list[Sample]:
    """``samples`` with each id met before in the list suffixed ``#k`` (its k-th occurrence), so ids are unique (MME
    gives an image's two questions one ``question_id``); an id depends only on the rows before it, so it is the same
    whatever ``limit`` is."""
    seen: dict[str, int] = {}
    out = []
    for sample in samples:
        k = seen[sample.id] = seen.get(sample.id, 0) + 1
        out.append(sample if k == 1 else dataclasses.replace(sample, id=f"{sample.id}#{k}"))
    return out
