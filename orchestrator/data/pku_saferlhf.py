"""PKU-SafeRLHF (helpfulness vs harmlessness preference pairs) → the canonical pair schema.

Each row holds a prompt, two responses (response_0, response_1) and, per objective, the id of the
preferred one: better_response_id for helpfulness, safer_response_id for harmlessness. Rows go
both ways: `pku_saferlhf_rows` writes pairs in these columns (ties have no place in them).
"""

from orchestrator.data.rows import load_rows
from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError

HUB_ID = "PKU-Alignment/PKU-SafeRLHF"
OBJECTIVES = ("helpful", "harmless")
REQUIRED_COLUMNS = ("prompt", "response_0", "response_1", "better_response_id", "safer_response_id")
LABEL_COLUMNS = {"helpful": "better_response_id", "harmless": "safer_response_id"}


def load_pku_saferlhf(source: str = HUB_ID, split: str = "train") -> PairDataset:
    """PKU-SafeRLHF pairs with objectives ("helpful", "harmless") from `source`, a hub id or a
    local file or folder (see data.rows.load_rows)."""
    columns = load_rows(source, split, REQUIRED_COLUMNS, "a PKU-SafeRLHF dataset")
    count = len(columns["prompt"])
    pairs = [
        _to_pair({name: columns[name][i] for name in REQUIRED_COLUMNS}, f"{source}, row {i}")
        for i in range(count)
    ]
    return PairDataset(OBJECTIVES, pairs)


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


def pku_saferlhf_rows(dataset: PairDataset) -> list[dict]:
    """`dataset`'s pairs as rows in PKU-SafeRLHF's columns; each pair needs a helpful and a
    harmless label that are not ties."""
    rows = []
    for i, pair in enumerate(dataset):
        ids = {}
        for objective, column in LABEL_COLUMNS.items():
            label = pair.labels.get(objective)
            if label not in ("a", "b"):
                raise MoaError(
                    f"pair {i}: PKU-SafeRLHF needs an 'a' or 'b' label for {objective!r}; "
                    f"got {label!r}"
                )
            ids[column] = 0 if label == "a" else 1
        rows.append(
            {"prompt": pair.prompt, "response_0": pair.response_a, "response_1": pair.response_b}
            | ids
        )
    return rows
