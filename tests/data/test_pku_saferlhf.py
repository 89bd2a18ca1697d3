import json
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest

from orchestrator.data.pku_saferlhf import load_pku_saferlhf, pku_saferlhf_rows
from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError

# (better_response_id, safer_response_id) per row: rows 1 and 2 are conflicting.
IDS = [(0, 0), (0, 1), (1, 0), (1, 1)]
EXPECTED_LABELS = [
    {"helpful": "a", "harmless": "a"},
    {"helpful": "a", "harmless": "b"},
    {"helpful": "b", "harmless": "a"},
    {"helpful": "b", "harmless": "b"},
]


def pku_row(i: int, better: object, safer: object) -> dict:
    """One row in the real PKU-SafeRLHF column layout, extra columns included."""
    harm = {"Violence": False, "Privacy Violation": i % 2 == 1}
    return {
        "prompt": f"prompt {i}",
        "response_0": f"response {i}.0",
        "response_1": f"response {i}.1",
        "prompt_source": "Alpaca3-70B",
        "response_0_source": "Alpaca-7B",
        "response_1_source": "Alpaca-7B",
        "is_response_0_safe": safer == 0,
        "is_response_1_safe": safer == 1,
        "response_0_harm_category": harm,
        "response_1_harm_category": harm,
        "response_0_severity_level": 0 if safer == 0 else 2,
        "response_1_severity_level": 0 if safer == 1 else 2,
        "better_response_id": better,
        "safer_response_id": safer,
        "response_0_sha256": f"{i:064x}",
        "response_1_sha256": f"{i + 100:064x}",
    }


ROWS = [pku_row(i, better, safer) for i, (better, safer) in enumerate(IDS)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(autouse=True)
def offline_tmp_cache(tmp_path, monkeypatch):
    # datasets reads these variables at import time, so patch its config too.
    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pku.jsonl", ROWS)


def test_maps_each_row(jsonl):
    data = load_pku_saferlhf(str(jsonl))
    assert data.objectives == ("helpful", "harmless")
    assert len(data) == 4
    for i, pair in enumerate(data):
        assert pair.prompt == f"prompt {i}"
        assert pair.response_a == f"response {i}.0"
        assert pair.response_b == f"response {i}.1"
        assert dict(pair.labels) == EXPECTED_LABELS[i]
        assert pair.scores is None


def test_conflicting_fraction(jsonl):
    assert load_pku_saferlhf(str(jsonl)).conflicting_fraction() == 0.5


def test_split_slicing(jsonl):
    data = load_pku_saferlhf(str(jsonl), split="train[1:3]")
    assert [pair.prompt for pair in data] == ["prompt 1", "prompt 2"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_other_file_formats(tmp_path, suffix):
    path = tmp_path / f"pku{suffix}"
    rows = datasets.Dataset.from_list(ROWS)
    if suffix == ".parquet":
        rows.to_parquet(str(path))
    elif suffix == ".csv":
        rows.remove_columns(["response_0_harm_category", "response_1_harm_category"]).to_csv(
            str(path), index=False
        )
    else:
        path.write_text(json.dumps(ROWS))  # one JSON array
    data = load_pku_saferlhf(str(path))
    assert [pair.response_b for pair in data] == [f"response {i}.1" for i in range(4)]
    assert [dict(pair.labels) for pair in data] == EXPECTED_LABELS


def test_directory(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    data = load_pku_saferlhf(str(tmp_path), split="train")
    assert [dict(pair.labels) for pair in data] == EXPECTED_LABELS


def test_missing_columns(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "safer_response_id"} for row in ROWS]
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    with pytest.raises(MoaError, match=r"lacks column\(s\) \['safer_response_id'\]") as err:
        load_pku_saferlhf(str(path))
    assert "better_response_id" in str(err.value)  # the expected columns are listed


@pytest.mark.parametrize(
    ("field", "value"),
    [("better_response_id", 2), ("safer_response_id", -1), ("safer_response_id", None)],
)
def test_bad_response_id(tmp_path, field, value):
    rows = [dict(row) for row in ROWS]
    rows[2][field] = value
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    with pytest.raises(MoaError, match=rf"row 2: field '{field}' must be 0 or 1; got {value}"):
        load_pku_saferlhf(str(path))


def test_non_string_response(tmp_path):
    rows = [dict(row) for row in ROWS]
    rows[1]["response_0"] = None
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    with pytest.raises(MoaError, match="row 1: field 'response_a' must be a string"):
        load_pku_saferlhf(str(path))


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.parquet", "no/such/dir"])
def test_missing_local_source(tmp_path, name):
    with pytest.raises(MoaError, match="no such file or directory"):
        load_pku_saferlhf(str(tmp_path / name))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "pku.txt"
    path.write_text("hello\n")
    with pytest.raises(MoaError, match=r"unsupported file type '\.txt'"):
        load_pku_saferlhf(str(path))


def test_unreadable_file(tmp_path):
    path = tmp_path / "pku.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(MoaError, match="could not be read"):
        load_pku_saferlhf(str(path))


def test_unknown_split(jsonl):
    with pytest.raises(MoaError, match="split 'test'"):
        load_pku_saferlhf(str(jsonl), split="test")


def test_a_run_config_reads_pku_through_the_same_loader(tmp_path):
    from orchestrator.config import load_config
    from orchestrator.data.sources import load_training_pairs

    rows = [pku_row(i, *IDS[i % 4]) for i in range(40)]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    cfg = load_config(None, ["data.source=pku_saferlhf", f"data.path={path}", "eval.enabled=false"])
    train = load_training_pairs(cfg.data)
    assert train.objectives == ("helpful", "harmless")
    assert 20 < len(train) < 40  # about 20 % of the prompts held out
    assert all(p.prompt in {r["prompt"] for r in rows} for p in train)


def test_pairs_written_in_pku_columns_read_back_the_same(tmp_path):
    pairs = load_pku_saferlhf(str(write_jsonl(tmp_path / "pku.jsonl", ROWS)))
    rows = pku_saferlhf_rows(pairs)
    assert rows == [{k: row[k] for k in rows[0]} for row in ROWS]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "again.parquet"))
    assert load_pku_saferlhf(str(tmp_path / "again.parquet")) == pairs


def test_a_tie_has_no_place_in_pku_columns():
    tied = PreferencePair("p", "x", "y", {"helpful": "a", "harmless": "tie"})
    with pytest.raises(
        MoaError, match="pair 0: PKU-SafeRLHF needs an 'a' or 'b' label for 'harmless'"
    ):
        pku_saferlhf_rows(PairDataset(("helpful", "harmless"), [tied]))
