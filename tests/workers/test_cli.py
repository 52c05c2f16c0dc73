"""The CLI: --help everywhere, and one clear sentence (no traceback) for a user's mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

COMMANDS = [
    "run", "submit", "worker", "status", "collect", "classify", "fake-provider", "train", "eval", "calibrate",
    "verify", "train-verifier", "dlq", "flower", "metrics", "worker-ping", "report", "scale", "delete",
]  # fmt: skip


def turnout(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str) -> None:
    result = turnout(command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout and len(result.stdout.splitlines()) > 4


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, however long: grep-able
    message = result.stderr.strip()
    assert message.startswith("turnout: error:")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("flags", "fragment"), [(["--follow", "--delete"], "--delete needs files"), (["-o", "out", "--spill"], "use it with --wait")]
)
def test_collect_flags_that_do_not_go_together_are_one_sentence(flags: list[str], fragment: str, repo_root: Path) -> None:
    result = turnout("collect", "some-batch", *flags, "-c", str(repo_root / "examples/turnout.yaml"))
    assert_one_clear_line(result, fragment)


def test_a_missing_input_file_is_one_sentence(tmp_path: Path, repo_root: Path) -> None:
    result = turnout("run", str(tmp_path / "nope.jsonl"), "-c", str(repo_root / "examples/turnout.yaml"))
    assert_one_clear_line(result, "nope.jsonl", "not found")


def test_a_broken_config_is_one_sentence_naming_the_field(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "turnout.yaml"
    config.write_text("tiers:\n  - name: cheap\n    deployments: [{model: x, api_key: sk-123}]\n")
    result = turnout("classify", str(repo_root / "examples/batch.jsonl"), "-c", str(config))
    assert_one_clear_line(result, "api_key", "os.environ/NAME")


def test_run_stops_before_starting_anything_on_an_api_key_that_is_not_set(tmp_path: Path, repo_root: Path) -> None:
    # Given a tier whose first deployment reads its key from a variable nobody set
    config = tmp_path / "turnout.yaml"
    text = (repo_root / "examples/turnout.yaml").read_text()
    config.write_text(text.replace("name: cheap-primary\n", "name: cheap-primary\n        api_key: os.environ/TURNOUT_TEST_UNSET_KEY\n", 1))
    assert "TURNOUT_TEST_UNSET_KEY" in config.read_text()
    # When the batch is run, Then it stops at once, in one line naming the tier, the deployment and the variable,
    # having started nothing (no Redis, no pools: a pool that fails at start would be restarted forever)
    result = turnout("run", str(repo_root / "examples/batch.jsonl"), "-c", str(config), cwd=tmp_path)
    assert_one_clear_line(result, "tier cheap", "cheap-primary", "$TURNOUT_TEST_UNSET_KEY", "not set")
    assert not (tmp_path / ".turnout").exists()


def test_run_stops_before_starting_anything_on_a_corrupt_model_file(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / "model.json").write_text('{"bad": 1}')
    config = tmp_path / "turnout.yaml"
    text = (repo_root / "examples/turnout.yaml").read_text()
    config.write_text(text.replace("kind: auto ", f"kind: trained\n  model_path: {tmp_path / 'model.json'}\n  #", 1))
    result = turnout("run", str(repo_root / "examples/batch.jsonl"), "-c", str(config), cwd=tmp_path)
    assert_one_clear_line(result, "model.json", "not a turnout router model")
    assert not (tmp_path / ".turnout").exists()


def test_an_unreachable_redis_is_one_sentence_without_the_password(repo_root: Path) -> None:
    url = "redis://:hunter2secret@127.0.0.1:1/0"
    result = turnout("status", "-c", str(repo_root / "examples/turnout.yaml"), env={"TURNOUT_REDIS_URL": url})
    assert_one_clear_line(result, "cannot reach Redis", "***")
    assert "hunter2secret" not in result.stderr + result.stdout


def test_classify_prints_pure_json_lines_and_a_summary_on_stderr(repo_root: Path) -> None:
    result = turnout("classify", str(repo_root / "examples/batch.jsonl"), "-c", str(repo_root / "examples/turnout.yaml"))
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 40
    assert all(set(line) == {"custom_id", "tier", "score"} and 0 <= line["score"] <= 1 for line in lines)
    assert "Estimated cost" in result.stderr
    # And - reads the same lines from stdin, as submit's - does
    piped = subprocess.run([sys.executable, "-m", "workers.cli", "classify", "-", "-c", str(repo_root / "examples/turnout.yaml")],
                           input=(repo_root / "examples/batch.jsonl").read_text(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert piped.returncode == 0 and piped.stdout == result.stdout


def test_verify_scores_each_answer_and_rejects_a_refusal(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    lines = [
        {"custom_id": "good", "prompt": "What is 2 + 3?", "response": "2 + 3 = 5. The answer is 5."},
        {"custom_id": "refusal", "prompt": "What is 2 + 3?", "response": "I'm sorry, but I cannot help with that."},
    ]
    answers.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = turnout("verify", str(answers), "--scorer", "format")
    assert result.returncode == 0, result.stderr
    scores = {line["custom_id"]: line["score"] for line in map(json.loads, result.stdout.splitlines())}
    assert scores["good"] > scores["refusal"] and scores["refusal"] == 0.0


def test_verify_cost_aware_weighs_the_verifier_score_by_the_escalation_size(tmp_path: Path) -> None:
    from router.scorer import cost_weighted

    answers = tmp_path / "answers.jsonl"
    line = {"custom_id": "a", "prompt": "Tom has 3 apples and buys 4 more. How many now?", "response": "3 + 4 = 7. The answer is 7."}
    answers.write_text(json.dumps(line) + "\n")
    plain = json.loads(turnout("verify", str(answers), "--scorer", "verifier").stdout)["score"]
    weighted = json.loads(turnout("verify", str(answers), "--scorer", "verifier", "--cost-aware").stdout)["score"]
    assert weighted == pytest.approx(float(cost_weighted([plain], [line["prompt"]], [line["response"]])[0]), abs=2e-4)
    assert weighted < plain  # a short answer is cheap to escalate


def answered_rows(rows: Path) -> Path:
    """20 answered word problems: the weak model right on every other one, the strong one on all."""
    good, bad = "3 + 4 = 7. The answer is 7.", "He has 12 apples."
    rows.write_text("".join(
        json.dumps({"id": f"r{i}", "prompt": "Tom has 3 apples and buys 4 more. How many now?", "weak_response": good if i % 2 else bad,
                    "strong_response": good, "weak": float(i % 2), "strong": 1.0}) + "\n"
        for i in range(20)
    ))  # fmt: skip
    return rows


def test_eval_cascade_takes_the_scorer_and_its_cost_weighting_from_the_config(tmp_path: Path, repo_root: Path) -> None:
    # Given answered rows and a config whose cheap tier cascades with a cost-aware verifier
    rows = answered_rows(tmp_path / "answered.jsonl")
    config = tmp_path / "turnout.yaml"
    text = (repo_root / "examples/turnout.yaml").read_text()
    config.write_text(text.replace("    models: [gpt-4o-mini]\n", "    models: [gpt-4o-mini]\n    policy: cascade\n    scorer: {kind: format+verifier, threshold: 0.7, cost_aware: true}\n", 1))
    # When the cascade is evaluated with and without the config's weighting
    runs = [turnout("eval", str(rows), "--policy", "cascade", "-c", str(config), "--json", "--plot", str(tmp_path / "p.png"), *flag) for flag in ([], ["--plain"])]
    # Then the config's scorer and weighting are used unless the command line says otherwise
    results = [json.loads(run.stdout) for run in runs]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    assert [(r["scorer"], r["cost_aware"]) for r in results] == [("format+verifier", True), ("format+verifier", False)]


_SUBJECTS = ["noble gas", "prime number", "mammal", "metal", "planet", "vowel", "primary colour", "even number"]


def _mixed_prompts(tmp_path: Path, per_kind: int) -> Path:
    """Multiple-choice prompts (a trained kind) and open-ended ones (the heuristic's), varied in length and words."""
    choice = [
        f"Question {i}: which of these is a {_SUBJECTS[i % 8]}?{' Think carefully.' * (i % 5)}\nA. neon\nB. iron\nC. tin\nD. lead\nAnswer:"
        for i in range(per_kind)
    ]
    chat = [f"Write a {'very ' * (i % 7)}short poem number {i} about the {_SUBJECTS[i % 8]}{', step by step' * (i % 2)}." for i in range(per_kind)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(choice + chat)))
    return path


def _kind_lines(stdout: str) -> dict[str, str]:
    lines = [line for line in stdout.splitlines() if line.startswith("#   ")]
    return {line.split(" prompts")[0].strip("# "): line for line in lines}


def test_calibrate_gives_open_ended_prompts_the_share_on_thresholds_of_their_own(tmp_path: Path, repo_root: Path) -> None:
    # Given 60 multiple-choice and 60 open-ended prompts: the trained router scores the first by the
    # expected gain of the strong model, the second by the heuristic, on another scale
    prompts = _mixed_prompts(tmp_path, 60)
    config = tmp_path / "turnout.yaml"
    config.write_text((repo_root / "examples/turnout.yaml").read_text())
    # When the frontier tier is calibrated for 30% of them, by kind (the default) and overall
    by_kind = turnout("calibrate", str(prompts), "--frontier-share", "0.3", "-c", str(config), "--write")
    overall = turnout("calibrate", str(prompts), "--frontier-share", "0.3", "-c", str(config), "--overall")
    assert by_kind.returncode == 0 and overall.returncode == 0, by_kind.stderr + overall.stderr
    # Then by kind, each kind sends about 30% to the frontier, the open-ended prompts on a threshold of their
    # own, written into the config (exactly 30%: the heuristic's scores do not tie; the choice model's trees
    # tie on these look-alike prompts, which moves a few across min_score)
    shares = {kind: _frontier_share(line) for kind, line in _kind_lines(by_kind.stdout).items()}
    assert sorted(shares) == ["choice", "general"]
    assert shares["general"] == 30 and abs(shares["choice"] - 30) <= 15, shares
    from schemas.config import load_config

    frontier = load_config(config).tiers[-1]
    assert sorted(frontier.min_score_by_kind) == ["general"]
    assert frontier.threshold("choice") != frontier.threshold("general")
    # And overall, one threshold serves both kinds, whose scales differ: their shares lie far apart,
    # about 30% together (the choice model's ties again)
    assert "min_score_by_kind" not in overall.stdout
    apart = [_frontier_share(line) for line in _kind_lines(overall.stdout).values()]
    assert abs(apart[0] - apart[1]) >= 20 and abs(sum(apart) / 2 - 30) <= 15, apart


def _frontier_share(line: str) -> int:
    return int(line.split("frontier ")[1].rstrip("%"))


def test_calibrate_leaves_a_kind_with_few_prompts_on_min_score(tmp_path: Path, repo_root: Path) -> None:
    # Given 10 prompts of each kind, too few open-ended ones for a threshold of their own
    prompts = _mixed_prompts(tmp_path, 10)
    result = turnout("calibrate", str(prompts), "--frontier-share", "0.3", "-c", str(repo_root / "examples/turnout.yaml"))
    # Then the fragment says so, and gives min_score alone
    assert result.returncode == 0, result.stderr
    assert "fewer than 50 prompts, so on min_score: general (10)" in result.stdout
    assert "min_score:" in result.stdout and "min_score_by_kind" not in result.stdout
    assert sorted(_kind_lines(result.stdout)) == ["choice", "general"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["calibrate", "examples/batch.jsonl", "--share", "frontier=abc"], ["--share", "SHARE a number", "frontier=abc"]),
        (["eval", "examples/batch.jsonl", "--policy", "bogus"], ["--policy is route or cascade", "bogus"]),
    ],
)
def test_a_malformed_option_value_is_one_sentence(args: list[str], fragments: list[str], repo_root: Path) -> None:
    assert_one_clear_line(turnout(*args, "-c", "examples/turnout.yaml", cwd=repo_root), *fragments)


def test_a_config_path_that_is_a_directory_is_one_sentence(tmp_path: Path, repo_root: Path) -> None:
    result = turnout("classify", str(repo_root / "examples/batch.jsonl"), "-c", str(tmp_path))
    assert_one_clear_line(result, str(tmp_path), "cannot be read", "-c PATH")


def test_classify_flags_what_run_would_reject_by_line_and_custom_id(tmp_path: Path, repo_root: Path) -> None:
    # Given a duplicate custom_id and a pin to a tier the config lacks, after a blank line
    lines = [{"custom_id": "a", "prompt": "Hi"}, {"custom_id": "a", "prompt": "Hi again"}, {"custom_id": "b", "prompt": "x", "model": "tier:nope"}]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join([json.dumps(lines[0]), "", *map(json.dumps, lines[1:])]) + "\n")
    result = turnout("classify", str(batch), "-c", str(repo_root / "examples/turnout.yaml"))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    # Then each is named by its id, its line as an editor counts it, and run's error code
    assert [(r["custom_id"], r["line"], r["code"]) for r in rows if "error" in r] == [("a", 3, "duplicate_custom_id"), ("b", 4, "unknown_tier")]
    assert "already used on line 1" in rows[1]["error"]


def test_classify_marks_pinned_lines_and_stops_where_submit_would(tmp_path: Path, repo_root: Path) -> None:
    # Given a config that takes batches of 3 lines, and 4 lines, the second pinned to the frontier
    config = tmp_path / "turnout.yaml"
    config.write_text((repo_root / "examples/turnout.yaml").read_text().replace("limits:\n", "limits:\n  max_batch_lines: 3\n", 1))
    lines = [{"custom_id": "a", "prompt": "Hi"}, {"custom_id": "b", "prompt": "Hi", "model": "tier:frontier"},
             {"custom_id": "c", "prompt": "Hi"}, {"custom_id": "d", "prompt": "Hi"}]  # fmt: skip
    (tmp_path / "batch.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = turnout("classify", str(tmp_path / "batch.jsonl"), "-c", str(config))

    # Then the pinned line says so (its score decided nothing), and the line past the limit is submit's error
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("pinned", False) for r in rows[:3]] == [False, True, False] and rows[1]["tier"] == "frontier"
    assert rows[3]["line"] == 4 and rows[3]["code"] == "batch_too_long" and "limits.max_batch_lines" in rows[3]["error"]
    assert "1 pinned" in result.stderr


def test_classify_of_an_empty_file_says_so(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    result = turnout("classify", str(tmp_path / "empty.jsonl"), "-c", str(repo_root / "examples/turnout.yaml"))
    assert result.returncode == 0 and "no lines" in result.stderr


def test_a_malformed_redis_wait_is_one_sentence(repo_root: Path) -> None:
    result = turnout("worker", "--pool", "classify", "-c", str(repo_root / "examples/turnout.yaml"), env={"TURNOUT_REDIS_WAIT_S": "30s", "TURNOUT_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert_one_clear_line(result, "TURNOUT_REDIS_WAIT_S", "'30s'")



def test_dlq_list_shows_each_id_whole_at_80_columns(redis_url: str, repo_root: Path) -> None:
    # Given a dead letter with a long id, in a database of its own
    from schemas.job import Job
    from tests.conftest import other_db
    from workers.dlq import DeadLetters

    url = other_db(redis_url, 9)
    client = redis.Redis.from_url(url)
    client.flushdb()
    job = Job(batch_id="run-f5928cf5bd7e0123", custom_id="request-000000042-with-a-long-name-and-a-variant-of-it", line=42, messages=[{"role": "user", "content": "x"}])
    DeadLetters(client).add("cheap", job, "service_unavailable_error", "the provider said no " * 8)

    # When it is listed, piped (80 columns), and as JSON
    result = turnout("dlq", "list", "-c", str(repo_root / "examples/turnout.yaml"), env={"TURNOUT_REDIS_URL": url, "COLUMNS": "80"})
    as_json = turnout("dlq", "list", "--json", "-c", str(repo_root / "examples/turnout.yaml"), env={"TURNOUT_REDIS_URL": url})
    client.flushdb()

    # Then the id is there whole, for `dlq show` and `dlq replay` to take
    assert result.returncode == 0, result.stderr
    assert "run-f5928cf5bd7e0123:request-000000042-with-a-long-name-and-a-variant-of-it" in result.stdout
    assert "service_unavailable_error" in result.stdout  # and the other columns stay
    # And as JSON, one object per letter with its reason whole (the table cuts it at 80)
    [letter] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert letter["reason"] == "the provider said no " * 8
    assert letter["custom_id"] == job.custom_id and letter["batch_id"] == job.batch_id and letter["code"] == "service_unavailable_error"


def test_dlq_list_is_in_input_order_however_many_letters(redis_url: str, repo_root: Path) -> None:
    # Given 300 dead letters of two batches, added in shuffled order (past 128, Redis keeps a hash in no order)
    import random

    from schemas.job import Job
    from tests.conftest import other_db
    from workers.dlq import DeadLetters

    url = other_db(redis_url, 9)
    client = redis.Redis.from_url(url)
    client.flushdb()
    jobs = [Job(batch_id=batch, custom_id=f"r{line}", line=line, messages=[{"role": "user", "content": "x"}]) for batch in ("b1", "b2") for line in range(1, 151)]
    for job in random.Random(4).sample(jobs, len(jobs)):
        DeadLetters(client).add("cheap", job, "service_unavailable_error", "down")

    listed = turnout("dlq", "list", "--json", "-c", str(repo_root / "examples/turnout.yaml"), env={"TURNOUT_REDIS_URL": url})
    client.flushdb()

    # Then they are listed batch by batch, each in its input lines' order
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["custom_id"] for line in listed.stdout.splitlines()] == [job.custom_id for job in jobs]


def test_worker_ping_of_a_pool_the_config_lacks_is_one_sentence(repo_root: Path) -> None:
    result = turnout("worker-ping", "--pool", "nosuch", "-c", str(repo_root / "examples/turnout.yaml"))
    assert result.returncode == 2 and "nosuch" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_collect_of_an_unfinished_batch_says_its_files_are_partial(redis_url: str, repo_root: Path, tmp_path: Path) -> None:
    # Given a sealed batch of 2 lines with 1 recorded, in a database of its own
    from schemas.result import ResultLine, TurnoutInfo
    from tests.conftest import other_db
    from workers.ledger import Ledger

    url = other_db(redis_url, 9)
    client = redis.Redis.from_url(url)
    client.flushdb()
    ledger = Ledger(client)
    ledger.open_batch("half")
    ledger.record_ok("half", "a", ResultLine(id="x", custom_id="a", turnout=TurnoutInfo(tier="cheap")), 0.0)
    ledger.seal("half", 2)

    # When it is collected without --wait
    result = turnout("collect", "half", "-o", str(tmp_path / "out"), "-c", str(repo_root / "examples/turnout.yaml"), env={"TURNOUT_REDIS_URL": url})
    client.flushdb()

    # Then the files are written, and it says they are partial
    assert result.returncode == 0, result.stderr
    assert "not complete (1 of 2 lines to come)" in " ".join(result.stderr.split())
    assert len((tmp_path / "out/output.jsonl").read_text().splitlines()) == 1


def test_metrics_stops_cleanly_on_sigterm_as_a_container_stop_sends_it(redis_url: str, repo_root: Path) -> None:
    # Given the exporter serving (as a container's PID 1 it would ignore an unhandled SIGTERM)
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, TURNOUT_REDIS_URL=redis_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "metrics", "--port", str(port), "-c", str(repo_root / "examples/turnout.yaml")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the exporter did not start"
                time.sleep(0.2)
        # When it is sent SIGTERM
        process.send_signal(signal.SIGTERM)
        # Then it exits at once, of its own accord (0), not killed by the signal's default action
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_a_worker_started_alone_on_a_fake_provider_it_cannot_find_is_one_sentence(redis_url: str, repo_root: Path) -> None:
    # Given the sample config (api_base fake, port 0: `turnout run` starts the fake provider and says where)
    env = {k: v for k, v in os.environ.items() if k != "TURNOUT_FAKE_URL"} | {"TURNOUT_REDIS_URL": redis_url}
    # When a tier's worker is started on its own, as a systemd unit would start it
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "worker", "--pool", "cheap", "-c", str(repo_root / "examples/turnout.yaml")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    # Then it refuses at once, instead of sending every job to the dead-letter queue
    assert_one_clear_line(result, "api_base fake", "fake_provider.port", "TURNOUT_FAKE_URL")


def test_a_worker_with_a_corrupt_model_says_so_before_waiting_for_a_redis_that_is_not_up(tmp_path: Path, repo_root: Path) -> None:
    # Given a config naming a corrupt model file, and a Redis nothing listens on
    (tmp_path / "bad.json").write_text("not json")
    config = tmp_path / "turnout.yaml"
    config.write_text((repo_root / "examples/turnout.yaml").read_text().replace("  kind: auto", f"  model_path: {tmp_path / 'bad.json'}\n  kind: auto"))
    env = os.environ | {"TURNOUT_REDIS_URL": "redis://127.0.0.1:1/0", "TURNOUT_REDIS_WAIT_S": "5"}
    # When the classify worker starts, then it names the model (the thing to fix), not Redis
    result = subprocess.run([sys.executable, "-m", "workers.cli", "worker", "--pool", "classify", "-c", str(config)],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert_one_clear_line(result, "bad.json is corrupt")


def test_redis_failing_mid_command_is_one_sentence_saying_what_to_do() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    from workers.cli import redis_problem

    lost = redis_problem(RedisConnectionError("Error 111 connecting to /x/.turnout/redis.sock. Connection refused."))
    full = redis_problem(ResponseError("MISCONF Errors writing to the AOF file: No space left on device"))
    assert "lost the connection to Redis" in lost and "run the same command again" in lost
    assert "No space left on device" in full and "free disk space" in full and "run the same command again" in full


def test_watching_commands_attach_to_a_running_turnout_runs_redis_and_say_how_when_none(
    tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schemas.config import load_config
    from workers.broker import EmbeddedRedis, lock_state_dir
    from workers.cli import live_redis_url

    env = {k: v for k, v in os.environ.items() if k != "TURNOUT_REDIS_URL"} | {"TURNOUT_STATE_DIR": str(tmp_path / "state")}
    # Given no Redis configured and no `turnout run` going here
    result = subprocess.run([sys.executable, "-m", "workers.cli", "scale", "-c", str(repo_root / "examples/turnout.yaml")],
                            capture_output=True, text=True, env=env, timeout=120)
    # Then a watching command says what to do: run it beside a `turnout run`, or name a Redis
    assert_one_clear_line(result, "no `turnout run` is going", "beside a `turnout run`", "TURNOUT_REDIS_URL")

    # And given a `turnout run` holding the state directory and serving its embedded Redis
    monkeypatch.delenv("TURNOUT_REDIS_URL", raising=False)
    embedded = EmbeddedRedis(tmp_path / "state")
    url = embedded.start()
    held = lock_state_dir(tmp_path / "state", wait_s=0)
    held.seek(0), held.truncate(), held.write("turnout run (pid 1)"), held.flush()
    try:
        config = load_config(repo_root / "examples/turnout.yaml").model_copy(update={"state_dir": str(tmp_path / "state")})
        # Then they attach to it
        assert live_redis_url(config) == url
    finally:
        held.close()
        embedded.stop()
    # And once the run let go, they say so again rather than start a Redis of their own
    with pytest.raises(Exception, match="no `turnout run` is going"):
        live_redis_url(config)


def test_status_watch_beside_a_run_prints_frames_when_piped_and_ends_when_the_run_does(tmp_path: Path, repo_root: Path) -> None:
    import time

    from workers.broker import EmbeddedRedis, lock_state_dir

    # Given a `turnout run` holding its state directory and serving its embedded Redis
    embedded = EmbeddedRedis(tmp_path / "state")
    embedded.start()
    held = lock_state_dir(tmp_path / "state", wait_s=0)
    held.seek(0), held.truncate(), held.write("turnout run (pid 1)"), held.flush()
    env = {k: v for k, v in os.environ.items() if k != "TURNOUT_REDIS_URL"} | {"TURNOUT_STATE_DIR": str(tmp_path / "state")}
    # When `status --watch` runs beside it, piped, and the run then ends
    watcher = subprocess.Popen([sys.executable, "-m", "workers.cli", "status", "--watch", "--interval", "0.5", "-c",
                                str(repo_root / "examples/turnout.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)  # fmt: skip
    try:
        time.sleep(4)
        held.close()
        embedded.stop()
        stdout, stderr = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
        held.close()
        embedded.stop()
    # Then it printed frames while the run went on, and ended when it did, saying so
    assert watcher.returncode == 0, stderr
    assert stdout.count("deployments (this minute)") >= 2
    assert "has ended" in stderr


def test_metrics_beside_a_run_stops_when_the_run_ends(tmp_path: Path, repo_root: Path) -> None:
    import socket
    import time
    import urllib.request

    from workers.broker import EmbeddedRedis, lock_state_dir

    # Given a `turnout run` holding its state directory and serving its embedded Redis, and
    # the metrics endpoint serving beside it
    embedded = EmbeddedRedis(tmp_path / "state")
    embedded.start()
    held = lock_state_dir(tmp_path / "state", wait_s=0)
    held.seek(0), held.truncate(), held.write("turnout run (pid 1)"), held.flush()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "TURNOUT_REDIS_URL"} | {"TURNOUT_STATE_DIR": str(tmp_path / "state")}
    server = subprocess.Popen([sys.executable, "-m", "workers.cli", "metrics", "--port", str(port), "-c",
                               str(repo_root / "examples/turnout.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert b"turnout" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.2)
        # When the run ends
        held.close()
        embedded.stop()
        _, stderr = server.communicate(timeout=15)
    finally:
        server.kill()
        held.close()
        embedded.stop()
    # Then the endpoint stops too, saying why (it blocked each scrape 35 s, then answered 500)
    assert server.returncode == 0 and "has ended" in stderr


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_max_cost_that_caps_nothing_or_everything_is_one_sentence_before_any_work(value: str, tmp_path: Path, repo_root: Path) -> None:
    batch = tmp_path / "b.jsonl"
    batch.write_text('{"custom_id": "a", "prompt": "hi"}\n')
    config = str(repo_root / "examples/turnout.yaml")
    for args in (["run", str(batch)], ["submit", str(batch)]):
        result = turnout(*args, "-c", config, "--max-cost", value, cwd=tmp_path)
        assert_one_clear_line(result, f"--max-cost {float(value):g}", "in USD, above 0")
    assert not (tmp_path / ".turnout").exists()  # nothing started


def test_dlq_replay_sets_a_cap_for_one_batch_only(tmp_path: Path, repo_root: Path) -> None:
    result = turnout("dlq", "replay", "--max-cost", "3", "-c", str(repo_root / "examples/turnout.yaml"), cwd=tmp_path)
    assert_one_clear_line(result, "--max-cost sets one batch's cap: give --batch BATCH too")
