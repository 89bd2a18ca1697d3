"""An answer's text as its tokens arrive, each token decoded once within a short window.

Decoding the whole answer again at every token costs O(n²) over an answer. `TextStream` keeps
two offsets into the tokens, as text-generation servers do: the text of the tokens from
`prefix` is compared with the text of those from `prefix` to `read`, and what it adds is new.
Text that ends in an incomplete character (a byte-level token that splits one) is held back
until the character completes, so the pieces add up to the whole answer's text.
"""


class TextStream:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.before = ""  # the text of the tokens from prefix to read

    def push(self, token: int | None, last: bool = False) -> str:
        """The text `token` (None: no token, e.g. the stop token) adds; on the `last` push,
        whatever was held back."""
        if token is not None:
            self.ids.append(token)
        now = self._text(self.prefix, len(self.ids))
        if len(now) <= len(self.before) or (now.endswith("\ufffd") and not last):
            return ""
        new = now[len(self.before) :]
        self.prefix, self.read = self.read, len(self.ids)
        self.before = self._text(self.prefix, self.read)
        return new

    def _text(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=True)
