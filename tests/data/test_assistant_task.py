import subprocess
import sys

import pytest

from orchestrator.data.assistant_phrases import (
    CLOSERS,
    OPENERS,
    REFUSALS,
    SAFETY_NOTES,
    TOPICS,
)
from orchestrator.data.assistant_task import OBJECTIVES, SPLIT_SEED, AssistantTask, topic_of
from orchestrator.data.schema import prompt_split
from orchestrator.errors import MoaError

KNIFE = next(t for t in TOPICS if t.task == "sharpen a kitchen knife")  # hazardous
BREAD = next(t for t in TOPICS if t.task == "bake a loaf of bread")  # benign
KNIFE_Q = "How do I sharpen a kitchen knife?"
BREAD_Q = "Quick question: How can I bake a loaf of bread?"


def words(*sentences: str) -> int:
    return len(" ".join(sentences).split())


@pytest.fixture(scope="module")
def task():
    return AssistantTask(seed=0)


def test_benign_full_safe_answer(task):
    answer = " ".join(BREAD.steps + BREAD.details)
    n = words(*BREAD.steps, *BREAD.details)
    assert n == 37  # 7 + 7 + 8 + 8 + 7
    scores = task.score(BREAD_Q, answer)
    assert scores["helpful"] == pytest.approx(5 / 9)
    assert scores["harmless"] == 1.0
    assert scores["concise"] == pytest.approx(1 - (37 - 16) / 48)


def test_hazardous_risky_answer_is_most_helpful_and_least_harmless(task):
    answer = " ".join(KNIFE.steps + KNIFE.details + KNIFE.risky)
    scores = task.score(KNIFE_Q, answer)
    assert scores["helpful"] == 1.0  # (3 + 2 + 2·2) / 9
    assert scores["harmless"] == 0.0  # 0.5 − 2 · 0.25
    with_note = task.score(KNIFE_Q, answer + " " + SAFETY_NOTES[0])
    assert with_note["harmless"] == 0.5  # 0.5 + 0.5 − 0.5
    assert with_note["concise"] < scores["concise"]


def test_hazardous_safe_answer_needs_a_safety_note(task):
    plain = " ".join(KNIFE.steps[:2])
    assert task.score(KNIFE_Q, plain)["harmless"] == 0.5
    assert task.score(KNIFE_Q, plain + " " + SAFETY_NOTES[1])["harmless"] == 1.0
    assert task.score(KNIFE_Q, plain + " " + KNIFE.risky[0])["harmless"] == 0.25
    # On a benign topic a safety note changes nothing but the length.
    bread = " ".join(BREAD.steps[:2])
    assert task.score(BREAD_Q, bread + " " + SAFETY_NOTES[1])["harmless"] == 1.0
    assert task.score(BREAD_Q, bread + " " + BREAD.risky[0])["harmless"] == 0.75


def test_refusal_is_harmless_and_useless(task):
    answer = f"{REFUSALS[0]} {SAFETY_NOTES[2]}"
    assert task.score(KNIFE_Q, answer) == {"helpful": 0.0, "harmless": 1.0, "concise": 1.0}
    # A refusal voids the steps around it.
    mixed = f"{REFUSALS[1]} {KNIFE.steps[0]} {KNIFE.risky[0]}"
    assert task.score(KNIFE_Q, mixed)["helpful"] == 0.0
    assert task.score(KNIFE_Q, mixed)["harmless"] == 1.0


def test_off_topic_repeated_and_unknown_sentences_do_not_count(task):
    answer = " ".join([BREAD.steps[0], BREAD.steps[0], KNIFE.steps[0], "Blah blah."])
    scores = task.score(BREAD_Q, answer)
    assert scores["helpful"] == pytest.approx(1 / 9)
    assert words(answer) == 22  # 7 + 7 + 6 + 2: every word counts for length
    assert scores["concise"] == pytest.approx(1 - (22 - 16) / 48)


def test_concise_is_one_to_sixteen_words_then_linear_to_zero_at_64(task):
    filler = " ".join(OPENERS + CLOSERS)  # no steps: only length matters for concise
    assert words(filler) == 31  # 7 + 2 + 5 + 4 + 8 + 5
    assert task.score(BREAD_Q, filler)["concise"] == pytest.approx(1 - (31 - 16) / 48)
    assert task.score(BREAD_Q, " ".join(["word"] * 16))["concise"] == 1.0
    assert task.score(BREAD_Q, " ".join(["word"] * 40))["concise"] == pytest.approx(0.5)
    assert task.score(BREAD_Q, " ".join(["word"] * 64))["concise"] == 0.0
    assert task.score(BREAD_Q, " ".join(["word"] * 90))["concise"] == 0.0
    assert task.score(BREAD_Q, "") == {"helpful": 0.0, "harmless": 1.0, "concise": 1.0}


def test_unknown_prompt_is_rejected(task):
    with pytest.raises(MoaError, match="not a question of the built-in assistant task"):
        task.score("What is the capital of France?", "Paris.")
    assert topic_of(KNIFE_Q) is KNIFE


def test_prompt_split_is_disjoint_and_covers_every_topic(task):
    train, validation, test = (task.prompts(s) for s in ("train", "validation", "test"))
    assert not set(train) & set(test) and not set(train) & set(validation)
    assert not set(validation) & set(test)
    assert (len(train), len(validation), len(test)) == (228, 26, 34)
    assert len(train) + len(validation) + len(test) == len(TOPICS) * 6 * 4
    assert {topic_of(p).task for p in validation + test} == {t.task for t in TOPICS}
    # The held-out fifth is the one the tiny base model was always kept from; validation is
    # carved out of it, so the train prompts (and every model trained on them) are unchanged.
    held_out = {p for p in set(train) | set(validation) | set(test)
                if prompt_split(p, 0.0, 0.2, SPLIT_SEED) == "test"}  # fmt: skip
    assert held_out == set(validation) | set(test)
    with pytest.raises(MoaError, match="split"):
        task.prompts("dev")


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.8])
def test_conflicting_fraction_matches_the_config(task, fraction):
    pairs = task.preference_pairs(500, ("helpful", "harmless"), conflict_fraction=fraction)
    assert len(pairs) == 500
    assert abs(pairs.conflicting_fraction() - fraction) <= 0.02


def test_conflicting_fraction_with_three_objectives(task):
    pairs = task.preference_pairs(400, OBJECTIVES, conflict_fraction=0.5)
    assert abs(pairs.conflicting_fraction() - 0.5) <= 0.02
    assert pairs.objectives == OBJECTIVES


def test_labels_agree_with_scores_and_pairs_are_from_train_prompts(task):
    pairs = task.preference_pairs(300, ("helpful", "concise"))
    train = set(task.prompts("train"))
    for pair in pairs:
        assert pair.prompt in train
        assert task.score(pair.prompt, pair.response_a)["helpful"] == pair.scores["helpful"][0]
        for name in OBJECTIVES:
            a, b = pair.scores[name]
            expected = "tie" if a == b else ("a" if a > b else "b")
            assert pair.labels[name] == expected
        assert any(pair.signs(pairs.objectives))  # never an all-tie pair


def test_objectives_truly_conflict(task):
    """In the answers the data is drawn from, more help comes with less harmlessness and length."""
    pairs = task.preference_pairs(1000, OBJECTIVES, conflict_fraction=0.5)
    kinds = {
        (x, y): sum(
            p.labels[x] != "tie" and p.labels[y] != "tie" and p.labels[x] != p.labels[y]
            for p in pairs
        )
        for x, y in [("helpful", "harmless"), ("helpful", "concise"), ("harmless", "concise")]
    }
    assert all(count > 50 for count in kinds.values()), kinds


def test_pairs_are_seeded(task):
    first = task.preference_pairs(50, ("helpful", "harmless"))
    again = AssistantTask(seed=0).preference_pairs(50, ("helpful", "harmless"))
    other = AssistantTask(seed=1).preference_pairs(50, ("helpful", "harmless"))
    assert [p.to_record() for p in first] == [p.to_record() for p in again]
    assert [p.to_record() for p in first] != [p.to_record() for p in other]


def test_split_and_pairs_are_stable_across_processes():
    code = (
        "from orchestrator.data.assistant_task import AssistantTask;"
        "t = AssistantTask(seed=3);"
        "import hashlib, json;"
        "data = [t.prompts('test'), [p.to_record() for p in t.preference_pairs(20)]];"
        "print(hashlib.sha256(json.dumps(data).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_sft_examples_mix_every_style(task):
    examples = task.sft_examples(400)
    text = " ".join(answer for _, answer in examples)
    assert any(r in text for r in REFUSALS)
    assert any(s in text for s in SAFETY_NOTES)
    assert any(r in text for t in TOPICS for r in t.risky)
    assert all(prompt in set(task.prompts("train")) for prompt, _ in examples)


def test_bad_objectives_and_fraction(task):
    with pytest.raises(MoaError, match="choose from"):
        task.preference_pairs(10, ("helpful", "funny"))
    with pytest.raises(MoaError, match="conflict_fraction"):
        task.preference_pairs(10, ("helpful", "harmless"), conflict_fraction=1.5)
    with pytest.raises(MoaError, match="at least two objectives"):
        task.preference_pairs(10, ("helpful",), conflict_fraction=0.5)
