"""The whole run configuration: every section, the checks that span sections, and what each
recipe reads of it.

One RunConfig serves every command; a recipe reads the sections it names (TRAINING and its own),
and a run folder it started resumes under a config that differs only in the others.
"""

from pydantic import model_validator

from orchestrator.config.sections import (
    AdapterSection,
    CheckpointSection,
    CompareSection,
    DataSection,
    DeepSpeedSection,
    EvalSection,
    GenerationSection,
    LoggingSection,
    ModelSection,
    RewardSection,
    ScalingSection,
    Scorer,
    Section,
    ServeSection,
    SIPOSection,
    SPOSection,
    TrainSection,
    TuneSection,
)
from orchestrator.errors import MoaError
from orchestrator.objectives.preference import validate_preference

# The sections every training recipe reads: what a trained model and its front depend on.
TRAINING = (
    "model",
    "adapter",
    "data",
    "train",
    "eval",
    "scaling",
    "generation",
    "checkpoint",
    "logging",
)


class RunConfig(Section):
    model: ModelSection = ModelSection()
    adapter: AdapterSection = AdapterSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    scaling: ScalingSection = ScalingSection()
    generation: GenerationSection = GenerationSection()
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()
    sipo: SIPOSection = SIPOSection()
    spo: SPOSection = SPOSection()
    compare: CompareSection = CompareSection()
    tune: TuneSection = TuneSection()
    serve: ServeSection = ServeSection()
    reward: RewardSection = RewardSection()
    output_dir: str = "runs/panacea"

    @property
    def global_batch(self) -> int:
        """Pairs per optimizer step: train.batch_size × scaling.num_workers × grad_accum_steps."""
        return self.train.batch_size * self.scaling.num_workers * self.train.grad_accum_steps

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.eval.enabled:
            self._check_scorers()
        if (
            self.eval.enabled
            and self.eval.every
            and self.scaling.strategy == "deepspeed"
            and self.scaling.deepspeed.zero_stage == 3
        ):
            raise ValueError(
                "eval.every needs whole weights on one worker; with deepspeed zero_stage 3 set "
                "eval.every: 0 and evaluate the finished run with `moa eval`"
            )
        if (
            self.train.reference == "initial"
            and self.scaling.deepspeed.zero_stage == 3
            and (self.scaling.strategy == "deepspeed")
        ):
            raise ValueError(
                "train.reference: initial keeps a frozen copy of the whole adapter on each "
                "worker, which deepspeed zero_stage 3 partitions; use zero_stage 2 or ddp"
            )
        if self.train.reference == "initial" and self.adapter.init_from is None:
            raise ValueError(
                "train.reference: initial anchors on the adapter training starts from; it needs "
                "adapter.init_from (or use train.reference: base)"
            )
        self._check_scaling()
        if self.eval.enabled and self.eval.every > self.train.max_steps:
            raise ValueError(
                f"eval.every ({self.eval.every}) exceeds train.max_steps "
                f"({self.train.max_steps}): no step but the last would be evaluated; set "
                "eval.every: 0 for that"
            )
        self._check_fixed_preference()
        self._check_spo()
        sipo = self.sipo
        if sipo.judge == "reward_models" and set(sipo.reward_models) != set(self.data.objectives):
            raise ValueError(
                f"sipo.reward_models names {sorted(sipo.reward_models)}; it needs one model for "
                f"each objective {self.data.objectives}"
            )
        if sipo.judge == "ground_truth" and self.data.source != "assistant":
            raise ValueError(
                "sipo.judge: ground_truth needs the built-in task's scorers (data.source: "
                "assistant); use implicit or reward_models"
            )
        default = self.serve.default_preference
        if default is not None:
            try:
                validate_preference(default, len(self.data.objectives))
            except MoaError as err:
                raise ValueError(f"serve.default_preference: {err}") from None
        ref = self.eval.reference_point
        if ref is not None and len(ref) != len(self.data.objectives):
            raise ValueError(
                f"eval.reference_point has {len(ref)} values "
                f"for {len(self.data.objectives)} objectives"
            )
        return self

    @property
    def scorers(self) -> dict[str, Scorer]:
        """Each objective's scorer: eval.scorers, else the built-in task's ground truth."""
        return {name: self.eval.scorers.get(name, "ground_truth") for name in self.data.objectives}

    def _check_scorers(self) -> None:
        """What the config alone says of eval.scorers; whether a scorer fits the data and loads
        is checked when a run that evaluates starts (evaluation.scorers.check_scorers)."""
        objectives = self.data.objectives
        unknown = sorted(set(self.eval.scorers) - set(objectives))
        if unknown:
            raise ValueError(
                f"eval.scorers names {unknown}, not among data.objectives {objectives}"
            )
        if self.eval.reference_point is None and set(self.scorers.values()) != {"ground_truth"}:
            raise ValueError(
                "eval.reference_point is needed when a scorer is not ground truth: one value "
                f"per objective {objectives}, below every score a front should be credited for"
            )

    def _check_scaling(self) -> None:
        scaling = self.scaling
        if scaling.strategy != "deepspeed" and scaling.deepspeed != DeepSpeedSection():
            raise ValueError(
                "scaling.deepspeed is set, but scaling.strategy is ddp, which ignores it; set "
                "scaling.strategy: deepspeed"
            )
        if scaling.deepspeed.bf16 and not scaling.use_gpu:
            raise ValueError("scaling.deepspeed.bf16 needs scaling.use_gpu: true")

    def _check_fixed_preference(self) -> None:
        objectives, train = self.data.objectives, self.train
        if train.objective is not None and train.objective not in objectives:
            raise ValueError(f"train.objective {train.objective!r} is not one of {objectives}")
        if train.preference is not None:
            try:
                validate_preference(train.preference, len(objectives))
            except MoaError as err:
                raise ValueError(f"train.preference: {err}") from None
        if self.fixed_preference is not None and self.eval.enabled and self.eval.every:
            raise ValueError(
                "eval.every keeps the adapter whose front over the λ grid is best; a model "
                "trained at one λ (train.preference or train.objective) answers at that λ only; "
                "set eval.every: 0"
            )

    def _check_spo(self) -> None:
        objectives, spo, order = self.data.objectives, self.spo, self.spo_order
        if sorted(order) != sorted(objectives):
            raise ValueError(
                f"spo.order must list each objective of {objectives} once; got {spo.order}"
            )
        if spo.betas is not None and len(spo.betas) != len(order):
            raise ValueError(f"spo.betas needs one β per stage ({len(order)}); got {spo.betas}")
        weights = spo.margin_weights
        if weights is not None and len(weights) != len(order) - 1:
            raise ValueError(
                f"spo.margin_weights needs one weight per stage but the last "
                f"({len(order) - 1}); got {weights}"
            )

    @property
    def fixed_preference(self) -> list[float] | None:
        """The λ every step trains at: train.preference, else the vertex of train.objective,
        else None (sampled per step, Panacea)."""
        train = self.train
        if train.preference is not None or train.objective is None:
            return train.preference
        return self.vertex(train.objective)

    @property
    def spo_order(self) -> list[str]:
        """SPO's stages' objectives: spo.order, else data.objectives."""
        return self.spo.order or self.data.objectives

    def vertex(self, objective: str) -> list[float]:
        """e_i: λ with all its weight on `objective`."""
        return [float(name == objective) for name in self.data.objectives]
