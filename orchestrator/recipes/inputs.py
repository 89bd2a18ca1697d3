"""What every training recipe checks on the driver before any Ray worker starts: the dataset
(its objectives, at least one global batch), the model and its context, the scorers,
adapter.init_from. A
mistake fails here, with the field named."""

from orchestrator.config import RunConfig
from orchestrator.data.schema import PairDataset
from orchestrator.data.sources import load_training_pairs
from orchestrator.errors import MoaError
from orchestrator.evaluation.run_front import split_prompts
from orchestrator.evaluation.scorers import check_scorers
from orchestrator.model.adapter_io import read_adapter_config
from orchestrator.model.loading import context_length, load_tokenizer
from orchestrator.objectives.preference import validate_preference


def check_training_inputs(cfg: RunConfig, generated: dict[str, int] | None = None) -> PairDataset:
    """The training pairs, once every input has been checked (this also builds the built-in base
    model once, on the driver). `generated`: the recipe's own answer lengths (field → tokens),
    which must fit in the model's context with a prompt, as training's and evaluation's must."""
    try:
        pairs = load_training_pairs(cfg.data)
    except MoaError as err:
        raise MoaError(f"data: {err}") from None
    if cfg.train.preference_per_pair:
        try:
            validate_preference(pairs.preferences(), len(cfg.data.objectives))
        except MoaError as err:
            raise MoaError(f"data: train.preference_per_pair: {err}") from None
    if len(pairs.pairs) < cfg.global_batch:
        raise MoaError(
            f"data: {len(pairs.pairs)} training pairs, fewer than one global batch of "
            f"{cfg.global_batch} (train.batch_size × scaling.num_workers × train.grad_accum_steps)"
        )
    try:
        load_tokenizer(cfg.model.name_or_path)
    except MoaError as err:
        raise MoaError(f"model.name_or_path: {err}") from None
    answers = {"data.max_response_tokens": cfg.data.max_response_tokens, **(generated or {})}
    if cfg.eval.enabled:
        answers["eval.max_new_tokens"] = cfg.eval.max_new_tokens
        check_scorers(cfg)
        _check_held_out_prompts(cfg)
    _check_context(cfg, answers)
    if cfg.adapter.init_from is not None:
        check_initial_adapter(cfg)
    return pairs


def check_initial_adapter(cfg: RunConfig) -> None:
    """adapter.init_from must be an adapter of this run's shape."""
    try:
        saved = read_adapter_config(cfg.adapter.init_from)
    except MoaError as err:
        raise MoaError(f"adapter.init_from: {err}") from None
    expected = {
        "num_objectives": len(cfg.data.objectives),
        "rank": cfg.adapter.rank,
        "alpha": cfg.adapter.alpha,
    }
    for field, value in expected.items():
        if getattr(saved, field) != value:
            raise MoaError(
                f"adapter.init_from: the adapter at {cfg.adapter.init_from} has "
                f"{field}={getattr(saved, field)!r}; this run needs {value!r}"
            )


def _check_held_out_prompts(cfg: RunConfig) -> None:
    """The front needs test prompts, and selection during training validation prompts."""
    needed = {"test": "data.test_fraction"}
    if cfg.eval.every:
        needed["validation"] = "data.validation_fraction"
    for split, field in needed.items():
        if not split_prompts(cfg, split):
            raise MoaError(
                f"data: no prompt of the dataset falls in its {split} split ({field} = "
                f"{getattr(cfg.data, field.removeprefix('data.'))}), which the front needs; "
                f"raise {field} or set eval.enabled: false"
            )


def _check_context(cfg: RunConfig, answers: dict[str, int]) -> None:
    """A prompt of data.max_prompt_tokens and each answer length of `answers` (field → tokens)
    must fit in the model's context."""
    context = context_length(cfg.model.name_or_path)
    prompt = cfg.data.max_prompt_tokens
    for field, tokens in answers.items():
        if context is not None and prompt + tokens > context:
            raise MoaError(
                f"data.max_prompt_tokens + {field} ({prompt} + {tokens}) exceed the context of "
                f"{cfg.model.name_or_path} ({context} tokens)"
            )
