"""Generation with a preference vector per row: `generate` answers prompts through the continuous
decoder (model/decoder.py), up to batch_size rows at a time, each row at its own λ; a row that
finishes makes room for the next prompt at once. A row generates the same tokens in any batch as
alone, and a seeded sampled row the same text whatever batch it lands in.
"""

from collections.abc import Sequence
from dataclasses import replace

from torch import nn
from tqdm import tqdm

from orchestrator.data.encoding import encode_prompt
from orchestrator.errors import MoaError
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.sampling import SamplingParams, stop_token_ids
from orchestrator.model.svd_lora import preference_kept, svd_lora_config
from orchestrator.objectives.preference import PreferenceLike, validate_preference


def generate(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    preferences: PreferenceLike | None,
    params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    **options,
) -> list[str]:
    """Answers to `prompts` at their preferences, as text; see `generate_ids` for the arguments
    (options: batch_size, max_prompt_tokens, progress)."""
    ids = generate_ids(model, tokenizer, prompts, preferences, params, **options)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def generate_ids(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    preferences: PreferenceLike | None,
    params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    *,
    batch_size: int = 64,
    max_prompt_tokens: int = 256,
    progress: bool = False,
) -> list[list[int]]:
    """The new token ids of the answer to each prompt (stop token excluded).

    `preferences`: one λ [m] for every prompt, one per prompt [N, m], or None for a model without
    adapter (or with it switched off). A single SamplingParams serves every prompt, row i with
    seed `seed + i`, so repeated prompts give different samples.
    """
    if isinstance(params, SamplingParams):
        params = [replace(params, seed=params.seed + i) for i in range(len(prompts))]
    if len(params) != len(prompts):
        raise MoaError(f"got {len(params)} sampling params for {len(prompts)} prompts")
    lam = None
    if preferences is not None:
        lam = validate_preference(preferences, svd_lora_config(model).num_objectives)
        if lam.dim() == 1:
            lam = lam.expand(len(prompts), -1)
        if lam.shape[0] != len(prompts):
            raise MoaError(
                f"preferences must have shape [m] or [{len(prompts)}, m]; got {list(lam.shape)}"
            )
    decoder = ContinuousDecoder(
        model,
        tokenizer.pad_token_id,
        stop_token_ids(model, tokenizer),
        max_num_seqs=min(batch_size, len(prompts)) or 1,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max((p.max_new_tokens for p in params), default=1),
    )
    for i, prompt in enumerate(prompts):
        row_lam = None if lam is None else lam[i].tolist()
        decoder.add(i, encode_prompt(tokenizer, prompt, max_prompt_tokens), row_lam, params[i])
    was_training = model.training
    model.eval()
    answers: list[list[int]] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), desc="generate", unit="answer", disable=not progress)
    try:
        with preference_kept(model):  # the decoder writes each step's λ rows
            while decoder.has_work():
                for i, piece in decoder.step():
                    if piece.token is not None:
                        answers[i].append(piece.token)
                    bar.update(piece.finish is not None)
    finally:
        bar.close()
        model.train(was_training)
    return answers
