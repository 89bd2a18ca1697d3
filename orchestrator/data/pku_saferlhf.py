"""PKU-SafeRLHF (helpfulness vs harmlessness preference pairs) → the canonical pair schema.

Each row holds a prompt, two responses (response_0, response_1) and, per objective, the id of the
preferred one: better_response_id for helpfulness, safer_response_id for harmlessness.
"""

from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError

OBJECTIVES = ("helpful", "harmless")
REQUIRED_COLUMNS = ("prompt", "response_0", "response_1", "better_response_id", "safer_response_id")
LABEL_COLUMNS = {"helpful": "better_response_id", "harmless": "safer_response_id"}
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_pku_saferlhf(
    source: str = "PKU-Alignment/PKU-SafeRLHF", split: str = "train", *, limit: int | None = None
) -> PairDataset:
    """Load PKU-SafeRLHF pairs with objectives ("helpful", "harmless").

    `source`: a hub dataset id, or a local .json/.jsonl/.parquet/.csv file (its rows are the
    "train" split) or a local directory of such files. `split` may use the datasets slicing
    syntax ("train[:1000]"). `limit` keeps the first `limit` rows.
    """
    if limit is not None and limit < 0:
        raise MoaError(f"limit must be a non-negative number of rows or None; got {limit}")
    rows = _load_rows(source, split)
    missing = [name for name in REQUIRED_COLUMNS if name not in rows.column_names]
    if missing:
        raise MoaError(
            f"{source} (split {split!r}) lacks column(s) {missing}; a PKU-SafeRLHF dataset needs "
            f"{list(REQUIRED_COLUMNS)}; it has {rows.column_names}"
        )
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    columns = rows.select_columns(list(REQUIRED_COLUMNS)).to_dict()
    pairs = [
        _to_pair({name: columns[name][i] for name in REQUIRED_COLUMNS}, f"{source}, row {i}")
        for i in range(len(rows))
    ]
    return PairDataset(OBJECTIVES, pairs)


def _load_rows(source: str, split: str) -> datasets.Dataset:
    path = Path(source).expanduser()
    builder = FILE_BUILDERS.get(path.suffix.lower())
    # Hub ids are "name" or "owner/name"; anything else path-like is meant as a local path.
    is_local = path.exists() or builder is not None or source.startswith(("/", ".", "~"))
    is_local = is_local or source.count("/") > 1
    if is_local and not path.exists():
        raise MoaError(
            f"source {source!r}: no such file or directory; pass a hub id or an existing "
            f"{'/'.join(FILE_BUILDERS)} file or directory"
        )
    if path.is_file() and builder is None:
        raise MoaError(
            f"source {source!r}: unsupported file type {path.suffix!r}; "
            f"accepted: {', '.join(FILE_BUILDERS)}"
        )
    try:
        if path.is_file():
            return datasets.load_dataset(builder, data_files=str(path), split=split)
        return datasets.load_dataset(str(path) if is_local else source, split=split)
    except DatasetGenerationError as err:
        raise MoaError(f"source {source!r} could not be read: {err.__cause__ or err}") from err
    except FileNotFoundError as err:
        raise MoaError(f"source {source!r}: not found locally or on the hub ({err})") from err
    except ValueError as err:  # e.g. an unknown split name
        raise MoaError(f"source {source!r}, split {split!r}: {err}") from err


def _to_pair(row: dict, where: str) -> PreferencePair:
    labels = {}
    for objective, column in LABEL_COLUMNS.items():
        value = row[column]
        if isinstance(value, bool) or value not in (0, 1):
            raise MoaError(f"{where}: field '{column}' must be 0 or 1; got {value!r}")
        labels[objective] = "a" if value == 0 else "b"
    record = {
        "prompt": row["prompt"],
        "response_a": row["response_0"],
        "response_b": row["response_1"],
        "labels": labels,
    }
    return PreferencePair.from_record(record, where)
