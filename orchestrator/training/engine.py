"""How a training step's gradients become an update: one process, DDP, or DeepSpeed ZeRO.

An engine owns the optimizer and learning-rate schedule of the trained tensors (TrainedWeights:
the adapter, or a reward model's weights) and knows how the ranks of a data-parallel group
combine gradients. The trainer gives every micro-batch's loss as its share of the *global* step's
loss (normalised by the whole global batch), so the gradient it wants is the sum over ranks and
micro-batches; the engines undo DDP's and DeepSpeed's averaging over ranks to get exactly that.
Engines know torch.distributed, never Ray.
"""

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from orchestrator.config.sections import DeepSpeedSection, TrainSection
from orchestrator.model.adapter_io import load_adapter, save_adapter
from orchestrator.model.svd_lora import adapter_parameters
from orchestrator.objectives.schedule import warmup_cosine

TRAINER_STATE = "optimizer.pt"


@dataclass(frozen=True)
class TrainedWeights:
    """What an engine trains of a model and how a checkpoint holds it."""

    parameters: Callable[[nn.Module], list[nn.Parameter]]
    save: Callable[[nn.Module, Path], None]  # (model, checkpoint directory)
    load: Callable[[nn.Module, Path], None]


# The SVD-LoRA adapter (checkpoint/adapter), the base frozen: every policy the methods train.
ADAPTER = TrainedWeights(
    parameters=lambda model: list(adapter_parameters(model).values()),
    save=lambda model, directory: save_adapter(model, directory / "adapter"),
    load=lambda model, directory: load_adapter(model, directory / "adapter"),
)


def build_optimizer(parameters: list[nn.Parameter], cfg: TrainSection):
    """AdamW with warm-up then cosine decay to a tenth of the peak rate."""
    optimizer = torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, cfg.warmup, cfg.max_steps, final_fraction=0.1),
    )
    return optimizer, scheduler


class LocalEngine:
    """One process: plain backward, clipping, AdamW step."""

    rank = 0
    world_size = 1

    def __init__(self, model: nn.Module, cfg: TrainSection, weights: TrainedWeights = ADAPTER):
        self.model = model
        self.module = model  # what forward passes go through
        self.cfg = cfg
        self.weights = weights
        self.parameters = weights.parameters(model)
        self.optimizer, self.scheduler = build_optimizer(self.parameters, cfg)

    def micro_batch(self, last: bool):
        """Context for one micro-batch's forward and backward (DDP syncs only on the last)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        (loss * self.world_size).backward()

    def step(self) -> float:
        """Clip, update, advance the schedule; returns the learning rate the update used."""
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.cfg.max_grad_norm)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return learning_rate

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's tensor of the same shape, in rank order."""
        if self.world_size == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return parts

    def full_parameters(self):
        """Context in which the adapter tensors are whole on every rank (ZeRO-3 gathers them)."""
        return contextlib.nullcontext()

    def save(self, directory: Path) -> None:
        """The trained weights, optimizer and schedule; rank 0 writes."""
        if self.rank == 0:
            self.weights.save(self.model, directory)
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
            }
            torch.save(state, directory / TRAINER_STATE)

    def load(self, directory: Path) -> None:
        self.weights.load(self.model, directory)
        state = torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class DDPEngine(LocalEngine):
    """PyTorch DDP (gloo on CPU, NCCL on GPU) over the trained tensors; the rest is frozen."""

    def __init__(self, model: nn.Module, cfg: TrainSection, weights: TrainedWeights = ADAPTER):
        super().__init__(model, cfg, weights)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        device = self.parameters[0].device
        # Buffers hold λ, which every rank sets itself; broadcasting them would be wasted work.
        self.module = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )

    def micro_batch(self, last: bool):
        return contextlib.nullcontext() if last else self.module.no_sync()


class DeepSpeedEngine(LocalEngine):
    """DeepSpeed ZeRO stage 2 or 3 around the same AdamW and schedule."""

    TAG = "deepspeed"

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainSection,
        ds_cfg: DeepSpeedSection,
        weights: TrainedWeights = ADAPTER,
    ):
        import deepspeed

        super().__init__(model, cfg, weights)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        # On the CPU accelerator, init_distributed JIT-compiles a shared-memory all-reduce op
        # (about 40 s, again whenever the compile flags of two processes differ) that only
        # DeepSpeed inference calls; training reduces through the process group either way.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend=dist.get_backend())
        self.module, *_ = deepspeed.initialize(
            model=model,
            model_parameters=self.parameters,
            optimizer=self.optimizer,
            lr_scheduler=self.scheduler,
            config=deepspeed_config(cfg, ds_cfg, self.world_size),
        )

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        # The micro-batch losses already carry the step's normalisation: no scaling by 1/GAS.
        self.module.backward(loss * self.world_size, scale_wrt_gas=False)
        if not last:
            self.module.step()  # counts the micro-step; updates only at the boundary

    def step(self) -> float:
        learning_rate = self.scheduler.get_last_lr()[0]
        self.module.step()
        return learning_rate

    def full_parameters(self):
        if self.module.zero_optimization_stage() == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(self.parameters)
        return contextlib.nullcontext()

    def save(self, directory: Path) -> None:
        """Every rank writes its optimizer partition; rank 0 also the whole trained weights."""
        with self.full_parameters():
            if self.rank == 0:
                self.weights.save(self.model, directory)
        self.module.save_checkpoint(str(directory), tag=self.TAG, exclude_frozen_parameters=True)

    def load(self, directory: Path) -> None:
        self.module.load_checkpoint(
            str(directory), tag=self.TAG, load_module_strict=False, load_lr_scheduler_states=True
        )


def deepspeed_config(cfg: TrainSection, ds_cfg: DeepSpeedSection, world_size: int) -> dict:
    zero: dict = {"stage": ds_cfg.zero_stage}
    if ds_cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if ds_cfg.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    config = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.batch_size * cfg.grad_accum_steps * world_size,
        "gradient_clipping": cfg.max_grad_norm or 0.0,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        # An offloaded optimizer stays torch's AdamW, stepping on the CPU master copy: for adapter-
        # sized states it is as fast as DeepSpeed's CPU Adam, which is a C++ op to build first.
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": ds_cfg.bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _merge(config, ds_cfg.config)


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_engine(
    model: nn.Module,
    cfg: TrainSection,
    strategy: str = "ddp",
    ds_cfg=None,
    weights: TrainedWeights = ADAPTER,
):
    """The engine for this process: local when there is no process group, else the strategy's."""
    if not (dist.is_available() and dist.is_initialized()):
        return LocalEngine(model, cfg, weights)
    if strategy == "deepspeed":
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
        return DeepSpeedEngine(model, cfg, ds_cfg or DeepSpeedSection(), weights)
    if dist.get_world_size() == 1:
        return LocalEngine(model, cfg, weights)
    return DDPEngine(model, cfg, weights)
