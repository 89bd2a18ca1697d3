import torch

from orchestrator.data.encoding import (
    EncodedPair,
    collate_pairs,
    encode_prompt,
    encode_response,
    pad_batch,
)


class WordTokenizer:
    """A stand-in tokenizer: one id per word, no chat template."""

    eos_token_id, pad_token_id = 1, 0
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(word) + 10 for word in text.split()]}


def test_prompt_is_truncated_from_the_left_and_response_gets_eos():
    tok = WordTokenizer()
    assert encode_prompt(tok, "a bb ccc dddd", max_tokens=2) == [13, 14]
    assert encode_response(tok, "a bb", max_tokens=10) == [11, 12, 1]
    assert encode_response(tok, "a bb ccc", max_tokens=2) == [11, 12]


def test_loss_mask_covers_response_and_eos_only():
    batch = pad_batch([([5, 6, 7], [8, 1]), ([5], [9, 9, 9, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 1], [5, 9, 9, 9, 1]]
    assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]
    short = pad_batch([([5], [8, 1]), ([5, 6, 7], [9, 9, 1])], pad_id=0)
    assert short["input_ids"].tolist() == [[5, 8, 1, 0, 0, 0], [5, 6, 7, 9, 9, 1]]
    assert short["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert short["loss_mask"].tolist() == [[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]


def test_pair_batch_puts_all_a_rows_first():
    pairs = [EncodedPair([5], [6, 1], [7, 1], [1, -1]), EncodedPair([5], [8, 1], [9, 9, 1], [0, 1])]
    batch = collate_pairs(pairs, pad_id=0)
    assert batch["input_ids"][:, :3].tolist() == [[5, 6, 1], [5, 8, 1], [5, 7, 1], [5, 9, 9]]
    assert torch.equal(batch["signs"], torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
