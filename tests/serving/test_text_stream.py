"""Incremental detokenisation: the pieces add up to the whole answer's text, characters split
across byte-level tokens are held back until whole, and each token is decoded within a short
window rather than with the whole answer again."""

from orchestrator.serving.text_stream import TextStream

TEXT = "Héllo wörld 🙂 — naïve café, ok? 日本語 done"


def test_pieces_add_up_to_the_whole_text_and_never_split_a_character(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(TEXT.split())  # byte-level: some characters take several tokens
    stream = TextStream(tokenizer)
    pieces = [stream.push(token, last=i == len(ids) - 1) for i, token in enumerate(ids)]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in piece for piece in pieces)
    assert any(piece == "" for piece in pieces)  # held back while a character was incomplete


def test_a_stop_token_adds_nothing_and_decoding_stays_in_a_window(tokenizer):
    stream = TextStream(tokenizer)
    ids = tokenizer("one two three four five six", add_special_tokens=False)["input_ids"]
    for token in ids:
        stream.push(token)
        assert len(stream.ids) - stream.prefix <= 2  # the window, not the whole answer
    assert stream.push(None, last=True) == ""
