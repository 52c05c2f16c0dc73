"""`turnout run`: the whole pipeline in one command, on the embedded Redis."""

from __future__ import annotations

import json
import re
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from workers.broker import EmbeddedRedis, _answers, connect
from workers.ledger import Ledger
from workers.producer import UNACKED


def write_batch(path: Path, lines: int, seed: int = 3) -> int:
    """A batch with malformed lines mixed in; returns how many lines it has."""
    rng = random.Random(seed)
    bad = ['{"custom_id": "broken", ', "plain text", '{"custom_id": "x-no-prompt"}', "[]"]
    with open(path, "w") as handle:
        for i in range(lines):
            if rng.random() < 0.05:
                handle.write(rng.choice(bad) + "\n")
            elif i % 2:
                handle.write(json.dumps({"custom_id": f"r{i}", "prompt": f"Question {i}: what is {i} + {i}?"}) + "\n")
            else:
                body = {"model": "auto", "messages": [{"role": "user", "content": f"Explain step by step why {i} is {'even' if i % 2 == 0 else 'odd'}."}]}
                handle.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")
    return lines


def slow_run(tmp_path: Path, repo_root: Path, latency_ms: int) -> tuple[Path, dict[str, str]]:
    """The sample config with the fake provider answering in ``latency_ms``, written into
    ``tmp_path``, and an environment naming no Redis: `turnout run` starts its embedded one."""
    config = tmp_path / "turnout.yaml"
    config.write_text((repo_root / "examples/turnout.yaml").read_text().replace("latency_ms: 20", f"latency_ms: {latency_ms}"))
    return config, {k: v for k, v in os.environ.items() if k not in ("TURNOUT_REDIS_URL", "TURNOUT_FAKE_URL")}


def write_prompts(path: Path, prefix: str, lines: int, prompt: str) -> None:
    """``lines`` simple lines, custom_id ``<prefix><i>``, the prompt formatted with ``i``."""
    path.write_text("".join(json.dumps({"custom_id": f"{prefix}{i}", "prompt": prompt.format(i=i)}) + "\n" for i in range(lines)))


def test_run_keeps_the_ledger_on_a_thousand_lines_with_malformed_ones(tmp_path: Path, repo_root: Path) -> None:
    # Given a 1,000-line file with malformed lines, and no Redis configured
    batch = tmp_path / "batch.jsonl"
    total = write_batch(batch, 1000)
    env = {k: v for k, v in os.environ.items() if k not in ("TURNOUT_REDIS_URL", "TURNOUT_FAKE_URL")}

    # When `turnout run` runs it
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "run", str(batch), "-c", str(repo_root / "examples/turnout.yaml"), "-o", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Then it succeeds and prints the summary
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(rf"of {total} lines in [\d.]+s\. Cost .* all-frontier would", " ".join(result.stdout.split()))  # no resume: no "since"
    assert "can be tried again" not in result.stdout  # rejected lines would fail the same way: no replay is offered
    # And every input line is exactly one output or error line
    outputs = [json.loads(line) for line in (tmp_path / "out/output.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()]
    assert len(outputs) + len(errors) == total
    assert sorted(line["turnout"]["line"] for line in outputs + errors) == list(range(1, total + 1))
    ids = [line["custom_id"] for line in outputs]
    assert len(ids) == len(set(ids))
    assert errors and all(line["error"]["code"] for line in errors)
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["output_lines"] == len(outputs) and report["error_lines"] == len(errors)
    # And the answers finished while it ran were spilled out of Redis, each once, all collected
    spilled = [json.loads(line)["custom_id"] for spill in (tmp_path / ".turnout/spill").glob("*.jsonl")
               for line in spill.read_text().splitlines()]  # fmt: skip
    assert spilled and len(spilled) == len(set(spilled)) and set(spilled) <= set(ids)
    # And the embedded Redis it started is stopped again
    assert not _answers(EmbeddedRedis(tmp_path / ".turnout").url)
    # And it says the batch stays in .turnout and how to free it; doing so keeps the output
    # and frees the spill file
    said = " ".join(result.stdout.split())
    found = re.search(r"The batch stays in \.turnout, its answers [\d.]+ MB in [^,\s]+, for a resume.*`(turnout collect (\S+) -o out --delete)`", said)
    assert found, said
    freed = subprocess.run([sys.executable, "-m", "workers.cli", *found.group(1).split()[1:], "-c", str(repo_root / "examples/turnout.yaml")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert freed.returncode == 0, freed.stderr[-2000:]
    assert len((tmp_path / "out/output.jsonl").read_text().splitlines()) == len(outputs)
    assert not list((tmp_path / ".turnout/spill").glob(f"{found.group(2)}*"))


def test_sigterm_stops_run_as_ctrl_c_does_and_a_rerun_finishes_the_batch(tmp_path: Path, repo_root: Path) -> None:
    # Given a run of a slow batch (the fake provider answers in 2 s: stopping, a pool waits
    # for its calls in flight)
    batch = tmp_path / "batch.jsonl"
    write_prompts(batch, "r", 300, "What is {i} + {i}?")
    config, env = slow_run(tmp_path, repo_root, latency_ms=2000)
    command = [sys.executable, "-m", "workers.cli", "run", str(batch), "-c", str(config), "-o", "out"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    redis_url = EmbeddedRedis(tmp_path / ".turnout").url
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / ".turnout/logs/pool-cheap.log").exists():
        time.sleep(0.2)
    time.sleep(3)  # some lines answered, most not

    # When it gets SIGTERM (kill, systemd, docker stop), and an impatient Ctrl-C while it stops
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=45)

    # Then it stops as on Ctrl-C: its children and Redis stopped, the resume hint printed
    assert process.returncode == 130, output[-2000:]
    assert "run the same command again to resume" in " ".join(output.split())
    assert "stopping now" in output  # the Ctrl-C cut the wait for the calls out
    assert not _answers(redis_url)
    # And the pools handed their tasks back before Redis stopped: none is left unacknowledged,
    # for a rerun to wait the visibility timeout for
    embedded = EmbeddedRedis(tmp_path / ".turnout")
    try:
        stopped = connect(embedded.start())
        unacked = stopped.hlen(UNACKED)
        ledger = Ledger(stopped)
        done_before = [status.done for b in ledger.batches() if (status := ledger.status(b)) is not None]
    finally:
        embedded.stop()
    assert unacked == 0
    # And the same command again finishes the batch, every line once (the provider answering
    # at its usual speed now: the rerun's pace is not what this test is about)
    config.write_text(config.read_text().replace("latency_ms: 2000", "latency_ms: 20"))
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    outputs = [json.loads(line)["custom_id"] for line in (tmp_path / "out/output.jsonl").read_text().splitlines()]
    assert sorted(outputs) == sorted(f"r{i}" for i in range(300))
    # And its summary tells this run's time from the batch's, and what the first run had done
    said = " ".join(rerun.stdout.split())
    assert re.search(rf"of 300 lines in \S+ since the batch began \(this run \S+, {done_before[0]} lines done before it\)", said), said
    # And once the run has stopped its Redis, `status` from the same directory still shows the
    # batch (from the embedded Redis's files, started for the command and stopped after it)
    shown = subprocess.run(
        [sys.executable, "-m", "workers.cli", "status", "--json", "-c", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    batches = json.loads(shown.stdout)["batches"]
    assert [(b["submitted"], b["done"], b["complete"]) for b in batches] == [(300, 300, True)]
    assert not _answers(redis_url)


def test_a_second_run_in_the_same_directory_is_refused_and_the_first_finishes(tmp_path: Path, repo_root: Path) -> None:
    # Given a run of a slow batch under way in a directory
    first_file, second_file = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_prompts(first_file, "a", 96, "What is {i}?")  # three micro-batches of 3 s calls in turn
    second_file.write_text(json.dumps({"custom_id": "b0", "prompt": "What is 0?"}) + "\n")
    config, env = slow_run(tmp_path, repo_root, latency_ms=3000)
    run = [sys.executable, "-m", "workers.cli", "run", "-c", str(config)]
    first = subprocess.Popen([*run, str(first_file), "-o", "out-a"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / ".turnout/logs/pool-cheap.log").exists():
        time.sleep(0.2)

    # When a second run starts there, and another with -o naming a file
    second = subprocess.run([*run, str(second_file), "-o", "out-b"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    (tmp_path / "a-file").write_text("")
    third = subprocess.run([*run, str(second_file), "-o", "a-file"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    # Then each is refused with one line saying why and what to do, and the first run finishes
    assert second.returncode == 2 and "is using .turnout" in second.stderr and "TURNOUT_STATE_DIR" in second.stderr
    assert third.returncode == 2 and "a-file is a file" in third.stderr
    assert len([line for line in (second.stderr + third.stderr).splitlines() if line.strip()]) == 2
    output, _ = first.communicate(timeout=240)
    assert first.returncode == 0, output[-2000:]
    assert len((tmp_path / "out-a/output.jsonl").read_text().splitlines()) == 96


def test_an_interrupted_fresh_run_says_how_to_resume_it_and_the_next_run_names_it(tmp_path: Path, repo_root: Path) -> None:
    # Given a `--fresh` run of a slow batch that stops short (its --timeout)
    slow_file, other_file = tmp_path / "slow.jsonl", tmp_path / "other.jsonl"
    write_prompts(slow_file, "s", 100, "What is {i}?")
    other_file.write_text(json.dumps({"custom_id": "o0", "prompt": "What is 0?"}) + "\n")
    config, env = slow_run(tmp_path, repo_root, latency_ms=1500)
    run = [sys.executable, "-m", "workers.cli", "run", "-c", str(config), "-o", "out"]
    first = subprocess.run([*run, str(slow_file), "--fresh", "--timeout", "3"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    # Then its error names the batch id to resume it by: the same command would start another batch
    assert first.returncode == 2, first.stderr[-2000:]
    said = " ".join(first.stderr.split())
    batch = said.split("batch ")[1].split()[0]
    assert f"run the same command with --batch-id {batch} in place of --fresh to resume it" in said

    # And when another file runs next (the provider at its usual speed), its run names the
    # unfinished batch, whose jobs it answers too
    config.write_text(config.read_text().replace("latency_ms: 1500", "latency_ms: 20"))
    second = subprocess.run([*run, str(other_file)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    named = " ".join(second.stderr.split())
    assert f"batch {batch} (slow.jsonl) is unfinished" in named
    assert f"turnout run {slow_file} --batch-id {batch}" in named and f"turnout delete {batch} --force" in named

    # And the resume it names finishes that batch, naming no other
    resumed = subprocess.run([*run, str(slow_file), "--batch-id", batch], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "unfinished" not in resumed.stderr
    assert sorted(json.loads(line)["custom_id"] for line in (tmp_path / "out/output.jsonl").read_text().splitlines()) == sorted(f"s{i}" for i in range(100))


def test_a_pool_that_dies_mid_run_has_its_tasks_handed_back_without_waiting_the_visibility_timeout(tmp_path: Path, repo_root: Path) -> None:
    # Given a run of a slow batch (calls take 2 s; the visibility timeout is 360 s)
    batch = tmp_path / "batch.jsonl"
    write_prompts(batch, "r", 160, "What is {i} + {i}?")
    config, env = slow_run(tmp_path, repo_root, latency_ms=2000)
    command = [sys.executable, "-m", "workers.cli", "run", str(batch), "-c", str(config), "-o", "out"]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / ".turnout/logs/pool-cheap.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists() and "ready" in log.read_text(errors="replace")):
        time.sleep(0.2)
    time.sleep(3)  # the cheap pool holds a micro-batch, its calls out

    # When the cheap pool's worker is killed outright (the OOM killer), its pool process with it
    os.killpg(int((tmp_path / ".turnout/logs/pool-cheap.pgid").read_text()), signal.SIGKILL)
    try:
        output, _ = process.communicate(timeout=170)
    finally:
        process.kill()  # on a failure, not left running (it stops its children as it dies)

    # Then the run restarts it and puts back what it held, and finishes long before the
    # visibility timeout would have returned those tasks, every line answered once
    assert process.returncode == 0, output[-2000:]
    said = " ".join(output.split())
    assert "pool-cheap died and was restarted" in said and "tasks the dead cheap pool held were put back on its queues" in said
    assert time.monotonic() - started < 180
    outputs = [json.loads(line)["custom_id"] for line in (tmp_path / "out/output.jsonl").read_text().splitlines()]
    assert sorted(outputs) == sorted(f"r{i}" for i in range(160))


def test_a_run_capped_by_max_cost_says_what_was_not_sent_and_a_rerun_under_a_higher_cap_answers_it(tmp_path: Path, repo_root: Path) -> None:
    # Given a batch run with a cap its first answers reach
    batch = tmp_path / "batch.jsonl"
    write_prompts(batch, "c", 120, "What is {i} + {i}?")
    config, env = slow_run(tmp_path, repo_root, latency_ms=20)
    run = [sys.executable, "-m", "workers.cli", "run", str(batch), "-c", str(config), "-o", "out"]
    capped = subprocess.run([*run, "--max-cost", "1e-9"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)

    # Then it ends with the lines it did not send as budget_spent errors, and says how to answer them
    assert capped.returncode == 0, capped.stderr[-2000:]
    errors = [json.loads(line) for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()]
    answered = (tmp_path / "out/output.jsonl").read_text().splitlines()
    assert errors and {line["error"]["code"] for line in errors} == {"budget_spent"} and len(errors) + len(answered) == 120
    said = " ".join(capped.stdout.split())
    batch_id = re.search(r"batch (run-\w+)", said).group(1)  # type: ignore[union-attr]
    assert (f"{len(errors)} lines were not sent: the batch reached its $0.0000 cap (--max-cost). To answer them: "
            f"`turnout dlq replay --batch {batch_id}`, then run the same command again, with a higher --max-cost") in said

    # When its dead letters are replayed and the same command runs again under a higher cap
    replayed = subprocess.run([sys.executable, "-m", "workers.cli", "dlq", "replay", "--batch", batch_id, "-c", str(config)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    rerun = subprocess.run([*run, "--max-cost", "10"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)

    # Then every line is answered, once
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    outputs = [json.loads(line)["custom_id"] for line in (tmp_path / "out/output.jsonl").read_text().splitlines()]
    assert sorted(outputs) == sorted(f"c{i}" for i in range(120))
    assert (tmp_path / "out/errors.jsonl").read_text() == ""
