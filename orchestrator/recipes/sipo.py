"""`moa sipo`: a Panacea model (trained here first, or a finished run), then rounds of
generate → judge → select → re-align (ALGORITHMS.md §3).

Each phase of a round leaves its result in the round's folder before the next starts, so a
stopped run started again (`moa sipo --resume RUN_DIR`) picks up at the phase it reached, and
inside the re-alignment at its last Ray Train checkpoint:

  RUN_DIR/config.yaml     the resolved configuration
  RUN_DIR/panacea/        the Panacea run round 1 starts from (unless sipo.init_from names one)
  RUN_DIR/start_eval/     the starting front, when sipo.init_from names the Panacea run
  RUN_DIR/round_N/
    candidates.jsonl      per improved pair: both originals' rewards, every candidate (λ, answer,
                          rewards) and which one was kept
    selection.json        the selection's statistics
    pairs.jsonl           the new pairs (ŷ ≻ a), (ŷ ≻ b): the re-alignment's training data
    train/                the re-alignment run (checkpoints, metrics.jsonl, adapter/, train.json)
    eval/                 the front after the round
    round.json            the round's statistics, written last: the round is done
  RUN_DIR/adapter/        the last round's adapter
  RUN_DIR/sipo.json, report.md, fronts.png   statistics of every round, and all fronts
"""

import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from orchestrator.algorithms.sipo import (
    candidate_plan,
    keep_rewrites,
    pairs_to_improve,
    review_prompt,
    rewrite_prompt,
    rows_by_pair,
    select_improvements,
)
from orchestrator.algorithms.sipo_selection import candidate_preferences, conflicting_pairs
from orchestrator.atomic import atomic_directory, atomic_write_text
from orchestrator.config import RunConfig, with_fields
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.schema import PairDataset
from orchestrator.distributed.generation import GenerationRequest
from orchestrator.errors import MoaError
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.report import plot_fronts, read_front
from orchestrator.evaluation.scorers import Scorers, check_reward_models
from orchestrator.evaluation.sipo_report import front_stats, render_sipo_report
from orchestrator.model.adapter_io import ADAPTER_CONFIG, load_adapter
from orchestrator.model.loading import load_model, load_tokenizer
from orchestrator.model.sampling import SamplingParams
from orchestrator.recipes.evaluate import front_on_pool, run_pool
from orchestrator.recipes.inputs import check_training_inputs
from orchestrator.recipes.panacea import ensure_panacea
from orchestrator.recipes.run_folder import (
    CONTINUED_RUN,
    TRAINING_RUN,
    RunKind,
    claim_run,
    open_run,
    start_run,
    train_into,
)

SIPO_RUN = RunKind(
    "SIPO run",
    (*TRAINING_RUN.sections, "sipo"),
    (
        *TRAINING_RUN.outputs,
        "round_*",
        "panacea",
        "start_eval",
        "sipo.json",
        "report.md",
        "fronts.png",
    ),
    command="sipo",
    finished="sipo.json",
)


@dataclass
class SIPOResult:
    run_dir: Path
    rounds: list[dict]  # the statistics of each round (round.json)
    adapter: Path  # the last round's adapter


def run_sipo(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> SIPOResult:
    """Panacea (unless sipo.init_from names a finished run), then `sipo.rounds` rounds."""
    dataset = _check_inputs(cfg)
    return _run(cfg, start_run(cfg, SIPO_RUN, overwrite), dataset, progress)


def resume_sipo(run_dir: str | Path, *, progress: bool = True) -> SIPOResult:
    """Continue a stopped SIPO run at the round and phase it reached."""
    cfg = open_run(run_dir)
    return _run(cfg, Path(run_dir), _check_inputs(cfg), progress)


def ensure_sipo(cfg: RunConfig, *, progress: bool = True) -> SIPOResult:
    """The SIPO run `cfg` describes in cfg.output_dir: started, continued where it stopped, or
    read back when it is done (a comparison's SIPO)."""
    dataset = _check_inputs(cfg)
    return _run(cfg, claim_run(cfg, SIPO_RUN), dataset, progress)


def _check_inputs(cfg: RunConfig) -> PairDataset:
    dataset = check_training_inputs(cfg, {"sipo.max_new_tokens": cfg.sipo.max_new_tokens})
    if cfg.sipo.init_from is not None:
        adapter = Path(cfg.sipo.init_from) / "adapter"
        if not (adapter / ADAPTER_CONFIG).is_file():
            raise MoaError(
                f"sipo.init_from: {cfg.sipo.init_from} is not a finished Panacea run folder "
                f"({adapter} is missing)"
            )
    if not conflicting_pairs(dataset):
        raise MoaError("data: the dataset has no conflicting pairs, so SIPO has nothing to improve")
    if cfg.sipo.judge == "reward_models":
        check_reward_models(cfg.sipo.reward_models, "sipo.reward_models")
    return dataset


def _run(cfg: RunConfig, run_dir: Path, dataset: PairDataset, progress: bool) -> SIPOResult:
    rounds_of = SIPORounds(cfg, progress)
    adapter, front = _starting_point(rounds_of, run_dir, dataset)
    fronts = {"start": front}
    rounds = []
    for number in range(1, cfg.sipo.rounds + 1):
        round_dir = run_dir / f"round_{number}"
        stats, adapter, front = rounds_of.round(round_dir, number, dataset, adapter, front)
        rounds.append(stats)
        fronts[f"round {number}"] = front
    with atomic_directory(run_dir / "adapter") as tmp:
        shutil.copytree(adapter, tmp, dirs_exist_ok=True)
    atomic_write_text(run_dir / "sipo.json", json.dumps(rounds, indent=2))
    if cfg.eval.enabled:
        plot_fronts(run_dir / "fronts.png", fronts, "SIPO: the front after each round")
    atomic_write_text(run_dir / "report.md", render_sipo_report(rounds, cfg.eval.enabled))
    return SIPOResult(run_dir, rounds, run_dir / "adapter")


def _starting_point(
    rounds: "SIPORounds", run_dir: Path, dataset: PairDataset
) -> tuple[Path, Front | None]:
    """The adapter round 1 starts from, and its front (None without evaluation)."""
    cfg = rounds.cfg
    if cfg.sipo.init_from is None:
        panacea = with_fields(cfg, {"output_dir": str(run_dir / "panacea")})
        result = ensure_panacea(panacea, dataset, progress=rounds.progress)
        return result.run_dir / "adapter", result.front
    adapter = Path(cfg.sipo.init_from) / "adapter"
    if not cfg.eval.enabled:
        return adapter, None
    return adapter, rounds.front(adapter, run_dir / "start_eval", "Starting front")


class SIPORounds:
    """The phases of a round, each resumable from what it left in the round's folder. The driver
    holds the base model (to publish adapters and for the front's grid); generation and implicit
    judging run on a generation pool, re-alignment on Ray Train."""

    def __init__(self, cfg: RunConfig, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.objectives = cfg.data.objectives
        self.tokenizer = load_tokenizer(cfg.model.name_or_path)
        self.model = load_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device)

    def round(
        self,
        round_dir: Path,
        number: int,
        dataset: PairDataset,
        start: Path,
        front_before: Front | None,
    ) -> tuple[dict, Path, Front | None]:
        """(statistics, adapter, front) after round `number`, which starts from `start`."""
        done = round_dir / "round.json"
        if done.is_file():
            stats = json.loads(done.read_text())
            adapter = round_adapter(round_dir, start, stats["realign_steps"])
            return stats, adapter, self._read_front(round_dir)
        round_dir.mkdir(parents=True, exist_ok=True)
        if not (round_dir / "pairs.jsonl").is_file():
            self.select(round_dir, number, dataset, start)
        selection = json.loads((round_dir / "selection.json").read_text())
        new_pairs = PairDataset.load_jsonl(round_dir / "pairs.jsonl")
        adapter, training = self.realign(round_dir, start, new_pairs)
        front = None
        if self.cfg.eval.enabled:
            front = self.front(adapter, round_dir / "eval", f"After SIPO round {number}")
        stats = {
            "round": number,
            **selection,
            **training,
            **front_stats("before", front_before),
            **front_stats("after", front),
        }
        atomic_write_text(done, json.dumps(stats, indent=2))
        return stats, adapter, front

    def select(self, round_dir: Path, number: int, dataset: PairDataset, start: Path) -> None:
        """Candidates for the round's conflicting pairs, judged and filtered: writes
        candidates.jsonl, selection.json and, last, pairs.jsonl."""
        sipo = self.cfg.sipo
        pairs = pairs_to_improve(dataset, sipo.max_pairs, sipo.seed, number)
        preferences = candidate_preferences(len(self.objectives), sipo.candidate_divisions)
        plan = candidate_plan(len(pairs), preferences, sipo.candidates_per_preference)
        prompts = [pairs[i].prompt for i, _ in plan]
        sampling = SamplingParams(
            max_new_tokens=sipo.max_new_tokens, temperature=sipo.temperature, top_p=sipo.top_p
        )
        first_seed = sipo.seed + 1_000_000 * number  # row i samples with first_seed + i
        params = [replace(sampling, seed=first_seed + i) for i in range(len(plan))]
        lambdas = [lam for _, lam in plan]
        with self._pool(start) as pool:
            started = time.perf_counter()
            answers = self._answer(pool, prompts, lambdas, params)
            generated = time.perf_counter()
            rewards = self._judge(pool, prompts, answers)
            originals = self._judge(
                pool,
                [p.prompt for p in pairs for _ in range(2)],
                [r for p in pairs for r in (p.response_a, p.response_b)],
            ).reshape(len(pairs), 2, -1)
            rewritten = np.zeros(len(plan), dtype=bool)
            if sipo.review:
                rewritten = self._review(pool, prompts, lambdas, params, answers, rewards)
            judged = time.perf_counter()
        selection = select_improvements(pairs, plan, answers, rewards, originals, self.objectives)
        rows_of = rows_by_pair(plan, len(pairs))
        records = [
            {
                "prompt": pair.prompt,
                "rewards_a": originals[i, 0].tolist(),
                "rewards_b": originals[i, 1].tolist(),
                "candidates": [
                    {
                        "preference": list(plan[row][1]),
                        "answer": answers[row],
                        "rewards": rewards[row].tolist(),
                        "rewritten": bool(rewritten[row]),
                    }
                    for row in rows_of[i]
                ],
                "kept": selection.kept[i],
            }
            for i, pair in enumerate(pairs)
        ]
        atomic_write_text(
            round_dir / "candidates.jsonl", "".join(json.dumps(r) + "\n" for r in records)
        )
        stats = {
            "conflicting_pairs": len(conflicting_pairs(dataset)),
            "pairs_tried": len(pairs),
            "candidates": len(plan),
            "rewritten": int(rewritten.sum()),
            "survivors": selection.survivors,
            "acceptance_rate": selection.survivors / max(1, len(pairs)),
            "new_pairs": len(selection.new_pairs),
            "generation_seconds": generated - started,
            "judging_seconds": judged - generated,
        }
        atomic_write_text(round_dir / "selection.json", json.dumps(stats, indent=2))
        selection.new_pairs.save_jsonl(round_dir / "pairs.jsonl")

    def _answer(self, pool, prompts, lambdas, params) -> list[str]:
        requests = [
            GenerationRequest(prompt, lam, p)
            for prompt, lam, p in zip(prompts, lambdas, params, strict=True)
        ]
        return [answer.text for answer in pool.generate(requests, progress=self.progress)]

    def _review(self, pool, prompts, lambdas, params, answers, rewards) -> np.ndarray:
        """Review and rewrite every candidate in place (answers, rewards); [N] which were
        rewritten."""
        reviews = self._answer(
            pool,
            [review_prompt(p, a, self.objectives) for p, a in zip(prompts, answers, strict=True)],
            lambdas,
            params,
        )
        rewrites = self._answer(
            pool,
            [
                rewrite_prompt(p, a, r, self.objectives)
                for p, a, r in zip(prompts, answers, reviews, strict=True)
            ],
            lambdas,
            params,
        )
        rewrite_rewards = self._judge(pool, prompts, rewrites)
        keep = keep_rewrites(rewards, rewrite_rewards)
        for row in np.flatnonzero(keep):
            answers[row] = rewrites[row]
        rewards[keep] = rewrite_rewards[keep]
        return keep

    def _judge(self, pool, prompts: list[str], responses: list[str]) -> np.ndarray:
        """[N, m] each judge's reward of each response."""
        sipo, data = self.cfg.sipo, self.cfg.data
        if sipo.judge == "ground_truth":
            return AssistantTask(seed=data.seed).score_batch(prompts, responses, self.objectives)
        if sipo.judge == "implicit":  # the current adapter's own rewards, β = sipo.judge_beta
            judges = dict.fromkeys(self.objectives, "implicit")
        else:
            judges = {name: sipo.reward_models[name] for name in self.objectives}
        # Room for the candidates and for the pair's own responses they are compared with.
        longest = max(sipo.max_new_tokens, data.max_response_tokens)
        arguments = {
            **Scorers.arguments_for_run(self.cfg, judges, longest),
            "implicit_beta": sipo.judge_beta,
        }
        return pool.scorer(arguments, progress=self.progress)(prompts, responses)

    def realign(self, round_dir: Path, start: Path, new_pairs: PairDataset) -> tuple[Path, dict]:
        """Re-align on the new pairs through Ray Train, anchored on `start`: (the adapter, the
        training statistics). A round with fewer new pairs than one global batch keeps `start`."""
        cfg = realign_config(self.cfg, round_dir / "train", start, len(new_pairs))
        steps = cfg.train.max_steps if len(new_pairs) >= cfg.global_batch else 0
        seconds = 0.0
        if steps:
            _, seconds = train_into(cfg, new_pairs, kind=CONTINUED_RUN, progress=self.progress)
        adapter = round_adapter(round_dir, start, steps)
        return adapter, {"realign_steps": steps, "training_seconds": seconds}

    def front(self, adapter: Path, out_dir: Path, title: str) -> Front:
        """The front of `adapter` over the eval grid (through a generation pool), written to
        `out_dir`; read back if it is there already."""
        if (out_dir / "front.json").is_file():
            return read_front(out_dir / "front.json")
        load_adapter(self.model, adapter)
        cfg, model, tokenizer = self.cfg, self.model, self.tokenizer
        return front_on_pool(
            cfg, model, tokenizer, out_dir, title, with_base=False, progress=self.progress
        )

    def _read_front(self, round_dir: Path) -> Front | None:
        return read_front(round_dir / "eval" / "front.json") if self.cfg.eval.enabled else None

    def _pool(self, adapter: Path):
        """A generation pool serving `adapter`. It lives for one phase only: its actors' CPUs
        are free again for the Ray Train workers."""
        load_adapter(self.model, adapter)
        cfg = self.cfg
        prompt_tokens = cfg.data.max_prompt_tokens
        if cfg.sipo.review:  # review and rewrite prompts quote the answers
            prompt_tokens += 2 * cfg.sipo.max_new_tokens + 64
        return run_pool(cfg, self.model, prompt_tokens)


def round_adapter(round_dir: Path, start: Path, realign_steps: int) -> Path:
    """The adapter a round ends with: its re-alignment's, or `start` when it had too few new
    pairs to train on."""
    return round_dir / "train" / "adapter" if realign_steps else start


def realign_config(cfg: RunConfig, train_dir: Path, start: Path, num_pairs: int) -> RunConfig:
    """The re-alignment's training config: DPO + NLL on the new pairs from the adapter `start`,
    anchored on it (train.reference: initial), for sipo.epochs passes; no evaluation inside."""
    sipo = cfg.sipo
    steps = max(1, math.ceil(sipo.epochs * num_pairs / cfg.global_batch))
    fields = {
        "train.loss": "dpo",
        "train.reference": "initial",
        "train.beta": sipo.beta,
        "train.nll_weight": sipo.nll_weight,
        "train.learning_rate": sipo.learning_rate,
        "train.max_steps": steps,
        "train.warmup_steps": min(sipo.warmup_steps, steps - 1),
        "train.preference_per_pair": sipo.realign_at == "generated",
        "adapter.init_from": str(start),
        "eval.every": 0,
        "output_dir": str(train_dir),
    }
    return with_fields(cfg, fields)
