"""The routing tuner's side of the CLI: `turnout eval` and `turnout calibrate`."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from router.classifier import DEFAULT_MODEL_PATH, Classifier
from schemas.config import Config, Tier
from schemas.errors import ConfigError, TurnoutError

#: Tokens per answer assumed when pricing a call for "cost at 95% of strong quality".
ASSUMED_COMPLETION_TOKENS = 256
CHARS_PER_TOKEN = 4


def load_router(name: str) -> Classifier:
    from router.heuristic import HeuristicClassifier
    from router.trained import TrainedClassifier

    if name == "heuristic":
        return HeuristicClassifier()
    return TrainedClassifier.load(DEFAULT_MODEL_PATH if name == "default" else Path(name))


def run_eval(data: list[Path], router_name: str, config: Config | None, plot: Path, console: Console) -> dict[str, Any]:
    """Score the labeled rows, print RouteLLM's figures beside random and oracle, write the plots."""
    from router.metrics import plot_quality_vs_share
    from router.training import evaluate, read_rows

    rows = [row for path in data for row in read_rows(_existing(path))]
    classifier = load_router(router_name)
    _warn_if_trained_on(classifier, data, console)
    prices = _call_prices(config, rows) if config else None
    result = evaluate(classifier, rows, prices=prices)
    result["router"] = router_name
    console.print(_table(result, router_name))
    result["plots"] = {}
    for dataset, curves in result["curves"].items():
        figures = result[dataset]
        path = plot if len(result["curves"]) == 1 else plot.with_name(f"{plot.stem}-{dataset}{plot.suffix}")
        named = {router_name: curves["router"], "oracle": curves["oracle"]}
        plot_quality_vs_share(named, figures["weak_quality"], figures["strong_quality"], path, title=f"{dataset}: quality against strong calls")
        result["plots"][dataset] = str(path)
        console.print(f"plot: {path}")
    return result


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise TurnoutError(f"labeled data {path} not found")
    return path


def _warn_if_trained_on(classifier: Classifier, data: list[Path], console: Console) -> None:
    card = getattr(classifier, "card", None) or {}
    trained_on = {str(entry.get("path")) for entry in card.get("files", []) if isinstance(entry, dict)}
    overlap = trained_on & {path.name for path in data}
    if overlap:
        console.print(
            f"[yellow]warning: the model was trained on {sorted(overlap)}: these figures are in-sample. "
            "The card's held-out figures are the honest ones.[/yellow]"
        )


def _call_prices(config: Config, rows: list[Any]) -> dict[str, tuple[float, float]]:
    """Price per call of the cheapest and the strongest tier's primary, at each dataset's mean
    prompt length (and at all rows' for ``all``)."""
    groups: dict[str, list[Any]] = {"all": list(rows)}
    for row in rows:
        groups.setdefault(row.dataset, []).append(row)

    def price(tier: Tier, prompt_tokens: float) -> float:
        primary = tier.deployments[0]
        return (prompt_tokens * primary.input_cost_per_million + ASSUMED_COMPLETION_TOKENS * primary.output_cost_per_million) / 1e6

    prices = {}
    for name, members in groups.items():
        tokens = sum(len(row.prompt) for row in members) / max(len(members), 1) / CHARS_PER_TOKEN
        prices[name] = (price(config.tiers[0], tokens), price(config.frontier, tokens))
    return prices


def _table(result: dict[str, Any], router_name: str) -> Table:
    table = Table(title=f"router {router_name} (RouteLLM metrics; CPT = share of strong calls)", show_edge=False)
    for column in ("data", "n", "router", "CPT(20%)", "CPT(50%)", "CPT(80%)", "APGR", "cost at 95% / all-strong"):
        table.add_column(column)
    for dataset, m in result.items():
        if not isinstance(m, dict) or "cpt" not in m:
            continue
        cost = f"{m['cost_at_95']:.6f} / {m['cost_all_strong']:.6f}" if m.get("cost_at_95") is not None else "-"
        cpt = m["cpt"]
        table.add_row(dataset, str(m["n"]), router_name, f"{cpt['20%']:.1%}", f"{cpt['50%']:.1%}", f"{cpt['80%']:.1%}", f"{m['apgr']:.3f}", cost)
        table.add_row("", "", "random", "20.0%", "50.0%", "80.0%", "0.500", "")
        table.add_row("", "", "oracle", "", "", "", f"{m['oracle_apgr']:.3f}", "")
    return table


# --- calibrate ---------------------------------------------------------------------------


#: A kind of prompt gets thresholds of its own from at least this many calibration prompts;
#: fewer would put its share off by more than a few points. Smaller kinds use ``min_score``.
MIN_PROMPTS_PER_KIND = 50


def calibrate_config(
    config: Config, config_path: Path, data: Path, frontier_share: float | None, shares: list[str], write: bool,
    by_kind: bool = True,
) -> str:
    """Thresholds for the wanted traffic shares, as a YAML fragment (and written, if asked).

    ``by_kind``: each kind of prompt the classifier scores on a scale of its own (open-ended
    prompts, which the heuristic scores, beside the trained kinds' expected gain) and that has
    at least ``MIN_PROMPTS_PER_KIND`` prompts here gets thresholds sending it the same shares,
    in the tier's ``min_score_by_kind``; ``min_score`` is the threshold of every other prompt.
    The trained kinds share one: both score the expected gain, and on MMLU and GSM8K mixed one
    threshold beat equal shares per kind at every share measured.
    """
    from router.classifier import load_classifier
    from router.training import score_in_batches, thresholds_by_kind

    wanted = _wanted_shares(config, frontier_share, shares)
    prompts = list(_prompts(_existing(data)))
    classifier = load_classifier(config.classifier)
    scores = score_in_batches(classifier, prompts)
    separate = classifier.kinds_on_own_scale() if by_kind else set()
    try:
        found = thresholds_by_kind(scores, wanted, MIN_PROMPTS_PER_KIND, separate)
    except ValueError as exc:
        raise TurnoutError(f"cannot calibrate: {exc}") from None
    overall = found.pop(None)
    own = {str(kind): thresholds for kind, thresholds in found.items()}
    names = [tier.name for tier in config.tiers[1:]]
    fragment = {"tiers": [_calibrated_tier(name, overall[i], {k: t[i] for k, t in own.items()}) for i, name in enumerate(names)]}
    if write:
        raw = yaml.safe_load(config_path.read_text())
        calibrated = {tier["name"]: tier for tier in fragment["tiers"]}
        for tier in raw["tiers"]:
            if tier["name"] in calibrated:
                tier.pop("min_score_by_kind", None)
                tier.update(calibrated[tier["name"]])
        try:
            Config.model_validate(raw)
        except ValidationError as exc:  # e.g. scores piled up at 1.0 leave no room for a rising threshold
            error = exc.errors()[0]
            raise TurnoutError(f"cannot calibrate: the thresholds would break {config_path}: {error['msg']}; "
                               "pick other shares, or calibrate on more varied prompts") from None
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    header = f"# calibrated on {len(prompts)} prompts of {data.name}: shares {dict(zip(names, wanted))}\n"
    counts = Counter(s.kind for s in scores if s.kind in separate)
    small = [f"{kind} ({n})" for kind, n in sorted(counts.items()) if kind not in own]
    if small:
        header += f"# fewer than {MIN_PROMPTS_PER_KIND} prompts, so on min_score: {', '.join(small)}\n"
    tiers = [config.tiers[0].name, *names]
    return header + _shares_by_kind(scores, tiers, overall, own) + yaml.safe_dump(fragment, sort_keys=False)


def _calibrated_tier(name: str, overall: float, by_kind: dict[str, float]) -> dict[str, Any]:
    tier: dict[str, Any] = {"name": name, "min_score": overall}
    if by_kind:
        tier["min_score_by_kind"] = by_kind
    return tier


def _shares_by_kind(scores: list[Any], tiers: list[str], overall: list[float], own: dict[str, list[float]]) -> str:
    """Comment lines: where each kind of prompt goes, on its own thresholds or on min_score."""
    import bisect

    routed: dict[str, Counter[str]] = {}
    for score in scores:
        kind = score.kind or "all"
        thresholds = own.get(kind, overall)
        routed.setdefault(kind, Counter())[tiers[bisect.bisect_right(thresholds, score.value)]] += 1
    if len(routed) < 2:
        return ""
    lines = []
    for kind, counts in sorted(routed.items()):
        total = sum(counts.values())
        lines.append(f"#   {kind} prompts ({total}): " + ", ".join(f"{t} {counts[t] / total:.0%}" for t in tiers))
    return "# where each kind of prompt goes:\n" + "\n".join(lines) + "\n"


def _wanted_shares(config: Config, frontier_share: float | None, shares: list[str]) -> list[float]:
    above = [tier.name for tier in config.tiers[1:]]
    if not above:
        raise ConfigError("the config has one tier: there is nothing to calibrate")
    given: dict[str, float] = {}
    for item in shares:
        name, _, value = item.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = math.nan
        if name not in above or math.isnan(share):
            raise TurnoutError(f"--share wants TIER=SHARE with TIER one of {above} and SHARE a number, got {item!r}")
        given[name] = share
    if frontier_share is not None:
        given[above[-1]] = frontier_share
    missing = [name for name in above if name not in given]
    if missing:
        raise TurnoutError(f"give a share for {missing} (--frontier-share for the top tier, --share TIER=X for others)")
    return [given[name] for name in above]


def _prompts(path: Path) -> Any:
    """Prompt texts from labeled rows ({"prompt"}) or input lines (simple or OpenAI Batch)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                raise TurnoutError(f"{path}:{number}: not valid JSON") from None
            if isinstance(data.get("prompt"), str):
                yield data["prompt"]
            elif isinstance(data.get("body"), dict):
                yield "\n".join(str(m.get("content", "")) for m in data["body"].get("messages", []))


# --- the cascade -------------------------------------------------------------------------


def run_cascade_eval(
    data: list[Path], scorer_kind: str, router_name: str, config: Config | None, plot: Path, console: Console, cost_aware: bool = False
) -> dict[str, Any]:
    """Quality against cost for the cascade, direct routing and random routing on answered rows.

    The cascade pays the cheap call on every prompt and the strong one on escalated ones;
    ``cost_aware`` ranks its answers by ``cost_weighted`` scores, as a tier with that setting does.
    Prices: the config's cheapest and strongest tiers' primaries, else RouteLLM's ($0.90/M, $20/M).
    """
    import numpy as np

    from router.cascade import CallCosts, Prices, cascade_curve, cascade_summary, plot_cost_curves, random_cost_curve, routing_cost_curve
    from router.scorer import Candidate, cost_weighted, load_scorer
    from router.verifier import read_answered_rows

    rows = [row for path in data for row in read_answered_rows(_existing(path))]
    prices = _token_prices(config) if config else Prices()
    costs = CallCosts.from_texts(
        [r.prompt for r in rows], [r.weak_response for r in rows], [r.strong_response for r in rows],
        [r.weak for r in rows], [r.strong for r in rows], prices,
    )  # fmt: skip
    scorer = load_scorer(scorer_kind)
    weak_scores = np.array([s.value for s in scorer.score_batch([Candidate(r.prompt, r.weak_response) for r in rows])])
    if cost_aware:
        weak_scores = cost_weighted(weak_scores, [r.prompt for r in rows], [r.weak_response for r in rows])
    router = load_router(router_name)
    _warn_if_trained_on(router, data, console)
    routing = routing_cost_curve(np.array([s.value for s in router.score_batch([r.prompt for r in rows])]), costs)
    cascade = cascade_curve(weak_scores, costs)
    curves = {f"cascade ({scorer_kind}{', cost-aware' if cost_aware else ''})": cascade, f"routing ({router_name})": routing, "random": random_cost_curve(costs)}
    plot_cost_curves(curves, costs, plot, title="Quality against cost")
    summary = cascade_summary(cascade, routing, costs)
    console.print(_cascade_text(summary, len(rows)))
    console.print(f"plot: {plot}")
    return {
        "rows": len(rows), "scorer": scorer_kind, "cost_aware": cost_aware, "prices_per_million": prices.__dict__,
        "summary": summary, "plot": str(plot),
    }  # fmt: skip


def _token_prices(config: Config) -> Any:
    from router.cascade import Prices

    weak, strong = config.tiers[0].deployments[0], config.frontier.deployments[0]
    return Prices(weak.input_cost_per_million, weak.output_cost_per_million, strong.input_cost_per_million, strong.output_cost_per_million)


def _cascade_text(s: dict[str, Any], rows: int) -> str:
    if not s.get("reached"):
        return f"{rows} prompts: the cascade never reaches 95% of the strong model's quality"
    return (
        f"{rows} prompts: the cascade reaches {s['quality_share_of_strong']:.1%} of strong quality at "
        f"{s['cost_share']:.1%} of the all-strong cost ({s['escalated_share']:.1%} escalated, threshold {s['threshold']:.3f}); "
        f"routing at that cost reaches {s['routing_quality_at_equal_cost']:.3f} against the cascade's {s['quality']:.3f}."
    )


def verify_lines(path: Path, scorer_kind: str, out: Any, cost_aware: bool = False) -> int:
    """Score ``{"custom_id", "prompt", "response"}`` lines; one ``{"custom_id", "score"}`` line each."""
    from router.scorer import Candidate, cost_weighted, load_scorer

    scorer = load_scorer(scorer_kind)
    count = 0
    with open(_existing(path), "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
                candidate = Candidate(str(data["prompt"]), str(data["response"]))
            except (ValueError, KeyError, TypeError):
                out.write(json.dumps({"custom_id": None, "line": number, "error": 'needs "prompt" and "response"'}) + "\n")
                continue
            value = scorer.score_batch([candidate])[0].value
            if cost_aware:
                value = float(cost_weighted([value], [candidate.prompt], [candidate.answer])[0])
            out.write(json.dumps({"custom_id": data.get("custom_id"), "score": round(value, 4)}) + "\n")
            count += 1
    return count
