"""The routing tuner's commands at their edges: input as the workers read it, the files the
user names, and data that has no figures to give, each one sentence before any work."""

from __future__ import annotations

import io
import json
import re
import random
from pathlib import Path

import pytest
from rich.console import Console

from router.training import LabeledRow, TrainingDataError, fit, read_rows
from schemas.config import load_config
from schemas.errors import TurnoutError
from tests.workers.test_cli import answered_rows, assert_one_clear_line, turnout
from workers.evaluation import calibrate_config, run_eval


def _labeled(path: Path, rows: int, seed: int = 0, gap: bool = True, choice: bool = True) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(rows):
            word = rng.choice(["metal", "gas", "planet"])
            if choice:
                prompt = f"Question {seed}-{i}: which is a {word} {'x' * rng.randrange(50)}?\nA. neon\nB. iron\nC. tin\nD. lead\nAnswer:"
            else:  # open-ended: no numbers, no question
                prompt = f"Write a note about a {word}{' and more' * (i % 7)}."
            weak = rng.choice([0, 1])
            handle.write(json.dumps({"id": f"r{i}", "prompt": prompt, "weak": weak, "strong": 1 if gap else weak}) + "\n")
    return path


def _config(tmp_path: Path, repo_root: Path) -> Path:
    config = tmp_path / "turnout.yaml"
    config.write_text((repo_root / "examples/turnout.yaml").read_text())
    return config


def test_calibrate_reads_openai_content_parts_as_the_workers_do_and_leaves_out_pinned_and_bad_lines(tmp_path: Path, repo_root: Path) -> None:
    # Given the same 120 prompts as simple lines, and as OpenAI Batch lines whose content is a list of parts,
    # the second file also holding a line pinned to a tier and two lines a batch would reject
    prompts = [f"Question {i}: which is a metal?{' Think.' * (i % 7)}\nA. neon\nB. iron\nC. tin\nD. lead\nAnswer:" for i in range(60)]
    prompts += [f"Write a {'very ' * (i % 9)}short poem about the number {i}." for i in range(60)]
    simple, parts = tmp_path / "simple.jsonl", tmp_path / "parts.jsonl"
    simple.write_text("".join(json.dumps({"custom_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    batch = [
        {"custom_id": f"p{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": p}]}]}}
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    batch.append({"custom_id": "pinned", "prompt": "Hi", "model": "tier:frontier"})
    parts.write_text("".join(json.dumps(line) + "\n" for line in batch) + "[1, 2]\nnull\n")
    config_path = _config(tmp_path, repo_root)
    config = load_config(config_path)

    # When each is calibrated for 30% on the frontier
    fragments = [calibrate_config(config, config_path, path, 0.3, [], write=False) for path in (simple, parts)]

    # Then both give the same thresholds (the parts' text, not the list's repr, was scored)
    def thresholds(fragment: str) -> list[str]:
        return [line for line in fragment.splitlines() if not line.startswith("#")]

    assert thresholds(fragments[0]) == thresholds(fragments[1])
    # And the fragment says what it left out
    assert "# left out: 2 error lines, 1 pinned to a tier" in fragments[1]
    assert "left out" not in fragments[0]


def test_calibrate_says_when_tied_scores_cannot_give_the_asked_share(tmp_path: Path, repo_root: Path) -> None:
    # Given 100 prompts, 60 of them one and the same, scored by the heuristic
    prompts = ["Prove that the sum of two odd numbers is even, step by step."] * 60
    prompts += [f"Write a {'very ' * (i % 9)}short note number {i} about {'tea' if i % 2 else 'rain'}." for i in range(40)]
    path = tmp_path / "ties.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    config_path = _config(tmp_path, repo_root)
    config = load_config(config_path)
    config = config.model_copy(update={"classifier": config.classifier.model_copy(update={"kind": "heuristic"})})

    # When the frontier is asked for 30%
    fragment = calibrate_config(config, config_path, path, 0.3, [], write=False)

    # Then the fragment says the share the thresholds really give: the 60 tied prompts go together
    assert "# tied scores: on these prompts the thresholds give frontier 60.0% (asked 30%)" in fragment


def test_a_calibration_file_with_no_prompt_is_one_sentence(tmp_path: Path, repo_root: Path) -> None:
    path = tmp_path / "pinned.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "prompt": "Hi", "model": "tier:cheap"}) + "\n")
    config_path = _config(tmp_path, repo_root)
    with pytest.raises(TurnoutError, match="holds no prompt to calibrate on .1 pinned to a tier"):
        calibrate_config(load_config(config_path), config_path, path, 0.3, [], write=False)


def test_eval_warns_of_training_prompts_whatever_file_they_come_in(tmp_path: Path) -> None:
    # Given a model trained on 120 rows, and an eval file (named unlike the training file) holding 30 of them
    train = _labeled(tmp_path / "train.jsonl", 120, seed=1)
    rows = read_rows(train)
    model = fit(rows)
    model.save(tmp_path / "m.json")
    fresh = [json.loads(line) for line in _labeled(tmp_path / "other.jsonl", 90, seed=2).read_text().splitlines()]
    held = tmp_path / "held.jsonl"
    mixed = fresh + [json.loads(line) for line in train.read_text().splitlines()[:30]]
    held.write_text("".join(json.dumps(row) + "\n" for row in mixed))

    # When it is evaluated there
    console = Console(file=io.StringIO(), width=300)
    run_eval([held], str(tmp_path / "m.json"), None, tmp_path / "e.png", console)

    # Then the warning counts the training prompts among them
    assert "30 of these 120 prompts (25%) are ones the model was trained on" in console.file.getvalue()  # type: ignore[attr-defined]
    # And a file of prompts it never saw gets no warning
    quiet = Console(file=io.StringIO(), width=300)
    run_eval([tmp_path / "other.jsonl"], str(tmp_path / "m.json"), None, tmp_path / "e.png", quiet)
    assert "warning" not in quiet.file.getvalue()  # type: ignore[attr-defined]


def test_eval_on_data_without_a_quality_gap_is_one_sentence(tmp_path: Path, repo_root: Path) -> None:
    flat = _labeled(tmp_path / "flat.jsonl", 40, gap=False)
    assert_one_clear_line(turnout("eval", str(flat), "--router", "heuristic", "--plot", str(tmp_path / "e.png")), "flat:", "no gap")


@pytest.mark.parametrize(
    ("plot", "fragment"), [("curve.txt", "give a path ending in .png"), ("nowhere/e.png", "cannot write in")]
)
def test_a_plot_path_that_cannot_be_a_png_is_one_sentence_before_any_work(plot: str, fragment: str, tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 40)
    assert_one_clear_line(turnout("eval", str(data), "--router", "heuristic", "--plot", str(tmp_path / plot)), "--plot", fragment)


def test_a_plot_path_without_a_suffix_gets_png_and_says_so(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 40)
    result = turnout("eval", str(data), "--router", "heuristic", "--plot", str(tmp_path / "curve"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plots"]["d"] == str(tmp_path / "curve.png") and (tmp_path / "curve.png").is_file()


def test_eval_prints_its_figures_on_stdout_whole_with_the_oracles_cpt_and_what_the_cost_is(tmp_path: Path, repo_root: Path) -> None:
    # Given labeled rows, evaluated with the sample config's prices, the output piped to a file
    data = _labeled(tmp_path / "d.jsonl", 40)
    config = str(repo_root / "examples/turnout.yaml")
    result = turnout("eval", str(data), "--router", "heuristic", "-c", config, "--plot", str(tmp_path / "e.png"))
    # Then the table is on stdout, not cut to 80 columns, the oracle's CPTs in it beside the
    # router's and random's, and the cost says what it is
    assert result.returncode == 0, result.stderr
    table = " ".join(result.stdout.split())
    assert "cost at 95% / all-strong" in table and "USD per call" in table
    oracle = next(line for line in result.stdout.splitlines() if "oracle" in line)
    assert len(re.findall(r"\d+\.\d%", oracle)) == 3
    # And with --json, stdout is the JSON alone (the table on stderr), the oracle's CPTs in it
    figures = json.loads(turnout("eval", str(data), "--router", "heuristic", "-c", config, "--plot", str(tmp_path / "e.png"), "--json").stdout)
    assert set(figures["d"]["oracle_cpt"]) == {"20%", "50%", "80%"} and figures["d"]["oracle_cpt"]["50%"] <= figures["d"]["cpt"]["50%"]


def test_a_data_file_named_like_a_part_of_evals_output_is_one_sentence(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "curves.jsonl", 40)
    assert_one_clear_line(turnout("eval", str(data), "--router", "heuristic", "--plot", str(tmp_path / "e.png")), "'curves'", "rename")


def test_eval_with_a_named_config_that_does_not_exist_is_one_sentence(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 40)
    result = turnout("eval", str(data), "--router", "heuristic", "-c", str(tmp_path / "typo.yaml"), "--plot", str(tmp_path / "e.png"))
    assert_one_clear_line(result, "typo.yaml")


def _answered(tmp_path: Path) -> Path:
    return answered_rows(tmp_path / "answered.jsonl")


def test_the_cascade_eval_and_verify_use_the_verifier_file_they_are_given(tmp_path: Path, repo_root: Path) -> None:
    # Given a config whose cascade tier names a verifier file that is corrupt
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "turnout.router.verifier", "version": 1, "vocab')
    config = tmp_path / "turnout.yaml"
    scorer = f"    scorer: {{kind: format+verifier, threshold: 0.7, model_path: {broken}}}\n"
    config.write_text((repo_root / "examples/turnout.yaml").read_text().replace("    models: [gpt-4o-mini]\n", "    models: [gpt-4o-mini]\n    policy: cascade\n" + scorer, 1))
    rows = _answered(tmp_path)
    # When the cascade is evaluated with that config, and answers are verified with that file
    evaluated = turnout("eval", str(rows), "--policy", "cascade", "-c", str(config), "--plot", str(tmp_path / "p.png"))
    verified = turnout("verify", str(rows), "--verifier", str(broken))
    # Then each reads that file (and says it is corrupt), not the shipped verifier
    assert_one_clear_line(evaluated, str(broken), "corrupt")
    assert_one_clear_line(verified, str(broken), "corrupt")


@pytest.mark.parametrize(("scorer", "fragment"), [("bogus", "unknown scorer 'bogus'"), ("format+judge", "asks a model")])
def test_a_scorer_that_cannot_score_given_answers_is_one_sentence(scorer: str, fragment: str, tmp_path: Path) -> None:
    rows = _answered(tmp_path)
    assert_one_clear_line(turnout("verify", str(rows), "--scorer", scorer), fragment)
    assert_one_clear_line(turnout("eval", str(rows), "--policy", "cascade", "--scorer", scorer, "--plot", str(tmp_path / "p.png")), fragment)


def test_verify_gives_a_line_without_prompt_or_response_strings_an_error(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"custom_id": "n", "prompt": None, "response": None}) + "\n[1]\n")
    result = turnout("verify", str(answers), "--scorer", "format")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and [(line["custom_id"], line["line"], "error" in line) for line in lines] == [("n", 1, True), (None, 2, True)]


@pytest.mark.parametrize(("out", "fragment"), [("model.md", "give it a .json name"), ("model.txt", "give it a .json name"), ("folder", "is a folder")])
def test_train_refuses_an_output_path_it_could_not_write_before_fitting(out: str, fragment: str, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    data = _labeled(tmp_path / "d.jsonl", 60)
    for command in ("train", "train-verifier"):
        result = turnout(command, str(data if command == "train" else _answered(tmp_path)), "-o", str(tmp_path / out), "--folds", "0")
        assert_one_clear_line(result, fragment)
        assert "fitting" not in result.stdout + result.stderr


@pytest.mark.parametrize("out", ["d.json", "d.md"])
def test_train_refuses_an_output_path_that_would_overwrite_its_training_data(out: str, tmp_path: Path) -> None:
    # Given training data in d.json (the model would go there, or its card to d.md)
    data = tmp_path / out
    _labeled(tmp_path / "rows.jsonl", 60).rename(data)
    before = data.read_bytes()
    # When the model is to be written over it, then it is refused, the data untouched
    result = turnout("train", str(data), "-o", str(tmp_path / "d.json"), "--folds", "0")
    assert_one_clear_line(result, "would overwrite the training data", "give another name")
    assert data.read_bytes() == before


def test_train_with_one_fold_and_a_line_with_an_empty_prompt_are_each_one_sentence(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 60)
    assert_one_clear_line(turnout("train", str(data), "-o", str(tmp_path / "m.json"), "--folds", "1"), "--folds 1", "from 2")
    with open(data, "a") as handle:
        handle.write(json.dumps({"id": "e", "prompt": "  ", "weak": 0, "strong": 1}) + "\n")
    assert_one_clear_line(turnout("train", str(data), "-o", str(tmp_path / "m.json"), "--folds", "0"), "d.jsonl:61: 'prompt' is empty")
    assert not (tmp_path / "m.json").exists()


def test_a_data_file_given_twice_is_refused_as_its_rows_would_count_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _labeled(tmp_path / "d.jsonl", 60)
    monkeypatch.chdir(tmp_path)
    for command in ("train", "eval"):
        extra = ["-o", "m.json", "--folds", "0"] if command == "train" else ["--router", "heuristic", "--plot", "e.png"]
        result = turnout(command, "d.jsonl", str(tmp_path / "d.jsonl"), *extra)
        assert_one_clear_line(result, f"{tmp_path / 'd.jsonl'} is given twice (as d.jsonl)", "count twice")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "e.png").exists()


def test_training_data_that_would_train_nothing_is_one_sentence(tmp_path: Path) -> None:
    # Given 60 open-ended rows: no kind the router learns
    data = _labeled(tmp_path / "d.jsonl", 60, choice=False)
    result = turnout("train", str(data), "-o", str(tmp_path / "m.json"), "--folds", "0")
    assert_one_clear_line(result, "too few rows of a kind the router learns", "choice 0")
    assert not (tmp_path / "m.json").exists()


def test_training_data_without_a_gap_is_refused_before_cross_validation(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 60, gap=False)
    with pytest.raises(TrainingDataError, match="not above the weak one's.*--folds 0"):
        from router.training import train

        train([data], tmp_path / "m.json", folds=2)


def test_a_labeled_line_that_is_not_utf8_is_named_by_its_line(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 40)
    with open(data, "ab") as handle:
        handle.write(b'{"id": "x", "prompt": "caf\xe9", "weak": 0, "strong": 1}\n')
    with pytest.raises(TrainingDataError, match=r"d.jsonl:41: not UTF-8"):
        read_rows(data)


def test_train_verifier_reads_correctness_as_0_to_1_and_says_what_it_wrote(tmp_path: Path) -> None:
    rows = _answered(tmp_path)
    result = turnout("train-verifier", str(rows), "-o", str(tmp_path / "v.json"), "--folds", "0")
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 'v.json'} and {tmp_path / 'v.md'}" in " ".join(result.stdout.split()) and "Report(" not in result.stdout
    graded = tmp_path / "graded.jsonl"
    graded.write_text(rows.read_text().replace('"weak": 1.0', '"weak": 7'))
    assert_one_clear_line(turnout("train-verifier", str(graded), "-o", str(tmp_path / "g.json"), "--folds", "0"), "weak 7", "1 or 0")


def test_a_model_from_a_newer_turnout_says_to_upgrade(tmp_path: Path) -> None:
    from router.trained import MODEL_VERSION, TrainedClassifier
    from schemas.errors import ModelFileError

    model = fit([LabeledRow(f"r{i}", f"Question {i}?\nA. a\nB. b\nC. c\nD. d", i % 2, 1, "d") for i in range(60)])
    data = model.to_dict() | {"version": MODEL_VERSION + 1}
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="upgrade turnout"):
        TrainedClassifier.load(tmp_path / "m.json")


def test_submitting_a_folder_is_one_sentence_and_leaves_no_batch(redis_url: str, repo_root: Path, tmp_path: Path) -> None:
    from tests.conftest import other_db
    from workers.client import Client
    from schemas.config import load_config as load

    client = Client(load(repo_root / "examples/turnout.yaml"), other_db(redis_url, 9))
    client.ledger.redis.flushdb()
    with pytest.raises(TurnoutError, match="is a folder"):
        client.submit(tmp_path, batch_id="folder")
    assert client.ledger.status("folder") is None


def test_eval_scores_with_the_configs_classifier_unless_told_otherwise(tmp_path: Path, repo_root: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 40)
    config = tmp_path / "turnout.yaml"
    config.write_text((repo_root / "examples/turnout.yaml").read_text().replace("  kind: auto ", "  kind: heuristic ", 1))
    named = turnout("eval", str(data), "-c", str(config), "--json", "--plot", str(tmp_path / "e.png"))
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout)["router"] == "heuristic"
    told = turnout("eval", str(data), "-c", str(config), "--router", "default", "--json", "--plot", str(tmp_path / "e.png"))
    assert json.loads(told.stdout)["router"] == "default"


def test_two_shares_for_the_top_tier_are_one_sentence(tmp_path: Path, repo_root: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 40)
    result = turnout("calibrate", str(data), "--frontier-share", "0.3", "--share", "frontier=0.2", "-c", str(repo_root / "examples/turnout.yaml"))
    assert_one_clear_line(result, "--frontier-share 0.3", "frontier=0.2", "give one")


def test_a_cascade_scorer_that_tells_no_answer_apart_is_flagged(tmp_path: Path) -> None:
    rows = _answered(tmp_path)  # no logprobs in them
    result = turnout("eval", str(rows), "--policy", "cascade", "--scorer", "logprob", "--plot", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    assert "the logprob scorer gave every answer" in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    "layout", [None, {"mapping": 2, "sequence": 2, "offset": 0}, {"mapping": 4, "sequence": 6, "offset": 4}],
    ids=["the examples' layout", "list items at their key's column", "four spaces"],
)
def test_calibrate_write_keeps_the_configs_comments_and_layout(layout: dict[str, int] | None, tmp_path: Path, repo_root: Path) -> None:
    # Given the sample config, comments and all, as it is or indented otherwise, and prompts of both kinds
    config_path = _config(tmp_path, repo_root)
    if layout is not None:
        from ruamel.yaml import YAML

        restyle = YAML()
        restyle.indent(**layout)
        restyle.width = 4096
        written = io.StringIO()
        restyle.dump(restyle.load(config_path.read_text()), written)
        config_path.write_text(written.getvalue())
    before = config_path.read_text().splitlines()
    prompts = [f"Question {i}: which is a metal?{' Think.' * (i % 7)}\nA. neon\nB. iron\nC. tin\nD. lead\nAnswer:" for i in range(60)]
    prompts += [f"Write a {'very ' * (i % 9)}short poem about the number {i}." for i in range(60)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))

    # When the thresholds are written into it
    calibrate_config(load_config(config_path), config_path, data, 0.3, [], write=True)

    # Then only the frontier tier's thresholds changed: every other line, comments included, is as it was
    after = config_path.read_text().splitlines()
    changed = [line for line in after if line not in before]
    assert [line.split(":")[0].strip() for line in changed] == ["min_score", "min_score_by_kind", "general"], changed
    assert [line.strip() for line in before if line not in after] == ["min_score: 0.5"]
    frontier = load_config(config_path).tiers[-1]
    assert frontier.min_score != 0.5 and "general" in frontier.min_score_by_kind


def test_calibrate_keeps_a_kinds_threshold_it_has_too_few_prompts_to_calibrate(tmp_path: Path, repo_root: Path) -> None:
    # Given a config with a hand-set threshold for open-ended prompts, and a sample of 60 multiple-choice and 10 open-ended
    config_path = _config(tmp_path, repo_root)
    config_path.write_text(config_path.read_text().replace("# min_score_by_kind: {general: 0.31}", "min_score_by_kind: {general: 0.31}"))
    prompts = [f"Question {i}: which is a metal?{' Think.' * (i % 7)}\nA. neon\nB. iron\nC. tin\nD. lead\nAnswer:" for i in range(60)]
    prompts += [f"Write a {'very ' * i}short poem about the number {i}." for i in range(10)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))

    # When calibrated by kind and written, then the open-ended threshold stays, and the fragment says why
    fragment = calibrate_config(load_config(config_path), config_path, data, 0.3, [], write=True)
    frontier = load_config(config_path).tiers[-1]
    assert frontier.min_score != 0.5 and frontier.min_score_by_kind == {"general": 0.31}
    assert "fewer than 50 prompts of general (10): the config's min_score_by_kind for them is left as it is" in fragment
    # And calibrated --overall, one threshold for every prompt, it goes
    calibrate_config(load_config(config_path), config_path, data, 0.3, [], write=True, by_kind=False)
    assert load_config(config_path).tiers[-1].min_score_by_kind == {}


def test_calibrate_does_not_blame_ties_for_the_steps_a_small_sample_allows(tmp_path: Path, repo_root: Path) -> None:
    # Given 10 prompts with 10 distinct heuristic scores: 25% of them is 2.5 prompts, so 2 or 3 go
    prompts = [f"Write a {'very ' * i}short note about {'tea' if i % 2 else 'rain'}{', step by step' * (i % 3)}." for i in range(10)]
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    config_path = _config(tmp_path, repo_root)
    config = load_config(config_path)
    config = config.model_copy(update={"classifier": config.classifier.model_copy(update={"kind": "heuristic"})})
    from router.heuristic import HeuristicClassifier

    assert len({s.value for s in HeuristicClassifier().score_batch(prompts)}) == 10
    # When the frontier is asked for 25%, then the fragment does not call that a tie
    fragment = calibrate_config(config, config_path, path, 0.25, [], write=False)
    assert "tied scores" not in fragment
    # And it names the router the thresholds belong to, and says 10 prompts are few
    assert fragment.startswith("# calibrated on 10 prompts of few.jsonl with router heuristic: frontier 25%\n")
    assert "# few prompts: on 10 a share moves in steps of 10.0%" in fragment


def test_calibrate_write_keeps_a_symlinked_configs_link_and_mode(tmp_path: Path, repo_root: Path) -> None:
    import os
    import stat

    real = _config(tmp_path, repo_root)
    real.chmod(0o640)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    data = _labeled(tmp_path / "d.jsonl", 60)
    calibrate_config(load_config(link), link, data, 0.3, [], write=True)
    assert link.is_symlink() and stat.S_IMODE(os.stat(real).st_mode) == 0o640
    assert load_config(real).tiers[-1].min_score != 0.5
    assert not list(tmp_path.glob(".*.tmp"))


def test_more_folds_than_rows_is_one_sentence(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 60)
    assert_one_clear_line(turnout("train", str(data), "-o", str(tmp_path / "m.json"), "--folds", "1000"), "--folds 1000", "60 rows of d")
    assert_one_clear_line(turnout("train-verifier", str(_answered(tmp_path)), "-o", str(tmp_path / "v.json"), "--folds", "1000"), "20 prompts")


def test_train_says_when_one_row_sets_the_quality_scale_and_names_it(tmp_path: Path) -> None:
    data = _labeled(tmp_path / "d.jsonl", 60)
    quiet = turnout("train", str(data), "-o", str(tmp_path / "m.json"), "--folds", "0")
    assert quiet.returncode == 0, quiet.stderr
    assert "whole range" not in quiet.stderr
    with open(data, "a") as handle:  # a typo: a 10 among 1/0 correctness
        handle.write(json.dumps({"id": "typo", "prompt": "Question: which is a gas?\nA. neon\nB. iron\nAnswer:", "weak": 0, "strong": 10}) + "\n")
    noted = turnout("train", str(data), "-o", str(tmp_path / "m.json"), "--folds", "0")
    assert noted.returncode == 0, noted.stderr
    said = " ".join(noted.stderr.split())  # as the terminal wrapped it
    assert "widest strong-weak gap, 10 (id 'typo' in " in said and "that row is a typo" in said
