import json

import datasets
import pytest

from orchestrator.config import load_config
from orchestrator.config.sections import Attribute
from orchestrator.data.helpsteer2 import ATTRIBUTES, load_helpsteer2
from orchestrator.data.sources import load_pairs, load_training_pairs
from orchestrator.errors import MoaError


def row(prompt: str, response: str, helpfulness, verbosity, **extra) -> dict:
    """One row in HelpSteer2's own columns."""
    scores = dict.fromkeys(ATTRIBUTES, 2) | {"helpfulness": helpfulness, "verbosity": verbosity}
    return {"prompt": prompt, "response": response, **scores, **extra}


# p0: two responses; p1: three (three pairs); p2: one (no pair).
ROWS = [
    row("p0", "r0.0", 3, 2),
    row("p1", "r1.0", 1, 4),
    row("p0", "r0.1", 1, 2),
    row("p1", "r1.1", 4, 0),
    row("p2", "r2.0", 2, 2),
    row("p1", "r1.2", 4, 1),
]


def write(path, rows):
    if path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_every_two_responses_of_a_prompt_make_a_pair_labelled_by_the_higher_score(tmp_path, suffix):
    data = load_helpsteer2(
        str(write(tmp_path / f"hs2{suffix}", ROWS)), ("helpfulness", "verbosity")
    )
    assert data.objectives == ("helpfulness", "verbosity")
    got = [(p.prompt, p.response_a, p.response_b, dict(p.labels), dict(p.scores)) for p in data]
    assert got == [
        ("p0", "r0.0", "r0.1", {"helpfulness": "a", "verbosity": "tie"},
         {"helpfulness": (3.0, 1.0), "verbosity": (2.0, 2.0)}),
        ("p1", "r1.0", "r1.1", {"helpfulness": "b", "verbosity": "a"},
         {"helpfulness": (1.0, 4.0), "verbosity": (4.0, 0.0)}),
        ("p1", "r1.0", "r1.2", {"helpfulness": "b", "verbosity": "a"},
         {"helpfulness": (1.0, 4.0), "verbosity": (4.0, 1.0)}),
        ("p1", "r1.1", "r1.2", {"helpfulness": "tie", "verbosity": "b"},
         {"helpfulness": (4.0, 4.0), "verbosity": (0.0, 1.0)}),
    ]  # fmt: skip
    assert data.conflicting_fraction() == 0.5


def test_all_five_attributes_by_default(tmp_path):
    data = load_helpsteer2(str(write(tmp_path / "hs2.jsonl", ROWS)))
    assert data.objectives == ATTRIBUTES
    assert data[0].labels["correctness"] == "tie"


def test_an_objective_that_is_not_a_column_is_named(tmp_path):
    path = write(tmp_path / "hs2.jsonl", ROWS)
    with pytest.raises(MoaError, match=r"lacks column\(s\) \['harmless'\]") as err:
        load_helpsteer2(str(path), ("helpfulness", "harmless"))
    assert "verbosity" in str(err.value)  # the columns it has are listed


@pytest.mark.parametrize("value", [None, "high", True])
def test_a_score_that_is_not_a_number_is_named_with_its_row(tmp_path, value):
    rows = [dict(r) for r in ROWS]
    rows[3]["verbosity"] = value
    path = write(tmp_path / "hs2.jsonl", rows)
    with pytest.raises(MoaError, match=r"row 3: field 'verbosity' must be a number"):
        load_helpsteer2(str(path), ("helpfulness", "verbosity"))


def test_a_file_without_two_responses_to_any_prompt_is_refused(tmp_path):
    path = write(tmp_path / "hs2.jsonl", [ROWS[0], ROWS[1]])
    with pytest.raises(MoaError, match="no prompt has two responses"):
        load_helpsteer2(str(path))


def test_a_run_config_reads_helpsteer2_and_holds_out_whole_prompts(tmp_path):
    rows = [row(f"prompt {i // 2}", f"answer {i}", i % 5, (i * 3) % 5) for i in range(80)]
    path = write(tmp_path / "hs2.parquet", rows)
    cfg = load_config(
        None,
        [
            "data.source=helpsteer2",
            f"data.path={path}",
            "data.objectives=[helpfulness, verbosity]",
            "eval.enabled=false",
        ],
    )
    train = load_training_pairs(cfg.data)
    test = load_pairs(cfg.data, "test")
    assert train.objectives == ("helpfulness", "verbosity")
    assert len(train) + len(test) + len(load_pairs(cfg.data, "validation")) == 40
    assert 20 < len(train) < 40
    assert not {p.prompt for p in train} & {p.prompt for p in test}


def test_an_objective_reads_a_column_where_lower_is_better_negated(tmp_path):
    path = write(tmp_path / "hs2.jsonl", ROWS)
    concise = {"concise": Attribute(column="verbosity", higher_is_better=False)}
    data = load_helpsteer2(str(path), ("helpfulness", "concise"), attributes=concise)
    assert data.objectives == ("helpfulness", "concise")
    got = [(p.response_a, p.response_b, p.labels["concise"], p.scores["concise"]) for p in data]
    assert got == [
        ("r0.0", "r0.1", "tie", (-2.0, -2.0)),
        ("r1.0", "r1.1", "b", (-4.0, -0.0)),
        ("r1.0", "r1.2", "b", (-4.0, -1.0)),
        ("r1.1", "r1.2", "a", (-0.0, -1.0)),
    ]
    assert data[0].labels["helpfulness"] == "a"  # the other objective reads its own column


def test_a_run_config_maps_objectives_to_columns(tmp_path):
    path = write(tmp_path / "hs2.jsonl", ROWS)
    fields = [
        "data.source=helpsteer2",
        f"data.path={path}",
        "data.objectives=[helpful, concise]",
        "data.attributes={helpful: {column: helpfulness}, "
        "concise: {column: verbosity, higher_is_better: false}}",
        "data.validation_fraction=0",
        "data.test_fraction=0",
        "eval.enabled=false",
    ]
    pairs = load_training_pairs(load_config(None, fields).data)
    assert pairs.objectives == ("helpful", "concise")
    assert sorted(p.signs(pairs.objectives) for p in pairs) == [[-1, -1], [-1, -1], [0, 1], [1, 0]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["data.attributes={concise: {column: verbosity}}"], "source helpsteer2"),
        (
            ["data.source=helpsteer2", "data.attributes={concise: {column: verbosity}}"],
            r"attributes \['concise'\] are not objectives",
        ),
        (
            ["data.source=helpsteer2", "data.attributes={helpful: {colum: helpfulness}}"],
            "colum",
        ),
    ],
)
def test_bad_attributes_are_refused_naming_the_field(fields, message):
    with pytest.raises(MoaError, match=message):
        load_config(None, [*fields, "eval.enabled=false"])
