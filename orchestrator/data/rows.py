"""The rows of a dataset named by a hub id or a local file or folder, through `datasets`: the one
way every dataset adapter reads its source, so that a local file takes a hub dataset's code path."""

from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from orchestrator.errors import MoaError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(source: str, split: str, columns: tuple[str, ...], what: str) -> dict[str, list]:
    """Column name → values of `split` of `source` (a hub id, or a local .json/.jsonl/.parquet/
    .csv file, whose rows are the "train" split, or a folder of such files), for `columns`,
    which it must have; `what` names the dataset kind in errors. `split` may use the datasets
    slicing syntax ("train[:1000]")."""
    rows = _load(source, split)
    missing = [name for name in columns if name not in rows.column_names]
    if missing:
        raise MoaError(
            f"{source} (split {split!r}) lacks column(s) {missing}; {what} needs "
            f"{list(columns)}; it has {rows.column_names}"
        )
    return rows.select_columns(list(columns)).to_dict()


def _load(source: str, split: str) -> datasets.Dataset:
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
