import pytest

from orchestrator.data.schema import PairDataset, PreferencePair, prompt_split
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
    parts = PairDataset(("helpful",), pairs).split(0.1, 0.2, seed=0)
    assert list(parts) == ["train", "validation", "test"]
    prompts = {name: {p.prompt for p in part} for name, part in parts.items()}
    assert sum(len(part) for part in parts.values()) == 200
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"] and not prompts["validation"] & prompts["test"]
    assert 0.02 < len(parts["validation"]) / 200 < 0.25 and 0.05 < len(parts["test"]) / 200 < 0.4
    again = PairDataset(("helpful",), pairs).split(0.1, 0.2, seed=0)
    assert [p.prompt for p in again["train"]] == [p.prompt for p in parts["train"]]
    other = {p.prompt for p in PairDataset(("helpful",), pairs).split(0.1, 0.2, seed=1)["test"]}
    assert other != prompts["test"]
    # One draw u per prompt: validation is u < 0.1, test 0.1 ≤ u < 0.3; with no validation
    # fraction the same prompts are held out, all of them as test.
    held_out = PairDataset(("helpful",), pairs).split(0.0, 0.3, seed=0)
    assert {p.prompt for p in held_out["test"]} == prompts["validation"] | prompts["test"]
    # SHA-256 based: a known key lands in a fixed split, whatever the process.
    assert [prompt_split(f"k{i}", 0.25, 0.25) for i in range(6)] == [
        "train", "validation", "test", "validation", "train", "test"
    ]  # fmt: skip
    with pytest.raises(MoaError, match="must be below 1"):
        prompt_split("k", 0.5, 0.5)
    with pytest.raises(MoaError, match="test_fraction must be ≥ 0"):
        prompt_split("k", 0.1, -0.1)


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
