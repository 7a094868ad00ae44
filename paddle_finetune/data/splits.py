"""Which data a run reads: the user's, or (only when the user names none) the built-in sample; the dev split
held out of the training rows (dev_size); the max_*_samples caps; and the log line naming every split's source.

Imports: the standard library, numpy inside; of the project `errors`, `paths`, `data.examples` and
`data.named`.
"""
import os

from paddle_finetune.data.examples import read_examples
from paddle_finetune.data.named import dataset_columns, load_named_dataset
from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.paths import DATASETS_DIR


def truncate(examples, max_samples):
    """HF-style max_*_samples cap; a non-positive cap means all."""
    return examples[:max_samples] if max_samples and max_samples > 0 else examples

SPLITS = ("train", "dev", "test")


def split_off(rows, size, seed):
    """Hold out `size` rows, chosen by seed, so a single file can serve as train and dev."""
    if size >= len(rows):
        raise DataError(f"dev_size={size} leaves no training rows (the training data has {len(rows)})")
    order = random_permutation(len(rows), seed)
    held = set(order[:size])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def random_permutation(n, seed):
    import numpy as np

    return np.random.RandomState(seed).permutation(n).tolist()


def data_sources(cfg, sample_files):
    """(where, {split: path}): the files a run reads.

    The built-in sample (sample_files, under datasets/) is used only when the user names no data
    at all; once train_file, dev_file, test_file or dataset_name is given, every split comes from
    what the user gave. User paths stay relative to where the user is; the sample's are absolute,
    so `python path/to/train.py` works from any directory.
    """
    given = {split: cfg[f"{split}_file"] for split in SPLITS if cfg.get(f"{split}_file")}
    if given or cfg.get("dataset_name"):
        return "user", given
    return "sample", {split: os.path.join(DATASETS_DIR, path) for split, path in sample_files.items()}


def load_splits(cfg, read_file, sample_files, named_columns=None, log=print):
    """{split: rows} for a trainer, every row checked, with one log line naming the source of every split.

    read_file(split, path) -> rows reads one local file. named_columns ({role: column}) is for
    dataset_name (see load_named_dataset; its local files, when given, are train_file/dev_file/test_file).
    With no dev split, dev_size > 0 holds out that many training rows; with neither there is no
    dev evaluation, and the log says so. do_train=False reads no training split.
    """
    if cfg.get("dev_size", 0) > 0 and cfg.get("dev_file"):
        raise ConfigError(f"dev_file ({cfg['dev_file']}) and dev_size={cfg['dev_size']} both name a dev split: "
                          "dev_size holds training rows out as dev only when there is no dev file; set one of them")
    kind, files = data_sources(cfg, sample_files)
    wanted = SPLITS if cfg.get("do_train", True) else ("dev", "test")
    name = cfg.get("dataset_name")
    if name:
        data = load_named_dataset(name, cfg.get("dataset_config_name") or None, files or None, columns=named_columns,
                                  skip_bad_rows=cfg.get("skip_bad_rows", False), log=log)
        found = sorted(data)
        if cfg.get("do_train", True) and "train" not in data:
            raise DataError(f"dataset {name} has no train split (it has {', '.join(found) or 'none'}): give its "
                            "training rows as a train split (a train.* file in the folder), or train_file")
        if "dev" in data and cfg.get("dev_size", 0) > 0 and cfg.get("do_train", True):
            raise ConfigError(f"dataset {name} has a dev split of its own (dev/validation) and dev_size="
                              f"{cfg['dev_size']} would hold out another: set dev_size=0, or drop the dataset's dev split")
        data = {split: rows for split, rows in data.items() if split in wanted}
        sources = {split: f"dataset {name}" + (f" ({files[split]})" if split in files else f"/{split}") for split in data}
    else:
        data = {split: read_file(split, path) for split, path in files.items() if split in wanted}
        sources = {split: path + (" (built-in sample)" if kind == "sample" else "") for split, path in files.items()}
    if cfg.get("do_train", True) and "train" not in data:
        raise DataError("no training data: set train_file or dataset_name"
                        + (" (dev_file and test_file alone are for do_train=False)" if data else ""))
    if "dev" not in data and cfg.get("dev_size", 0) > 0 and "train" in data:
        data["train"], data["dev"] = split_off(data["train"], cfg["dev_size"], cfg["seed"])
        sources["dev"] = "the training data, held out (dev_size)"
    if "train" in data:
        data["train"] = truncate(data["train"], cfg.get("max_train_samples", 0))
    for split in ("dev", "test"):
        if split in data:
            data[split] = truncate(data[split], cfg.get("max_eval_samples", 0))
    for split in SPLITS:
        if split in data:
            log(f"data: {split} {len(data[split])} rows from {sources[split]}")
    if "dev" not in data and cfg.get("do_train", True):
        log("data: no dev split (no dev_file, dev_size or dataset dev split): no evaluation during training, "
            "and the final model is the last")
    return data


def load_text_splits(cfg, sample_files, log=print):
    """{split: [text]} for the language-model trainers: one text per row (see load_splits)."""
    column = cfg.get("text_column")
    named = {"text": column if column is not None else (dataset_columns(cfg["dataset_name"]) or {}).get("text", "text")} \
        if cfg.get("dataset_name") else None
    data = load_splits(cfg, lambda split, path: load_texts(path, column, cfg.get("skip_bad_rows", False), 0, log,
                                                           cfg.get("has_header", "auto")),
                       sample_files, named, log)
    return {split: [r["text"] if isinstance(r, dict) else r for r in rows] for split, rows in data.items()}

def load_texts(path, column, skip_bad_rows=False, max_samples=0, log=print, has_header="auto"):
    """One text per row of a .txt/.json/.jsonl/.tsv/.csv file (for the LM trainers); bad rows stop with file:line."""
    column = 0 if path.endswith(".txt") else ("text" if column is None else column)
    rows = read_examples(path, {"text": column}, skip_bad_rows=skip_bad_rows, log=log, has_header=has_header)
    return [r["text"] for r in truncate(rows, max_samples)]
