"""The routing tuner's side of the CLI: `turnout eval` and `turnout calibrate`."""

from __future__ import annotations

import bisect
import io
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from router.classifier import DEFAULT_MODEL_PATH, Classifier
from schemas.config import Config, Tier
from schemas.errors import ConfigError, TurnoutError
from workers.paths import input_file

#: Tokens per answer assumed when pricing a call for "cost at 95% of strong quality".
ASSUMED_COMPLETION_TOKENS = 256
CHARS_PER_TOKEN = 4


def load_router(name: str) -> Classifier:
    from router.heuristic import HeuristicClassifier
    from router.trained import TrainedClassifier

    if name == "heuristic":
        return HeuristicClassifier()
    return TrainedClassifier.load(DEFAULT_MODEL_PATH if name == "default" else Path(name))


#: Keys of ``run_eval``'s result beside the datasets' figures (``all``: the files pooled, when
#: there are several): a data file may not be named so.
RESULT_KEYS = ("all", "curves", "router", "plots")


def run_eval(
    data: list[Path], router_name: str, config: Config | None, plot: Path, console: Console, shown: Console | None = None
) -> dict[str, Any]:
    """Score the labeled rows, print RouteLLM's figures beside random and oracle (on ``shown``;
    warnings and the plots' paths on ``console``), write the plots."""
    from router.metrics import plot_quality_vs_share
    from router.training import evaluate, read_rows

    plot = plot_path(plot)
    rows = [row for path in data for row in read_rows(input_file(path, "labeled data"))]
    datasets = {row.dataset for row in rows}
    taken = sorted(datasets & set(RESULT_KEYS) - ({"all"} if len(datasets) == 1 else set()))
    if taken:
        raise TurnoutError(f"eval names each file's figures by its name up to the first dot, and {taken[0]!r} names "
                           f"a part of its output ({', '.join(RESULT_KEYS)}): rename that file")
    classifier = load_router(router_name)
    _warn_if_trained_on(classifier, rows, data, console)
    prices = _call_prices(config, rows) if config else None
    try:
        result = evaluate(classifier, rows, prices=prices)
    except ValueError as exc:
        raise TurnoutError(f"cannot evaluate on {exc}") from None
    result["router"] = router_name
    (shown or console).print(_table(result, router_name))
    result["plots"] = {}
    for dataset, curves in result["curves"].items():
        figures = result[dataset]
        path = plot if len(result["curves"]) == 1 else plot.with_name(f"{plot.stem}-{dataset}{plot.suffix}")
        named = {router_name: curves["router"], "oracle": curves["oracle"]}
        plot_quality_vs_share(named, figures["weak_quality"], figures["strong_quality"], path, title=f"{dataset}: quality against strong calls")
        result["plots"][dataset] = str(path)
        console.print(f"plot: {path}")
    return result


def plot_path(plot: Path) -> Path:
    """``--plot`` checked before any work: a .png (one is added to a name without a suffix) in a
    folder that exists and can be written."""
    if not plot.suffix:
        plot = plot.with_suffix(".png")
    if plot.suffix.lower() != ".png":
        raise TurnoutError(f"--plot {plot}: the plot is a PNG; give a path ending in .png")
    folder = plot.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise TurnoutError(f"--plot {plot}: cannot write in {folder}; give a path in a folder that exists and is writable")
    if plot.is_dir():
        raise TurnoutError(f"--plot {plot} is a folder; give a file path ending in .png")
    return plot


def _warn_if_trained_on(classifier: Classifier, rows: list[Any], data: list[Path], console: Console) -> None:
    """Warn when rows are among the model's training prompts (by fingerprint; by file name for a
    model written before it kept them): their figures are in-sample."""
    from router.trained import prompt_fingerprint

    fingerprints = getattr(classifier, "fingerprints", None)
    if fingerprints:
        seen = sum(prompt_fingerprint(row.prompt) in fingerprints for row in rows)
        if seen:
            console.print(
                f"[yellow]warning: {seen:,} of these {len(rows):,} prompts ({seen / len(rows):.0%}) are ones the model "
                "was trained on: figures on them are in-sample. Evaluate on prompts it never saw; the model "
                "card's held-out figures are the honest ones.[/yellow]"
            )
        return
    card = getattr(classifier, "card", None) or {}
    trained_on = {Path(str(entry.get("path"))).name for entry in card.get("files", []) if isinstance(entry, dict)}
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
        return tier.deployments[0].cost(prompt_tokens, ASSUMED_COMPLETION_TOKENS)

    prices = {}
    for name, members in groups.items():
        tokens = sum(len(row.prompt) for row in members) / max(len(members), 1) / CHARS_PER_TOKEN
        prices[name] = (price(config.tiers[0], tokens), price(config.frontier, tokens))
    return prices


def _table(result: dict[str, Any], router_name: str) -> Table:
    priced = any(isinstance(m, dict) and m.get("cost_at_95") is not None for m in result.values())
    caption = ("cost: USD per call (mean prompt length, the config's prices), at the share of strong calls that reaches 95% "
               "of the strong model's quality / with every call strong" if priced else "cost: give a config (-c) with the tiers' prices")
    table = Table(title=f"router {router_name} (RouteLLM metrics; CPT = share of strong calls)", caption=caption, show_edge=False)
    for column in ("data", "n", "router", "CPT(20%)", "CPT(50%)", "CPT(80%)", "APGR", "strong at 95%", "cost at 95% / all-strong"):
        table.add_column(column)
    for dataset, m in result.items():
        if not isinstance(m, dict) or "cpt" not in m:
            continue
        cost = f"{m['cost_at_95']:.6f} / {m['cost_all_strong']:.6f}" if m.get("cost_at_95") is not None else "-"
        cpt, oracle = m["cpt"], m.get("oracle_cpt") or {}
        table.add_row(dataset, str(m["n"]), router_name, *(f"{cpt[k]:.1%}" for k in ("20%", "50%", "80%")), f"{m['apgr']:.3f}",
                      f"{m['share_at_95']:.1%}", cost)  # fmt: skip
        table.add_row("", "", "random", "20.0%", "50.0%", "80.0%", "0.500", "", "")
        table.add_row("", "", "oracle", *(f"{oracle[k]:.1%}" if k in oracle else "" for k in ("20%", "50%", "80%")),
                      f"{m['oracle_apgr']:.3f}", "", "")  # fmt: skip
    return table


# --- calibrate ---------------------------------------------------------------------------


#: A kind of prompt gets thresholds of its own from at least this many calibration prompts;
#: fewer would put its share off by more than a few points. Smaller kinds use ``min_score``.
MIN_PROMPTS_PER_KIND = 50
#: Fewer calibration prompts than this get a warning in the fragment: the shares they give
#: are coarse steps, and far from what the traffic to come will get.
MIN_CALIBRATION_PROMPTS = 200


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
    prompts, skipped = _prompts(input_file(data, "prompt file"), config)
    if not prompts:
        raise TurnoutError(f"{data} holds no prompt to calibrate on ({_counted(skipped) or 'it is empty'})")
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
    counts = Counter(s.kind for s in scores if s.kind in separate)
    small = sorted(kind for kind in counts if kind not in own)
    # a kind with too few prompts here keeps a threshold the config gives it; --overall drops them all
    kept = [kind for kind in small if any(kind in tier.min_score_by_kind for tier in config.tiers[1:])] if by_kind else []
    if write:
        _write_thresholds(config_path, {tier["name"]: tier for tier in fragment["tiers"]}, kept)
    shares_text = ", ".join(f"{name} {share * 100:g}%" for name, share in zip(names, wanted))
    header = f"# calibrated on {len(prompts)} prompt{'s' * (len(prompts) != 1)} of {data.name} with router {classifier.label}: {shares_text}\n"
    if len(prompts) < MIN_CALIBRATION_PROMPTS:
        header += (f"# few prompts: on {len(prompts)} a share moves in steps of {1 / len(prompts):.1%}, and other traffic's "
                   f"will differ by more; calibrate on {MIN_CALIBRATION_PROMPTS} or more like the traffic to come\n")
    if skipped:
        header += f"# left out: {_counted(skipped)} (the thresholds do not route them)\n"
    header += _tie_note(scores, names, wanted, overall, own)
    on_min = [f"{kind} ({counts[kind]})" for kind in small if kind not in kept]
    if on_min:
        header += f"# fewer than {MIN_PROMPTS_PER_KIND} prompts, so on min_score: {', '.join(on_min)}\n"
    if kept:
        held = ", ".join(f"{kind} ({counts[kind]})" for kind in kept)
        header += f"# fewer than {MIN_PROMPTS_PER_KIND} prompts of {held}: the config's min_score_by_kind for them is left as it is\n"
    tiers = [config.tiers[0].name, *names]
    return header + _shares_by_kind(scores, tiers, overall, own) + yaml.safe_dump(fragment, sort_keys=False)


def _write_thresholds(config_path: Path, calibrated: dict[str, dict[str, Any]], kept: Collection[str] = ()) -> None:
    """Set the calibrated tiers' thresholds in the config file, its comments and layout kept
    (a round trip through ruamel.yaml), and only if the result is a valid config. A tier's
    ``min_score_by_kind`` entries for the ``kept`` kinds stay as they are."""
    from ruamel.yaml import YAML

    text = config_path.read_text()
    round_trip = YAML()
    round_trip.indent(**_layout(text))
    round_trip.width = 4096  # never fold a long line
    raw = round_trip.load(text)
    for tier in raw["tiers"]:
        new = calibrated.get(tier["name"])
        if new is None:
            continue
        old = tier.pop("min_score_by_kind", None) or {}
        tier["min_score"] = new["min_score"]
        by_kind = {**{kind: score for kind, score in old.items() if kind in kept}, **new.get("min_score_by_kind", {})}
        if by_kind:
            tier.insert(list(tier).index("min_score") + 1, "min_score_by_kind", by_kind)
    try:
        Config.model_validate(raw)
    except ValidationError as exc:  # e.g. scores piled up at 1.0 leave no room for a rising threshold
        error = exc.errors()[0]
        raise TurnoutError(f"cannot calibrate: the thresholds would break {config_path}: {error['msg']}; "
                           "pick other shares, or calibrate on more varied prompts") from None
    written = io.StringIO()
    round_trip.dump(raw, written)
    target = config_path.resolve()  # a symlinked config stays a symlink
    partial = target.with_name(f".{target.name}.tmp")
    try:
        partial.write_text(written.getvalue())
        shutil.copymode(target, partial)  # e.g. 0640 for /etc/turnout/turnout.yaml
        if os.geteuid() == 0:  # and its owner and group (root:turnout), where this may set them
            os.chown(partial, target.stat().st_uid, target.stat().st_gid)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _layout(text: str) -> dict[str, int]:
    """The config's indentation, for ruamel.yaml to write it back alike: a mapping's keys under
    its parent (2 in the examples), and a list's items ("  - name: cheap": offset 2 for the
    dash, 4 for the keys after it). ruamel.yaml guesses the list's; a mapping's is the first
    key indented under a top-level key, where a list item is not."""
    from ruamel.yaml.util import load_yaml_guess_indent

    _, sequence, offset = load_yaml_guess_indent(text)
    mapping = 2
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for parent, child in zip(lines, lines[1:]):
        indent = len(child) - len(child.lstrip(" "))
        if not parent.startswith(" ") and parent.rstrip().endswith(":") and indent and not child.lstrip().startswith("-"):
            mapping = indent
            break
    if sequence is None:  # no list to guess from
        return {"mapping": mapping, "sequence": mapping + 2, "offset": mapping}
    return {"mapping": mapping, "sequence": sequence, "offset": offset or 0}


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.most_common())


def _tie_note(scores: list[Any], names: list[str], wanted: list[float], overall: list[float], own: dict[str, list[float]]) -> str:
    """A comment line when tied scores (many copies of one prompt, or a heuristic with few
    distinct scores) keep the thresholds from giving a tier the prompts a quantile would: the
    shares they do give. A sample of n prompts allows shares in steps of 1/n; that is no tie."""
    groups = Counter(s.kind if s.kind in own else None for s in scores)
    above = [0.0]  # the share on tier i+1 and every dearer one, summed as score_thresholds sums it
    for share in reversed(wanted):
        above.insert(0, above[0] + share)
    expected = [sum(min(round(above[i] * n), n) - min(round(above[i + 1] * n), n) for n in groups.values()) for i in range(len(names))]
    reached = Counter(bisect.bisect_right(own.get(s.kind or "", overall), s.value) for s in scores)
    got = [reached[i + 1] for i in range(len(names))]  # tier i+1: at or above its threshold, below the next
    if got == expected:
        return ""
    shares = ", ".join(f"{name} {g / len(scores):.1%} (asked {w:.0%})" for name, g, w in zip(names, got, wanted))
    return f"# tied scores: on these prompts the thresholds give {shares}; no threshold splits a tie\n"


def _calibrated_tier(name: str, overall: float, by_kind: dict[str, float]) -> dict[str, Any]:
    tier: dict[str, Any] = {"name": name, "min_score": overall}
    if by_kind:
        tier["min_score_by_kind"] = by_kind
    return tier


def _shares_by_kind(scores: list[Any], tiers: list[str], overall: list[float], own: dict[str, list[float]]) -> str:
    """Comment lines: where each kind of prompt goes, on its own thresholds or on min_score."""
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
        if above[-1] in given and given[above[-1]] != frontier_share:
            raise TurnoutError(f"--frontier-share {frontier_share} and --share {above[-1]}={given[above[-1]]} both set "
                               f"the top tier's share; give one")
        given[above[-1]] = frontier_share
    missing = [name for name in above if name not in given]
    if missing:
        raise TurnoutError(f"give a share for {missing} (--frontier-share for the top tier, --share TIER=X for others)")
    return [given[name] for name in above]


def _prompts(path: Path, config: Config) -> tuple[list[str], Counter[str]]:
    """The prompts the thresholds will meet: labeled rows' ``prompt``, and input lines' (simple
    or OpenAI Batch, content parts included) prompt text as the classify task reads it. Input
    lines that pin a tier (the thresholds do not move them) or that a batch would turn into
    error lines are left out, counted by why."""
    from router.policy import TierPolicy
    from schemas.errors import InputLineError
    from schemas.job import numbered, parse_line

    policy = TierPolicy(config)
    prompts: list[str] = []
    skipped: Counter[str] = Counter()
    with open(path, "rb") as handle:
        for number, raw in numbered(handle):
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("prompt"), str) and "custom_id" not in data:
                prompts.append(data["prompt"])  # a labeled row: {"id", "prompt", "weak", "strong"}
                continue
            try:
                job = parse_line(raw, number, "calibrate", config.limits)
                pinned = policy.pinned_tier(job.model)
            except InputLineError:
                skipped["error lines"] += 1
                continue
            if pinned is not None:
                skipped["pinned to a tier"] += 1
                continue
            prompts.append(job.prompt_text)
    return prompts, skipped


# --- the cascade -------------------------------------------------------------------------


def run_cascade_eval(
    data: list[Path], scorer_kind: str, router_name: str, config: Config | None, plot: Path, console: Console, cost_aware: bool = False,
    verifier: str | None = None, shown: Console | None = None,
) -> dict[str, Any]:
    """Quality against cost for the cascade, direct routing and random routing on answered rows.

    The cascade pays the cheap call on every prompt and the strong one on escalated ones;
    ``cost_aware`` ranks its answers by ``cost_weighted`` scores, as a tier with that setting does.
    Prices: the config's cheapest and strongest tiers' primaries, else RouteLLM's ($0.90/M, $20/M).
    ``verifier``: the verifier file for the verifier kinds (default: the shipped one).
    """
    import numpy as np

    from router.cascade import CallCosts, Prices, cascade_curve, cascade_summary, plot_cost_curves, random_cost_curve, routing_cost_curve
    from router.scorer import Candidate, cost_weighted
    from router.verifier import read_answered_rows

    scorer = offline_scorer(scorer_kind, verifier)
    plot = plot_path(plot)
    rows = [row for path in data for row in read_answered_rows(input_file(path, "labeled data"))]
    prices = _token_prices(config) if config else Prices()
    costs = CallCosts.from_texts(
        [r.prompt for r in rows], [r.weak_response for r in rows], [r.strong_response for r in rows],
        [r.weak for r in rows], [r.strong for r in rows], prices,
    )  # fmt: skip
    weak_scores = np.array([s.value for s in scorer.score_batch([Candidate(r.prompt, r.weak_response) for r in rows])])
    if len(rows) > 1 and np.ptp(weak_scores) == 0:
        console.print(f"[yellow]warning: the {scorer_kind} scorer gave every answer {weak_scores[0]:.3g}: it found nothing "
                      "to tell them apart by (logprob needs each answer's token logprobs in the rows)[/yellow]")
    if cost_aware:
        weak_scores = cost_weighted(weak_scores, [r.prompt for r in rows], [r.weak_response for r in rows])
    router = load_router(router_name)
    _warn_if_trained_on(router, rows, data, console)
    routing = routing_cost_curve(np.array([s.value for s in router.score_batch([r.prompt for r in rows])]), costs)
    cascade = cascade_curve(weak_scores, costs)
    curves = {f"cascade ({scorer_kind}{', cost-aware' if cost_aware else ''})": cascade, f"routing ({router_name})": routing, "random": random_cost_curve(costs)}
    plot_cost_curves(curves, costs, plot, title="Quality against cost")
    summary = cascade_summary(cascade, routing, costs)
    (shown or console).print(_cascade_text(summary, len(rows)))
    console.print(f"plot: {plot}")
    return {
        "rows": len(rows), "scorer": scorer_kind, "cost_aware": cost_aware, "prices_per_million": prices.__dict__,
        "summary": summary, "plot": str(plot),
    }  # fmt: skip


def _token_prices(config: Config) -> Any:
    from router.cascade import Prices

    weak, strong = config.tiers[0].deployments[0], config.frontier.deployments[0]
    return Prices(*weak.prices, *strong.prices)


def _cascade_text(s: dict[str, Any], rows: int) -> str:
    if not s.get("reached"):
        return f"{rows} prompts: the cascade never reaches 95% of the strong model's quality"
    return (
        f"{rows} prompts: the cascade reaches {s['quality_share_of_strong']:.1%} of strong quality at "
        f"{s['cost_share']:.1%} of the all-strong cost ({s['escalated_share']:.1%} escalated, threshold {s['threshold']:.3f}); "
        f"routing at that cost reaches {s['routing_quality_at_equal_cost']:.3f} against the cascade's {s['quality']:.3f}."
    )


def offline_scorer(kind: str, verifier: str | None = None) -> Any:
    """The scorer ``kind`` for scoring answers already given; a kind that cannot (judge asks a
    model) or that does not exist is one sentence."""
    from router.scorer import SCORER_KINDS, load_scorer

    if kind not in SCORER_KINDS:
        raise TurnoutError(f"unknown scorer {kind!r}; choose one of {', '.join(SCORER_KINDS)}")
    if kind.endswith("judge"):
        raise TurnoutError(f"the {kind} scorer asks a model, which only a running cascade tier does; "
                           "score answers here with format, logprob, verifier or format+<kind>")
    return load_scorer(kind, verifier)


def verify_lines(path: Path, scorer_kind: str, out: Any, cost_aware: bool = False, verifier: str | None = None) -> int:
    """Score ``{"custom_id", "prompt", "response"}`` lines; one ``{"custom_id", "score"}`` line each
    (a line without both as strings gets ``error`` instead)."""
    from router.scorer import Candidate, cost_weighted

    scorer = offline_scorer(scorer_kind, verifier)
    count = 0
    with open(input_file(path, "answer file"), "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not (isinstance(data, dict) and isinstance(data.get("prompt"), str) and isinstance(data.get("response"), str)):
                custom_id = data.get("custom_id") if isinstance(data, dict) else None
                out.write(json.dumps({"custom_id": custom_id, "line": number, "error": 'needs "prompt" and "response" as strings'}) + "\n")
                continue
            candidate = Candidate(data["prompt"], data["response"])
            value = scorer.score_batch([candidate])[0].value
            if cost_aware:
                value = float(cost_weighted([value], [candidate.prompt], [candidate.answer])[0])
            out.write(json.dumps({"custom_id": data.get("custom_id"), "score": round(value, 4)}) + "\n")
            count += 1
    return count
