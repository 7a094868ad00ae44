"""Datasets by name: a local folder Hugging Face `datasets.load_dataset` reads (files per split, or a
save_to_disk folder), a Hugging Face dataset name (read from the local cache when offline), or a paddlenlp
dataset (lcsts_new, chnsenticorp), whose local files in their own format may be given instead. Offline with
no cache, one error says the dataset needs a download and how to point at local files.

Imports: the standard library; Hugging Face `datasets` and paddlenlp inside the functions; of the project
`errors`, `data.readers` and `data.examples`.
"""
import contextlib
import os

from paddle_finetune.data.examples import _checked_columns, _checked_examples, _finish
from paddle_finetune.data.readers import check_data_file
from paddle_finetune.errors import DataError

# dataset name -> (text column, summary column), as in HF's run_summarization.py
SUMMARIZATION_NAME_MAPPING = {
    "lcsts_new": ("source", "target"),
    "csl": (1, 2),
}

# dataset name -> {role: column} of the rows load_named_dataset reads. paddlenlp's lcsts_new
# reader renames the files' content/summary to source/target (paddlenlp/datasets/lcsts_new.py),
# so those are the columns its rows have.
DATASET_COLUMNS = {
    "yelp_review_full": {"text": "text", "label": "label"},
    "imdb": {"text": "text", "label": "label"},
    "wikitext": {"text": "text"},
    "lcsts_new": {"text": "source", "summary": "target"},
    "chnsenticorp": {"text": "text", "label": "label"},
}

# paddlenlp datasets read through paddlenlp, with their splits; every other name is Hugging Face's.
PADDLENLP_DATASETS = {"lcsts_new": ("train", "dev"), "chnsenticorp": ("train", "dev", "test")}

# Datasets whose rows are the lines of a text: an empty row is a paragraph break, skipped like a
# blank line of a .txt file, not a bad row.
LINE_DATASETS = {"wikitext"}

SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}

_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}

# ----------------------------------------------------------------------------
# named datasets
# ----------------------------------------------------------------------------
def _base_name(name):
    """"Salesforce/wikitext" -> "wikitext": the Hub moved many datasets under an owner."""
    return str(name).rstrip("/").rsplit("/", 1)[-1]


def dataset_columns(name):
    """DATASET_COLUMNS of a dataset name, also under a Hub owner ("Salesforce/wikitext"); None if unknown.
    A local folder is never looked up by its folder name: its columns are whatever was saved there."""
    if _is_local(name):
        return None
    return DATASET_COLUMNS.get(name) or DATASET_COLUMNS.get(_base_name(name))


def _is_local(name):
    return os.path.isdir(os.path.expanduser(name)) or name.startswith(("/", "./", "../", "~", ".\\", "..\\"))


def _hf_offline():
    """HF_DATASETS_OFFLINE, else HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE, read now (datasets reads them once, at import)."""
    value = os.environ.get("HF_DATASETS_OFFLINE")
    if value is not None:
        return value.upper() in _TRUE_VALUES
    return any(os.environ.get(v, "").upper() in _TRUE_VALUES for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def _hf_offline_mode(offline):
    """datasets fixes its offline flag when first imported (paddlenlp imports it early), so a flag
    set later is applied for the call and the old value put back."""
    from datasets import config

    saved = config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE
    if offline:
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE = saved


HF_OFFLINE_ADVICE = (
    "Offline, get it on a machine with internet access and either save it with "
    "`datasets.load_dataset(...).save_to_disk(DIR)` (or write its splits as train/validation/test .csv, .json, "
    ".jsonl or .parquet files in DIR) and pass DIR as dataset_name, or pass its files as train_file/dev_file"
)
PADDLENLP_OFFLINE_ADVICE = (
    "Offline, download its files elsewhere and pass them as train_file/dev_file (paddlenlp's own format), "
    "or pass a local dataset folder as dataset_name"
)


def _needs_download(shown, reason, advice):
    return DataError(f"dataset {shown} needs a download and is not in the local cache ({reason}). {advice}")


def _hf_load_dataset(*args, **kwargs):
    """datasets' own load_dataset. Importing paddlenlp replaces datasets.load_dataset with a wrapper
    that swaps any path whose last part names one of paddlenlp's scripts (imdb, glue, chnsenticorp,
    ...) for that script -- even a local folder called imdb -- so the public name is not used."""
    from datasets.load import load_dataset

    return load_dataset(*args, **kwargs)


def _split_dict(ds):
    """{split: rows} of what datasets returned (a DatasetDict, or one Dataset)."""
    if hasattr(ds, "keys"):
        return {str(split): ds[split] for split in ds.keys()}
    return {str(getattr(ds, "split", None) or "train"): ds}


def _saved_to_disk(path):
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or all(
        os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_info.json"))


def _files_by_split(path):
    """{split: [files]} as datasets resolves a folder (train.csv, validation.json, data/test-*.parquet, ...)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    resolved = DataFilesDict.from_patterns(get_data_patterns(path), base_path=path)
    return {str(split): list(files) for split, files in resolved.items()}


def _mixed_format_files(path):
    """{split: [files]} when the folder's splits are in more than one format, else None."""
    try:
        files = _files_by_split(path)
    except Exception:  # noqa: BLE001 - then the folder's own error is the one to report
        return None
    return files if len({os.path.splitext(f)[1].lower() for fs in files.values() for f in fs}) > 1 else None


def _load_split_files(split, files):
    """One split read by the datasets builder of its files' format (datasets wants one format per folder)."""
    from datasets.data_files import DataFilesList
    from datasets.load import infer_module_for_data_files_list

    module, kwargs = infer_module_for_data_files_list(DataFilesList(files, [None] * len(files)))
    if module is None:
        raise DataError(f"{files[0]}: no datasets reader for this file type")
    return _hf_load_dataset(module, data_files={split: files}, split=split, **kwargs)


def _local_hf_folder(path, config_name):
    import datasets

    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise DataError(f"dataset folder not found: {path}")
    try:
        with _hf_offline_mode(True):  # a local folder never needs the network
            if _saved_to_disk(path):
                return _split_dict(datasets.load_from_disk(path))
            try:
                return _split_dict(_hf_load_dataset(path, config_name))
            except ValueError:
                files = _mixed_format_files(path)
                if files is None:
                    raise
                # train.csv beside validation.json: datasets refuses mixed formats, so read split by split.
                return {split: _load_split_files(split, fs) for split, fs in files.items()}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types for unreadable folders
        raise DataError(f"could not read dataset folder {path} with datasets ({type(e).__name__}: {e})") from e


def _hub_dataset(name, config_name, data_dir_or_files):
    kwargs = {}
    if isinstance(data_dir_or_files, str):
        kwargs["data_dir"] = data_dir_or_files  # datasets' meaning: a folder inside the dataset's repository
    elif data_dir_or_files:
        kwargs["data_files"] = data_dir_or_files
    offline = _hf_offline()
    shown = repr(name) + (f" (config {config_name!r})" if config_name else "")
    try:
        with _hf_offline_mode(offline):
            return _split_dict(_hf_load_dataset(name, config_name, **kwargs))
    except ConnectionError as e:  # datasets' offline error is one too; it tried the cache first
        reason = "offline: HF_DATASETS_OFFLINE is set" if offline else f"the Hub is unreachable: {e}"
        raise _needs_download(shown, reason, HF_OFFLINE_ADVICE) from e
    except Exception as e:  # noqa: BLE001 - unknown names, configs and broken caches raise many types
        raise DataError(f"could not load Hugging Face dataset {shown} ({type(e).__name__}: {e})") from e


def _paddlenlp_cached(name, splits):
    """Whether paddlenlp already has the split files (its download retries take seconds to fail offline)."""
    try:
        from paddlenlp.datasets.dataset import import_main_class
        from paddlenlp.utils.env import DATA_HOME

        builder = import_main_class(name)
        return all(os.path.exists(os.path.join(DATA_HOME, builder.__name__, builder.SPLITS[s].file)) for s in splits)
    except Exception:  # noqa: BLE001 - another paddlenlp layout: let paddlenlp itself decide
        return True


def _paddlenlp_files(name, data_dir_or_files):
    """{split: path} of local files for a paddlenlp dataset: a dict by split, or paths in its split order."""
    splits = PADDLENLP_DATASETS[name]
    if isinstance(data_dir_or_files, dict):
        files = {SPLIT_NAMES.get(str(s).lower(), s): p for s, p in data_dir_or_files.items()}
    else:
        paths = [data_dir_or_files] if isinstance(data_dir_or_files, str) else list(data_dir_or_files)
        files = dict(zip(splits, paths))
        if len(paths) > len(splits):
            raise DataError(f"{name}: {len(paths)} files for its {len(splits)} splits {list(splits)}")
    for split, path in files.items():
        # paddlenlp reads an unknown split name as no rows at all.
        if split not in splits:
            raise DataError(f"{name}: no split {split!r}; it has {list(splits)}")
        check_data_file(path)  # a regular file: a directory or FIFO is named as such
    return files


def _paddlenlp_splits(name, data_dir_or_files):
    splits = PADDLENLP_DATASETS[name]
    if data_dir_or_files:
        files = _paddlenlp_files(name, data_dir_or_files)
        return dict(zip(files, load_paddlenlp_dataset(name, list(files), data_files=list(files.values()))))
    if _hf_offline() and not _paddlenlp_cached(name, splits):
        raise _needs_download(repr(name), "offline: HF_DATASETS_OFFLINE is set, and paddlenlp has not downloaded it",
                              PADDLENLP_OFFLINE_ADVICE)
    return dict(zip(splits, load_paddlenlp_dataset(name, splits)))


def _renamed_splits(splits, source, wanted=None):
    """{train/dev/test: (original name, rows)} for validation/valid/dev; two splits that would share a
    name are refused, and so is a wanted split the dataset does not have."""
    renamed = {}
    for split, rows in splits.items():
        new = SPLIT_NAMES.get(split.lower(), split)
        if new in renamed:
            raise DataError(f"{source}: splits {renamed[new][0]!r} and {split!r} would both be {new!r}")
        renamed[new] = (split, rows)
    if wanted is None:
        return renamed
    missing = [s for s in wanted if s not in renamed]
    if missing:
        raise DataError(f"{source}: no split(s) {missing}; it has {sorted(renamed)}")
    return {s: renamed[s] for s in wanted}


def _rows_of(split_rows):
    """Python dicts of a split: a datasets.Dataset converts column-wise, much faster than row by row."""
    return split_rows.to_list() if hasattr(split_rows, "to_list") else split_rows


def _allowed_empty(allow_empty, split, columns):
    if allow_empty is None:
        # Test splits often come without references (chnsenticorp's test labels are ""): every role but the text.
        return tuple(list(columns)[1:]) if split == "test" else ()
    if isinstance(allow_empty, dict):
        return tuple(allow_empty.get(split, ()))
    return tuple(allow_empty)


def load_named_dataset(name, config_name=None, data_dir_or_files=None, columns=None, skip_bad_rows=False,
                       allow_empty=None, splits=None, log=print):
    """{split: [row dicts]} of a named dataset, splits named train/dev/test (validation/valid -> dev).

    name: a local folder datasets reads (csv/json/jsonl/parquet files per split, or save_to_disk
    output), a paddlenlp dataset (PADDLENLP_DATASETS), or a Hugging Face dataset name, read from
    the local cache when offline (HF_DATASETS_OFFLINE). config_name: the HF config
    ("wikitext-2-raw-v1"). data_dir_or_files: for paddlenlp, local files in its own format
    ({split: path} or a list in its split order); for HF, datasets' data_dir (a str) or data_files.
    columns: {role: column}; default DATASET_COLUMNS[name]. Rows are keyed by role and pass the
    checks of file rows; a bad row names dataset, split and row number (1-based).
    allow_empty: roles that may be empty (a list, or {split: roles}); default: in a test split
    every role but the first. splits: the (renamed) splits to keep, e.g. ("train", "dev"); default all.
    """
    columns = columns if columns is not None else dataset_columns(name)
    if not columns:
        raise DataError(f"dataset {name!r}: no known columns; give them as columns={{role: column}} "
                        f"(known datasets: {', '.join(sorted(DATASET_COLUMNS))})")
    columns = _checked_columns(columns)
    if _is_local(name):
        raw = _local_hf_folder(name, config_name)
    elif name in PADDLENLP_DATASETS:
        if config_name:
            raise DataError(f"dataset {name!r} is read through paddlenlp and has no config {config_name!r}")
        raw = _paddlenlp_splits(name, data_dir_or_files)
    else:
        raw = _hub_dataset(name, config_name, data_dir_or_files)
    blank_rows_are_breaks = not _is_local(name) and _base_name(name) in LINE_DATASETS
    data = {}
    for split, (original, rows) in _renamed_splits(raw, name, splits).items():
        source = f"{name}/{original}"
        bad = []
        located = ((f"{source}: row {i}", row) for i, row in enumerate(_rows_of(rows), start=1)
                   if not (blank_rows_are_breaks and _is_blank_row(row, columns)))
        examples = _checked_examples(located, columns, _allowed_empty(allow_empty, split, columns),
                                     bad.append if skip_bad_rows else None)
        data[split] = _finish(source, examples, bad, log)
    return data


def _is_blank_row(row, columns):
    return isinstance(row, dict) and all(isinstance(row.get(c), str) and not row[c].strip() for c in columns.values())


def _paddlenlp_file(load_dataset, name, path, split):
    try:
        kwargs = {"splits": split} if split else {}
        return list(load_dataset(name, data_files=path, lazy=False, **kwargs))
    except Exception as e:  # noqa: BLE001 - paddlenlp readers raise whatever the file makes them raise
        raise DataError(f"{path}: could not read it as paddlenlp's {name!r}{f' {split} split' if split else ''} "
                        f"({type(e).__name__}: {e}); local files must be in that dataset's own format") from e


def load_paddlenlp_dataset(name, splits, data_files=None):
    """A named paddlenlp dataset: downloads when online, reads data_files (its own format) otherwise.

    With data_files and splits, file i is read as split i (chnsenticorp's dev and test files have
    other columns than its train file); with data_files alone, each is read as paddlenlp's default.
    """
    from paddlenlp.datasets import load_dataset

    if data_files:
        return [_paddlenlp_file(load_dataset, name, path, split)
                for path, split in zip(data_files, list(splits or ()) + [None] * len(data_files))]
    try:
        return [list(ds) for ds in load_dataset(name, splits=splits, lazy=False)]
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise DataError(
            f"could not load dataset {name!r} through paddlenlp ({type(e).__name__}: {e}); it may need a download. "
            + PADDLENLP_OFFLINE_ADVICE
        ) from e
