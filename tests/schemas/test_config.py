"""A broken config fails at start-up with the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import load_config, resolve_secret
from schemas.errors import ConfigError

GOOD = """
tiers:
  - name: cheap
    deployments: [{model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}]
  - name: frontier
    min_score: 0.6
    deployments: [{model: openai/gpt-4o}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "turnout.yaml"
    path.write_text(text)
    return path


def test_the_example_config_loads(repo_root: Path) -> None:
    config = load_config(repo_root / "examples" / "turnout.yaml")
    assert [t.name for t in config.tiers] == ["cheap", "frontier"]


def test_environment_overrides_top_level_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_HIGH_WATER", "123")
    monkeypatch.setenv("TURNOUT_REDIS_URL", "redis://example:6379/0")
    config = load_config(write(tmp_path, GOOD))
    assert config.high_water == 123 and config.redis_url == "redis://example:6379/0"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tiers: [", "not valid YAML"),
        ("- just a list", "mapping"),
        ("tiers: []", "tiers"),
        (GOOD.replace("os.environ/OPENAI_API_KEY", "sk-live-123"), "api_key"),
        (GOOD.replace("min_score: 0.6", "min_score: 1.6"), "min_score"),
        (GOOD.replace("name: frontier", "name: cheap"), "unique"),
        (GOOD + "surprise: 1\n", "surprise"),
        ("visibility_timeout_s: 30\n" + GOOD, "visibility_timeout_s 30 is too short"),
        (GOOD.replace("  - name: frontier", "    policy: cascade\n    scorer: {kind: format, cost_aware: true}\n  - name: frontier"), "cost_aware"),
        (GOOD.replace("min_score: 0.6", "min_score: 0.6\n    min_score_by_kind: {chat: 0.3}"), "min_score_by_kind"),
        (GOOD.replace("min_score: 0.6", "min_score: 0.6\n    min_score_by_kind: {math: 1.5}"), "[0, 1]"),
        (GOOD.replace("min_score: 0.6", "min_score: 0.6\n    min_score_by_kind: {general: 0.0}"), "general prompts' threshold"),
        (GOOD.replace("  - name: frontier", "    min_score_by_kind: {math: 0.1}\n  - name: frontier"), "first (cheapest) tier"),
        (GOOD.replace("  - name: frontier", "    policy: cascade\n    scorer: {kind: verifer}\n  - name: frontier"), "'format+verifier'"),
        (GOOD.replace("name: frontier", "name: classify"), "may not be named classify"),
        ("classifier: {kind: heuristic, model_path: mine.json}\n" + GOOD, "kind heuristic reads no model, yet model_path is 'mine.json'"),
        (GOOD.replace("min_score: 0.6", ""), "(top level): min_score must rise from tier to tier, got [0.0, 0.0] (frontier gives none"),
    ],
)
def test_a_broken_config_names_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert fragment in str(caught.value)


def test_a_tier_may_set_a_threshold_per_kind_of_prompt(tmp_path: Path) -> None:
    # Given a frontier tier with its own thresholds for multiple-choice and open-ended prompts
    text = GOOD.replace("min_score: 0.6", "min_score: 0.6\n    min_score_by_kind: {choice: 0.7, general: 0.3}")
    frontier = load_config(write(tmp_path, text)).tiers[1]
    # Then those kinds use them, and math prompts and kind-less scores use min_score
    assert [frontier.threshold(k) for k in ("choice", "general", "math", None)] == [0.7, 0.3, 0.6, 0.6]


def test_a_missing_config_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_secrets_resolve_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "k1")
    (tmp_path / "key").write_text("k2\n")
    assert resolve_secret("os.environ/MY_KEY") == "k1"
    assert resolve_secret(f"file:{tmp_path / 'key'}") == "k2"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ConfigError, match="MY_KEY"):
        resolve_secret("os.environ/MY_KEY")


def test_a_visibility_timeout_longer_than_a_tiers_calls_is_accepted(tmp_path: Path) -> None:
    # the frontier tier's one deployment may take 60 s (the default timeout_s)
    config = load_config(write(tmp_path, "visibility_timeout_s: 70\n" + GOOD))
    assert config.visibility_timeout_s == 70


def test_a_deployment_without_prices_takes_litellms_and_one_litellm_lacks_is_named(tmp_path: Path) -> None:
    # Given tiers whose deployments are priced by the config, by LiteLLM's cost map, and by neither
    config = load_config(write(tmp_path, """
tiers:
  - name: cheap
    deployments:
      - {model: openai/gpt-4o-mini}
      - {model: openai/gpt-4o-mini, name: own-price, input_cost_per_million: 1, output_cost_per_million: 2}
  - name: frontier
    min_score: 0.6
    deployments: [{model: openai/gpt-4o, input_cost_per_million: 3}, {model: openai/our-own-model, name: selfhosted}]
"""))
    cheap, own, frontier, selfhosted = [d for tier in config.tiers for d in tier.deployments]

    # Then each price comes from the config where it is given, else from LiteLLM's cost map
    assert cheap.prices == (0.15, 0.6) and cheap.priced
    assert own.prices == (1.0, 2.0)
    assert frontier.prices == (3.0, 10.0)  # LiteLLM's output price for gpt-4o
    assert cheap.cost(1_000_000, 500_000) == pytest.approx(0.45)
    # And a model priced by neither costs nothing, and is named, with the fix
    assert selfhosted.prices == (0.0, 0.0) and not selfhosted.priced
    note = config.unpriced_note()
    assert note is not None and "frontier/selfhosted" in note and "input_cost_per_million" in note
    assert "cheap/" not in note
