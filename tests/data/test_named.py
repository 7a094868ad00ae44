"""load_named_dataset (issue 14): local Hugging Face folders, HF names through the local cache
(faked here: this machine has no internet), paddlenlp names; DATASET_COLUMNS; the offline error.

No test may touch the network: every socket connect fails and is recorded."""
import json
import os
import socket
import time

import pytest
from paddle_finetune.data.named import DATASET_COLUMNS, dataset_columns, load_named_dataset
from paddle_finetune.errors import DataError
TEXT_LABEL = {"text": "text", "label": "label"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert not attempts, f"a test tried the network: {attempts}"


@pytest.fixture
def hf(tmp_path, monkeypatch):
    """datasets, offline, with its cache in tmp_path (local folders are cached as Arrow files there)."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return datasets


def folder(tmp_path, name, files):
    path = tmp_path / name
    path.mkdir()
    for file_name, content in files.items():
        (path / file_name).write_text(content, encoding="utf-8")
    return str(path)


def jsonl(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ---------------------------------------------------------------- (a) local folders
def test_local_csv_folder_with_splits_renamed(hf, tmp_path):
    path = folder(tmp_path, "csv_ds", {
        "train.csv": 'text,label\n"好, 很好\n第二行",1\n差,0\n',
        "validation.csv": "text,label\n还行,1\n",
        "test.csv": "text,label\n一般,0\n",
    })
    data = load_named_dataset(path, columns=TEXT_LABEL)
    assert data == {"train": [{"text": "好, 很好\n第二行", "label": "1"}, {"text": "差", "label": "0"}],
                    "dev": [{"text": "还行", "label": "1"}], "test": [{"text": "一般", "label": "0"}]}
    assert os.path.isdir(tmp_path / "hf-cache")  # datasets' Arrow cache stayed in tmp_path


def test_local_json_and_jsonl_folder(hf, tmp_path):
    path = folder(tmp_path, "json_ds", {
        "train.jsonl": jsonl([{"text": "a", "label": 1}, {"text": "b", "label": 0}]),
        "valid.jsonl": jsonl([{"text": "c", "label": 1}]),
    })
    assert load_named_dataset(path, columns=TEXT_LABEL) == {
        "train": [{"text": "a", "label": "1"}, {"text": "b", "label": "0"}], "dev": [{"text": "c", "label": "1"}]}
    path = folder(tmp_path, "json_list_ds", {"train.json": json.dumps([{"text": "a", "label": 1}])})
    assert load_named_dataset(path, columns=TEXT_LABEL) == {"train": [{"text": "a", "label": "1"}]}


def test_local_parquet_folder(hf, tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "pq_ds"
    path.mkdir()
    pd.DataFrame({"text": ["p", "q"], "label": [0, 1]}).to_parquet(path / "train.parquet")
    pd.DataFrame({"text": ["r"], "label": [1]}).to_parquet(path / "validation.parquet")
    assert load_named_dataset(str(path), columns=TEXT_LABEL) == {
        "train": [{"text": "p", "label": "0"}, {"text": "q", "label": "1"}], "dev": [{"text": "r", "label": "1"}]}


def test_local_folder_with_mixed_formats_per_split(hf, tmp_path):
    path = folder(tmp_path, "mixed_ds", {"train.csv": "text,label\na,1\n", "validation.json": '[{"text": "b", "label": 0}]'})
    assert load_named_dataset(path, columns=TEXT_LABEL) == {"train": [{"text": "a", "label": "1"}],
                                                            "dev": [{"text": "b", "label": "0"}]}


def test_folder_saved_with_save_to_disk(hf, tmp_path):
    ds = hf.DatasetDict({"train": hf.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}),
                         "validation": hf.Dataset.from_dict({"text": ["c"], "label": [1]})})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_named_dataset(str(tmp_path / "saved"), columns=TEXT_LABEL) == {
        "train": [{"text": "a", "label": "0"}, {"text": "b", "label": "1"}], "dev": [{"text": "c", "label": "1"}]}
    ds["train"].save_to_disk(str(tmp_path / "one"))  # a single Dataset is its split
    assert load_named_dataset(str(tmp_path / "one"), columns=TEXT_LABEL) == {
        "train": [{"text": "a", "label": "0"}, {"text": "b", "label": "1"}]}


def test_named_rows_get_the_file_row_checks(hf, tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "bad_ds"
    path.mkdir()
    pd.DataFrame({"text": ["ok", None, float("nan"), "  ", "fine"], "label": [1.0, 2.0, 1.0, 1.0, float("nan")]}).to_parquet(
        path / "train.parquet")
    with pytest.raises(DataError, match=rf"^{path}/train: row 2: text \(column 'text'\) is null"):
        load_named_dataset(str(path), columns=TEXT_LABEL)
    logs = []
    data = load_named_dataset(str(path), columns=TEXT_LABEL, skip_bad_rows=True, log=logs.append)
    assert data == {"train": [{"text": "ok", "label": "1"}]}  # 1.0 from a float column is the label "1"
    assert logs == [f"skip_bad_rows: skipped 4 bad row(s) in {path}/train; "
                    f"first: {path}/train: row 2: text (column 'text') is null (a missing value)"]


def test_local_folder_named_like_a_paddlenlp_script_is_read_as_the_folder(hf, tmp_path):
    """Importing paddlenlp replaces datasets.load_dataset with a wrapper that loads paddlenlp's own
    imdb.py for any path ending in imdb, local folders included."""
    pytest.importorskip("paddlenlp.datasets")
    assert hf.load_dataset is not hf.load.load_dataset  # paddlenlp's wrapper is in place
    path = folder(tmp_path, "imdb", {"train.csv": "text,label\na,1\n"})
    assert load_named_dataset(path, columns=TEXT_LABEL) == {"train": [{"text": "a", "label": "1"}]}


def test_local_folder_needs_columns_and_must_exist(hf, tmp_path):
    path = folder(tmp_path, "imdb", {"train.csv": "review,stars\na,1\n"})  # not looked up by folder name
    with pytest.raises(DataError, match="no known columns"):
        load_named_dataset(path)
    with pytest.raises(DataError, match=rf"^{path}/train: row 1: missing column 'text'"):
        load_named_dataset(path, columns=TEXT_LABEL)
    with pytest.raises(DataError, match="dataset folder not found: ./no/such/folder"):
        load_named_dataset("./no/such/folder", columns=TEXT_LABEL)


# ---------------------------------------------------------------- (b) Hugging Face names
@pytest.fixture
def fake_hub(hf, monkeypatch):
    """datasets' load_dataset answering from a dict, as it would from the local cache."""
    calls, store = [], {}

    def load_dataset(name, config_name=None, **kwargs):
        calls.append((name, config_name, kwargs, hf.config.HF_HUB_OFFLINE))
        return store[name]

    monkeypatch.setattr(hf.load, "load_dataset", load_dataset)
    return calls, store


def test_hf_name_uses_dataset_columns_and_renames_splits(fake_hub):
    calls, store = fake_hub
    store["yelp_review_full"] = {"train": [{"text": "great", "label": 4}], "test": [{"text": "bad", "label": 0}]}
    assert load_named_dataset("yelp_review_full") == {"train": [{"text": "great", "label": "4"}],
                                                      "test": [{"text": "bad", "label": "0"}]}
    assert calls == [("yelp_review_full", None, {}, True)]  # offline applied though datasets was imported before


def test_wikitext_blank_rows_are_paragraph_breaks_not_bad_rows(fake_hub):
    calls, store = fake_hub
    store["Salesforce/wikitext"] = {"train": [{"text": ""}, {"text": " = Title = \n"}, {"text": " body \n"}],
                                    "validation": [{"text": "dev text"}], "test": [{"text": None}]}
    with pytest.raises(DataError, match=r"^Salesforce/wikitext/test: row 1: text \(column 'text'\) is null"):
        load_named_dataset("Salesforce/wikitext", "wikitext-2-raw-v1")
    assert calls[0][:2] == ("Salesforce/wikitext", "wikitext-2-raw-v1")
    store["Salesforce/wikitext"]["test"] = [{"text": "test text"}]
    assert load_named_dataset("Salesforce/wikitext", "wikitext-2-raw-v1") == {
        "train": [{"text": "= Title ="}, {"text": "body"}], "dev": [{"text": "dev text"}], "test": [{"text": "test text"}]}


def test_empty_text_in_a_non_line_dataset_is_a_bad_row(fake_hub):
    _, store = fake_hub
    store["imdb"] = {"train": [{"text": "good", "label": 1}, {"text": "", "label": 0}], "unsupervised": []}
    with pytest.raises(DataError, match=r"^imdb/train: row 2: empty text \(column 'text'\)$"):
        load_named_dataset("imdb")


def test_unlabeled_test_split_is_allowed_by_default_but_not_nan(fake_hub):
    _, store = fake_hub
    store["imdb"] = {"train": [{"text": "good", "label": 1}], "test": [{"text": "t", "label": ""}]}
    assert load_named_dataset("imdb")["test"] == [{"text": "t", "label": ""}]
    with pytest.raises(DataError, match=r"^imdb/test: row 1: empty label"):
        load_named_dataset("imdb", allow_empty=())
    store["imdb"]["test"] = [{"text": "t", "label": float("nan")}]
    with pytest.raises(DataError, match=r"^imdb/test: row 1: label \(column 'label'\) is NaN"):
        load_named_dataset("imdb")


def test_two_splits_that_would_both_be_dev_are_refused(fake_hub):
    _, store = fake_hub
    store["imdb"] = {"train": [{"text": "a", "label": 1}], "validation": [{"text": "b", "label": 1}],
                     "dev": [{"text": "c", "label": 1}]}
    with pytest.raises(DataError, match="splits 'validation' and 'dev' would both be 'dev'"):
        load_named_dataset("imdb")


def test_offline_hf_name_not_in_the_cache_fails_fast_with_advice(hf, tmp_path, monkeypatch):
    monkeypatch.setattr(hf.config, "HF_HUB_OFFLINE", False)  # as if datasets was imported before the flag was set
    start = time.monotonic()
    with pytest.raises(DataError) as raised:
        load_named_dataset("yelp_review_full")
    assert time.monotonic() - start < 20
    message = str(raised.value)
    assert "'yelp_review_full' needs a download" in message and "HF_DATASETS_OFFLINE" in message
    assert "dataset_name" in message and "train_file/dev_file" in message
    assert hf.config.HF_HUB_OFFLINE is False  # put back
    with pytest.raises(DataError, match=r"'wikitext' \(config 'wikitext-2-raw-v1'\) needs a download"):
        load_named_dataset("wikitext", "wikitext-2-raw-v1")


# ---------------------------------------------------------------- (c) paddlenlp names
def test_dataset_columns_for_common_datasets():
    assert DATASET_COLUMNS["yelp_review_full"] == DATASET_COLUMNS["imdb"] == DATASET_COLUMNS["chnsenticorp"] == TEXT_LABEL
    assert DATASET_COLUMNS["wikitext"] == {"text": "text"}
    assert dataset_columns("stanfordnlp/imdb") == TEXT_LABEL and dataset_columns("nope") is None


def test_lcsts_new_through_paddlenlp_yields_source_and_target(tmp_path):
    """paddlenlp's lcsts_new reader renames the files' content/summary to source/target."""
    pytest.importorskip("paddlenlp")
    assert DATASET_COLUMNS["lcsts_new"] == {"text": "source", "summary": "target"}
    train, dev = tmp_path / "train.json", tmp_path / "dev.json"
    train.write_text(jsonl([{"id": i, "content": f"第{i}条正文", "summary": f"摘要{i}"} for i in range(3)]), encoding="utf-8")
    dev.write_text(jsonl([{"id": 0, "content": "正文", "summary": ""}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"^lcsts_new/dev: row 1: empty summary \(column 'target'\)$"):
        load_named_dataset("lcsts_new", data_dir_or_files={"train": str(train), "dev": str(dev)})
    dev.write_text(jsonl([{"id": 0, "content": "正文", "summary": "题"}]), encoding="utf-8")
    data = load_named_dataset("lcsts_new", data_dir_or_files=[str(train), str(dev)])
    assert data == {"train": [{"text": f"第{i}条正文", "summary": f"摘要{i}"} for i in range(3)],
                    "dev": [{"text": "正文", "summary": "题"}]}


def test_chnsenticorp_local_files_are_read_as_their_own_split(tmp_path):
    pytest.importorskip("paddlenlp")
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("label\ttext_a\n1\t很好\n0\t很差\n", encoding="utf-8")
    dev.write_text("qid\tlabel\ttext_a\n0\t1\t不错\n", encoding="utf-8")  # dev files carry a qid column
    data = load_named_dataset("chnsenticorp", data_dir_or_files={"train": str(train), "validation": str(dev)})
    assert data == {"train": [{"text": "很好", "label": "1"}, {"text": "很差", "label": "0"}],
                    "dev": [{"text": "不错", "label": "1"}]}
    with pytest.raises(DataError, match=r"chnsenticorp: no split 'unsupervised'"):
        load_named_dataset("chnsenticorp", data_dir_or_files={"unsupervised": str(train)})


def test_offline_paddlenlp_name_not_downloaded_fails_fast_without_trying(tmp_path, monkeypatch):
    pytest.importorskip("paddlenlp")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr("paddlenlp.utils.env.DATA_HOME", str(tmp_path))  # nothing downloaded there

    def download(*args, **kwargs):
        raise AssertionError("offline: paddlenlp must not be asked to download")

    monkeypatch.setattr("paddlenlp.datasets.load_dataset", download)
    with pytest.raises(DataError, match=r"'chnsenticorp' needs a download.*train_file/dev_file.*dataset_name"):
        load_named_dataset("chnsenticorp")


def test_splits_to_keep(fake_hub):
    _, store = fake_hub
    store["imdb"] = {"train": [{"text": "a", "label": 1}], "test": [{"text": "b", "label": 0}],
                     "unsupervised": [{"text": "", "label": -1}]}  # never checked when not kept
    assert load_named_dataset("imdb", splits=("train", "test")) == {
        "train": [{"text": "a", "label": "1"}], "test": [{"text": "b", "label": "0"}]}
    with pytest.raises(DataError, match=r"^imdb: no split\(s\) \['dev'\]; it has \['test', 'train', 'unsupervised'\]"):
        load_named_dataset("imdb", splits=("train", "dev"))


def test_paddlenlp_names_have_no_config():
    with pytest.raises(DataError, match="'chnsenticorp' is read through paddlenlp and has no config 'x'"):
        load_named_dataset("chnsenticorp", "x")
