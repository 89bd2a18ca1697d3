"""SIPO's rounds for people: each round's selection statistics and the hypervolume before and
after it (report.md)."""

from orchestrator.evaluation.front import Front

COLUMNS = [
    "round",
    "conflicting_pairs",
    "pairs_tried",
    "candidates",
    "survivors",
    "acceptance_rate",
    "new_pairs",
    "realign_steps",
]


def front_stats(when: str, front: Front | None) -> dict:
    """A round's statistics of the front `when` ("before", "after") it; none without one."""
    if front is None:
        return {}
    metrics = front.metrics()
    return {
        f"hypervolume_{when}": metrics["hypervolume"],
        f"inner_product_{when}": metrics["inner_product"],
    }


def render_sipo_report(rounds: list[dict], with_fronts: bool) -> str:
    lines = ["# SIPO rounds", ""]
    columns = list(COLUMNS)
    if with_fronts:
        lines += ["![fronts](fronts.png)", ""]
        columns += ["hypervolume_before", "hypervolume_after"]
    lines += ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |"]
    lines += ["|" + "---|" * len(columns)]
    for stats in rounds:
        cells = [
            f"{stats[c]:.4f}" if isinstance(stats[c], float) else str(stats[c]) for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def round_line(stats: dict) -> str:
    """One line per round for the console."""
    line = (
        f"round {stats['round']}: {stats['survivors']}/{stats['pairs_tried']} conflicting "
        f"pairs improved ({stats['acceptance_rate']:.1%}), {stats['new_pairs']} new pairs, "
        f"{stats['realign_steps']} re-alignment steps"
    )
    if "hypervolume_after" in stats:
        line += (
            f"; hypervolume {stats['hypervolume_before']:.4f} → {stats['hypervolume_after']:.4f}"
        )
    return line
