import pytest

from orchestrator.data.schema import PairDataset, PreferencePair, is_held_out
from orchestrator.errors import MoaError


def pair(prompt="p", helpful="a", harmless="b", scores=None):
    return PreferencePair(prompt, "ra", "rb", {"helpful": helpful, "harmless": harmless}, scores)


def test_signs_and_conflict():
    conflicting = pair(helpful="a", harmless="b")
    assert conflicting.signs(["helpful", "harmless"]) == [1, -1]
    assert conflicting.signs(["harmless", "helpful"]) == [-1, 1]
    assert conflicting.is_conflicting(["helpful", "harmless"])
    assert not conflicting.is_conflicting(["helpful"])
    assert not pair(helpful="a", harmless="tie").is_conflicting(["helpful", "harmless"])
    assert not pair(helpful="b", harmless="b").is_conflicting(["helpful", "harmless"])


def test_conflicting_fraction():
    pairs = [pair(helpful="a", harmless="b"), pair(helpful="a", harmless="a")] * 2
    pairs.append(pair(helpful="tie", harmless="b"))
    assert PairDataset(("helpful", "harmless"), pairs).conflicting_fraction() == pytest.approx(
        2 / 5
    )
    assert PairDataset(("helpful",), pairs).conflicting_fraction() == 0.0


def test_jsonl_round_trip(tmp_path):
    data = PairDataset(("helpful", "harmless"), [pair(scores={"helpful": (1.0, 0.5)}), pair("q")])
    data.save_jsonl(tmp_path / "pairs.jsonl")
    loaded = PairDataset.load_jsonl(tmp_path / "pairs.jsonl")
    assert loaded.objectives == data.objectives
    assert [p.to_record() for p in loaded] == [p.to_record() for p in data]
    assert loaded[0].scores == {"helpful": (1.0, 0.5)}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": 3, "response_a": "a", "response_b": "b", "labels": {"x": "a"}}, "'prompt'"),
        ({"prompt": "p", "response_a": "a", "labels": {"x": "a"}}, "'response_b'"),
        ({"prompt": "p", "response_a": "a", "response_b": "b", "labels": {}}, "'labels'"),
        (
            {"prompt": "p", "response_a": "a", "response_b": "b", "labels": {"x": "c"}},
            "labels\\['x'\\]",
        ),
        (
            {
                "prompt": "p",
                "response_a": "a",
                "response_b": "b",
                "labels": {"x": "a"},
                "scores": {"x": 1},
            },
            "'scores'",
        ),
    ],
)
def test_bad_records_name_the_field(record, message):
    with pytest.raises(MoaError, match=message):
        PreferencePair.from_record(record, "row 7")


def test_missing_objective_label_is_named():
    with pytest.raises(MoaError, match=r"pair 1 has no label for objective\(s\) \['harmless'\]"):
        PairDataset(
            ("helpful", "harmless"), [pair(), PreferencePair("p", "a", "b", {"helpful": "a"})]
        )
    with pytest.raises(MoaError, match="not in this dataset"):
        PairDataset(("helpful",), [pair()]).select_objectives(["concise"])


def test_split_is_by_prompt_stable_and_seeded():
    pairs = [pair(f"prompt {i % 50}") for i in range(200)]
    train, test = PairDataset(("helpful",), pairs).split(0.2, seed=0)
    assert len(train) + len(test) == 200
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert 0.05 < len(test) / 200 < 0.4
    again_train, _ = PairDataset(("helpful",), pairs).split(0.2, seed=0)
    assert [p.prompt for p in again_train] == [p.prompt for p in train]
    other = {p.prompt for p in PairDataset(("helpful",), pairs).split(0.2, seed=1)[1]}
    assert other != {p.prompt for p in test}
    # SHA-256 based: a known key lands on a fixed side, whatever the process.
    assert [is_held_out(f"k{i}", 0.5, 0) for i in range(8)] == [
        is_held_out(f"k{i}", 0.5, 0) for i in range(8)
    ]
    with pytest.raises(MoaError, match="test_fraction"):
        is_held_out("k", 1.0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "first line must be a header"),
        ('{"prompt": "p"}\n', "first line must be a header"),
        ('{"objectives": ["helpful"]}\n{not json}\n', "line 2 is not JSON"),
        ('{"objectives": ["helpful"]}\n{"prompt": "p"}\n', "row 0: field 'response_a'"),
    ],
)
def test_bad_jsonl_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    with pytest.raises(MoaError, match=message):
        PairDataset.load_jsonl(path)
    with pytest.raises(MoaError, match="does not exist"):
        PairDataset.load_jsonl(tmp_path / "missing.jsonl")
