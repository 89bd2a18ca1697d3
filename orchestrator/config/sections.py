"""The sections of a run configuration, one pydantic model each: what training, evaluation,
scaling and each recipe (SIPO, SPO, compare, tune, serve) can be told.

Every section forbids unknown keys, so a typo fails before anything runs, with the field named.
Checks that span sections live with RunConfig (config/run.py).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
Count = Annotated[int, Field(ge=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    name_or_path: str = "builtin:tiny"  # a hub id, a local directory, or the built-in tiny model
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")] = "auto"  # auto: GPU if any


class AdapterSection(Section):
    rank: Count = 8
    alpha: Positive = 64.0  # the adapter's scale is alpha / rank
    target_modules: list[str] | None = None  # default: every linear layer but the LM head
    init_std: Positive = 0.02
    # An SVD-LoRA adapter folder (a run's RUN_DIR/adapter) to start from instead of ΔW = 0; its
    # rank, alpha and target modules must match the fields above.
    init_from: str | None = None


class RewardSection(Section):
    """`moa reward`: per-objective reward models on the model.name_or_path backbone, trained with
    the Bradley–Terry loss on the training pairs' labels (ties left out), optimised by train.*."""

    # One model per objective instead of one backbone with a scalar head per objective.
    per_objective: bool = False
    # LoRA of this rank on every linear layer of the backbone (the heads train in full) instead
    # of training every weight; merged into the weights when saved, so the folder is a plain
    # model that from_pretrained loads.
    lora_rank: Count | None = None
    lora_alpha: Positive = 16.0
    held_out_pairs: Count = 400  # built-in task: pairs on its test prompts, to measure accuracy


class Attribute(Section):
    """The HelpSteer2 score column an objective is read from, and which way is better."""

    column: str
    higher_is_better: bool = True


class DataSection(Section):
    source: Literal["assistant", "pku_saferlhf", "helpsteer2", "jsonl"] = "assistant"
    # A hub id or a local file or folder for pku_saferlhf and helpsteer2 (default: the hub's
    # dataset); the pairs file for jsonl.
    path: str | None = None
    objectives: list[str] = ["helpful", "harmless"]
    # helpsteer2: an objective's attribute column where it is not the objective's own name, or
    # where a lower score is better (concise: {column: verbosity, higher_is_better: false}).
    attributes: dict[str, Attribute] = {}
    num_pairs: Count = 2000  # built-in task only
    conflict_fraction: Probability = 0.5  # built-in task only
    # Held-out prompts of a file dataset (the built-in task's split is fixed): validation
    # prompts select models, test prompts measure them.
    validation_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    test_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    seed: int = 0
    max_prompt_tokens: Count = 64
    max_response_tokens: Count = 96

    @model_validator(mode="after")
    def _check(self) -> "DataSection":
        if len(set(self.objectives)) != len(self.objectives) or len(self.objectives) < 2:
            raise ValueError(
                f"objectives must be at least two distinct names; got {self.objectives}"
            )
        if not self.validation_fraction + self.test_fraction < 1:
            raise ValueError(
                f"validation_fraction + test_fraction ({self.validation_fraction} + "
                f"{self.test_fraction}) must be below 1: some prompts must be left to train on"
            )
        if self.source == "jsonl" and not self.path:
            raise ValueError("source 'jsonl' needs data.path")
        if self.attributes and self.source != "helpsteer2":
            raise ValueError("attributes map objectives to HelpSteer2 columns: source helpsteer2")
        unknown = sorted(set(self.attributes) - set(self.objectives))
        if unknown:
            raise ValueError(f"attributes {unknown} are not objectives {self.objectives}")
        return self


class TrainSection(Section):
    loss: Literal["dpo", "sft"] = "dpo"
    aggregation: Literal["ls", "tche", "stch"] = "ls"
    stch_mu: Positive = 0.1
    beta: Positive = 0.1
    # Length-normalised NLL of each objective's chosen response (0: plain DPO). It keeps the
    # policies at the extreme preferences fluent, where plain DPO lets the chosen likelihood fall.
    nll_weight: Annotated[float, Field(ge=0.0)] = 0.2
    learning_rate: Positive = 2e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    batch_size: Count = 16  # pairs per micro-batch
    # Each pair one sequence [prompt, a, b] (b does not see a), pairs side by side in rows of up
    # to pack_tokens tokens: no padding inside, no prompt computed twice; false: padded rows
    packing: bool = True
    pack_tokens: Count = 1024
    # Keep only each decoder layer's inputs and run it again in the backward pass: less memory,
    # about a third more compute
    gradient_checkpointing: bool = False
    grad_accum_steps: Count = 1
    max_steps: Count = 300
    # Linear warm-up of the learning rate; default min(20, max_steps // 5) (see `warmup`).
    warmup_steps: Annotated[int, Field(ge=0)] | None = None
    max_grad_norm: Positive | None = 1.0
    vertex_probability: Probability = 0.2  # chance that a step trains a single objective
    precompute_reference: bool = True  # reference log-probs once per dataset, not per step
    # The DPO anchor: "base" is π_ref, the base model with the adapter off; "initial" is the
    # adapter training started from (adapter.init_from), frozen, at the step's λ: SIPO's
    # re-alignment anchored on the current policy. It depends on λ, so it is computed per step.
    reference: Literal["base", "initial"] = "base"
    # A fixed λ for every step instead of one sampled per step: a model for one trade-off (DPS;
    # and the λ the adapter runs at for the single-objective baselines).
    preference: list[float] | None = None
    # Train this objective's loss alone instead of aggregating all of them (a DPO expert, an SPO
    # stage, MODPO's main objective); its λ defaults to the objective's vertex e_i.
    objective: str | None = None
    # Each pair trains at the λ the data gives it (its "preference"; SIPO's new pairs: the λ
    # their candidate was generated at) instead of a λ per step. Its labels must agree on every
    # objective, so that the aggregation is the same at any λ.
    preference_per_pair: bool = False
    seed: int = 0
    log_every: Count = 10

    @model_validator(mode="after")
    def _check(self) -> "TrainSection":
        if self.preference_per_pair and (self.preference is not None or self.objective is not None):
            raise ValueError(
                "preference_per_pair trains each pair at its own λ; it excludes preference and "
                "objective, which fix one"
            )
        if self.warmup_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps}): the "
                "learning rate would never reach train.learning_rate"
            )
        return self

    @property
    def warmup(self) -> int:
        """The warm-up steps: warmup_steps, else min(20, max_steps // 5)."""
        return min(20, self.max_steps // 5) if self.warmup_steps is None else self.warmup_steps


class DeepSpeedSection(Section):
    zero_stage: Literal[2, 3] = 2
    offload_optimizer: bool = False  # optimizer states in CPU memory
    offload_params: bool = False  # ZeRO-3 only: parameters in CPU memory
    bf16: bool = False  # DeepSpeed's bf16 mode (GPU only; the adapter's master copy stays fp32)
    config: dict[str, Any] = {}  # merged last into the generated DeepSpeed config

    @model_validator(mode="after")
    def _check(self) -> "DeepSpeedSection":
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage: 3")
        return self


class ScalingSection(Section):
    """How many Ray Train workers, on what, and how they combine gradients.

    The global batch is train.batch_size × num_workers × train.grad_accum_steps pairs.
    """

    num_workers: Count = 1
    use_gpu: bool = False  # one GPU per worker, NCCL; otherwise CPU workers and gloo
    cpus_per_worker: Positive = 1.0
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    deepspeed: DeepSpeedSection = DeepSpeedSection()


class GenerationSection(Section):
    """The generation pool: Ray actors that each hold the base model and the adapter."""

    num_actors: Count = 1
    cpus_per_actor: Positive = 1.0
    gpus_per_actor: Annotated[float, Field(ge=0.0)] = 0.0
    batch_size: Count = 32  # requests per forward pass of one actor (each with its own λ)


class CheckpointSection(Section):
    every: Count = 50  # optimizer steps between checkpoints (the last step always gets one)
    keep: Count = 2  # most recent checkpoints kept; the best adapter by hypervolume is kept too
    max_failures: Annotated[int, Field(ge=-1)] = 0  # worker-group restarts; -1: unlimited


class LoggingSection(Section):
    tensorboard: bool = True  # event files in RUN_DIR/tensorboard
    mlflow: bool = True  # log to MLflow too, when it is installed
    mlflow_tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI or ./mlruns


class RewardModelScorer(Section):
    """One output of a sequence classifier as an objective's score: sign · (raw − offset) / scale.
    `model`: a folder with config.json (a `moa reward` run's reward_model/, or any Hugging Face
    sequence classifier) or a hub id. `head`: the output's index or label (config.id2label);
    needed when the model has several. sign −1 makes a cost model's output a score."""

    model: str
    head: int | str | None = None
    sign: Literal[1, -1] = 1
    offset: float = 0.0
    scale: Positive = 1.0


# ground_truth: the built-in task's exact scorers; implicit: β(log π_{λ=e_i} − log π_ref) of the
# model being scored (the adapter steered fully to the objective against the base).
Scorer = Literal["ground_truth", "implicit"] | RewardModelScorer


class EvalSection(Section):
    enabled: bool = True  # false: no evaluation at all, after or during training
    # Objective → its scorer, for fronts, model selection, sweeps and comparisons. Default: the
    # ground truth on the built-in task; any other data needs a scorer for every objective.
    scorers: dict[str, Scorer] = {}
    implicit_beta: Positive = 0.1  # β of implicit scorers
    grid_divisions: Count = 10  # λ grid: multiples of 1/divisions on the simplex
    num_prompts: Count = 60  # test prompts per λ, at most (the built-in task has 34)
    temperature: Annotated[float, Field(ge=0.0)] = 0.0  # 0: greedy
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    answers_per_prompt: Count = 1  # more than 1 only makes sense when sampling
    seed: int = 0
    max_new_tokens: Count = 96
    batch_size: Count = 128
    # Needed unless every scorer is ground truth (whose scores lie in [0, 1]; default 0 each).
    reference_point: list[float] | None = None
    # During training: every `every` steps (0: only at the end), the hypervolume over a coarse
    # grid on validation prompts picks the best checkpoint (and ranks a sweep's trials).
    every: Annotated[int, Field(ge=0)] = 0
    coarse_grid_divisions: Count = 4
    coarse_num_prompts: Count = 16  # validation prompts (the built-in task has 26)

    @model_validator(mode="after")
    def _check(self) -> "EvalSection":
        _check_sampling(self.temperature, self.top_p)
        if self.answers_per_prompt > 1 and self.temperature == 0:
            raise ValueError(
                f"answers_per_prompt ({self.answers_per_prompt}) > 1 needs temperature > 0 "
                "(greedy answers repeat)"
            )
        return self


def _check_sampling(temperature: float, top_p: float) -> None:
    if top_p < 1 and temperature == 0:
        raise ValueError(
            f"top_p ({top_p}) needs temperature > 0: greedy decoding takes the likeliest token"
        )


class SIPOSection(Section):
    """SIPO self-improvement rounds (`moa sipo`) on a Panacea model (ALGORITHMS.md §3)."""

    # A finished Panacea run folder whose adapter starts round 1; default: train Panacea first,
    # with this config, in RUN_DIR/panacea.
    init_from: str | None = None
    rounds: Count = 1
    max_pairs: Count | None = None  # conflicting pairs improved per round (a seeded sample)
    # Candidates at the simplex lattice of this many divisions, vertices excluded: 0.2 … 0.8
    # for two objectives.
    candidate_divisions: Annotated[int, Field(ge=2)] = 5
    candidates_per_preference: Count = 1  # more than 1 needs temperature > 0
    temperature: Annotated[float, Field(ge=0.0)] = 0.0  # 0: greedy
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    max_new_tokens: Count = 96
    seed: int = 0
    # The model reviews each candidate and rewrites it; the rewrite replaces the candidate when
    # it is better on at least one judge.
    review: bool = False
    # implicit: β(log π_{λ=e_i} − log π_ref) of the current model; ground_truth: the built-in
    # task's scorers; reward_models: a reward (or cost) model's output per objective.
    judge: Literal["implicit", "ground_truth", "reward_models"] = "implicit"
    judge_beta: Positive = 0.1
    reward_models: dict[str, RewardModelScorer] = {}  # objective → {model, head, sign, …}
    # Re-alignment on the new pairs: DPO + NLL (normalised by response tokens), anchored on the
    # round's starting policy; the other training fields come from `train`.
    beta: Positive = 0.1
    nll_weight: Annotated[float, Field(ge=0.0)] = 0.1
    learning_rate: Positive = 5e-4
    epochs: Positive = 2.0  # passes over the round's new pairs
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    # The λ each new pair trains at: "generated", the λ its candidate was generated at (and is
    # better at); "sampled", a λ drawn per step as in Panacea.
    realign_at: Literal["generated", "sampled"] = "sampled"

    @model_validator(mode="after")
    def _check(self) -> "SIPOSection":
        _check_sampling(self.temperature, self.top_p)
        if self.candidates_per_preference > 1 and self.temperature == 0:
            raise ValueError(
                "candidates_per_preference > 1 needs temperature > 0 (greedy answers repeat)"
            )
        if self.judge == "reward_models" and not self.reward_models:
            raise ValueError(
                "judge 'reward_models' needs reward_models: {objective: {model: PATH}}"
            )
        return self


class SPOSection(Section):
    """SPO (`moa spo`): one objective after another, stage k anchored on stage k−1 (ALGORITHMS.md
    §2). Stage k minimises −log σ(β_k·h_{π/π_{k−1}} − Σ_{j<k} w_j·β_j·h_{π_j/π_{j−1}}), π_0 = π_ref:
    the margin is the earlier stages' implicit rewards, so pairs that conflict with them weigh
    less. Each stage trains `train.max_steps` steps with the adapter at λ = e of the first
    objective (a fixed-λ adapter is an ordinary LoRA; the value only parametrises it)."""

    order: list[str] | None = None  # the objectives in stage order; default: data.objectives
    betas: list[Positive] | None = None  # β_k per stage; default: train.beta for every stage
    # w_j: how much of stage j's implicit reward later stages keep (one per stage but the last).
    margin_weights: list[Annotated[float, Field(ge=0.0)]] | None = None


class CompareSection(Section):
    """`moa compare`: every method on the same task, budget, λ grid and reference point."""

    methods: list[
        Literal["panacea_ls", "panacea_tche", "spo", "sipo", "dpo_soups", "dps", "modpo"]
    ] = ["panacea_ls", "panacea_tche", "spo", "sipo", "dpo_soups", "dps", "modpo"]
    seeds: list[int] = [0, 1, 2]  # train.seed of every model (data and evaluation stay fixed)
    # The λ grid every method is evaluated on; DPS and MODPO train one model per point of it.
    grid_divisions: Count = 4

    @model_validator(mode="after")
    def _check(self) -> "CompareSection":
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct and not empty; got {self.methods}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and not empty; got {self.seeds}")
        return self


class SearchDimension(Section):
    """How a sweep varies one field: exactly one of these (see config/sweep_space.py)."""

    grid: list[Any] | None = None  # every value, in every combination with the other grids
    choice: list[Any] | None = None  # one value drawn per trial
    uniform: tuple[float, float] | None = None  # [low, high]
    loguniform: tuple[float, float] | None = None  # [low, high], low > 0

    @model_validator(mode="after")
    def _check(self) -> "SearchDimension":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of grid, choice, uniform, loguniform; got {given or 'none'}"
            )
        values = self.grid if self.grid is not None else self.choice
        if values is not None and not values:
            raise ValueError(f"{given[0]} needs at least one value")
        bounds = self.uniform or self.loguniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]} needs [low, high] with low < high; got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs low > 0; got {list(self.loguniform)}")
        return self


class TuneSection(Section):
    """`moa tune`: a Ray Tune sweep of training runs, compared by the front of the coarse λ grid
    (eval.coarse_*) evaluated every eval.every steps during training."""

    # Dotted field → dimension, e.g. train.beta: {loguniform: [0.05, 0.5]}; fields of model,
    # adapter, data, train and scaling.
    space: dict[str, SearchDimension] = {}
    num_samples: Count = 1  # trials per combination of the grid dimensions
    metric: Literal["hypervolume", "inner_product"] = "hypervolume"  # picks the best; ASHA's
    scheduler: Literal["fifo", "asha"] = "fifo"  # asha: stop trials that trail at milestones
    grace_period: Count = 50  # ASHA: steps every trial trains before it may be stopped
    reduction_factor: Annotated[float, Field(gt=1.0)] = 2.0  # ASHA: 1/this go on at a milestone
    max_concurrent_trials: Count | None = None  # default: as many as the cluster's CPUs/GPUs fit
    seed: int = 0  # the draws of choice, uniform and loguniform


class ServeSection(Section):
    """The steerable model on Ray Serve (`moa serve`): an OpenAI-compatible API, λ per request."""

    host: str = "127.0.0.1"  # 0.0.0.0 listens on every interface
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    app_name: str = "moa"
    # The model id clients send; "<model_name>:0.7,0.3" names λ in it, for clients that can't add
    # a body field.
    model_name: Annotated[str, Field(pattern=r"^[^:\s]+$")] = "moa"
    checkpoint: Literal["best", "final"] = (
        "best"  # a run folder's best/ (when it has one), adapter/
    )
    default_preference: list[float] | None = None  # default: equal weights
    max_batch_size: Count = 32  # requests decoded together, each at its own λ
    # continuous: a request joins the running batch at the next decoding step; static: a batch
    # runs until its longest answer ends before the next one starts (for comparison)
    batching: Literal["continuous", "static"] = "continuous"
    # Requests waiting for a decoding slot, per replica; more are refused at once with 429 and
    # Retry-After instead of queueing without end.
    max_waiting_requests: Count = 64
    queue_timeout_s: Positive = 60.0  # a request that waits longer for a slot gets 503
    body_timeout_s: Positive = 10.0  # a request whose body takes longer to arrive gets 408
    # Per replica; at least max_batch_size so batches can fill (above max_batch_size +
    # max_waiting_requests, the replica answers the excess with 429 rather than Serve queueing it)
    max_ongoing_requests: Count = 128
    max_tokens: Count = 256  # the largest max_tokens a request may ask for
    default_max_tokens: Count = 96
    max_prompt_tokens: Count = 512  # longer prompts are refused, not cut
    min_replicas: Annotated[int, Field(ge=0)] = 1  # min < max: autoscaling between them
    max_replicas: Count = 1
    target_ongoing_requests: Positive = 16.0  # autoscaling target per replica
    num_cpus: Positive = 1.0  # per replica (its torch threads)
    num_gpus: Annotated[float, Field(ge=0.0)] = 0.0  # per replica; > 0 runs the model on a GPU

    @model_validator(mode="after")
    def _check(self) -> "ServeSection":
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be at least "
                f"max_batch_size ({self.max_batch_size}), or batches can never fill"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})"
            )
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens "
                f"({self.max_tokens})"
            )
        return self
