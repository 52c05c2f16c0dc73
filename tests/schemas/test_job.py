"""Input lines become jobs, or errors that say what is wrong."""

from __future__ import annotations

import json

import pytest

from schemas.config import Limits
from schemas.errors import InputLineError
from schemas.job import _job_from, _simple_job, parse_line, parse_wire

LIMITS = Limits(max_line_bytes=500, max_prompt_chars=100)


def parse(data: object) -> object:
    return parse_line(json.dumps(data), 1, "b", LIMITS)


def test_a_simple_line_becomes_a_one_message_job() -> None:
    job = parse({"custom_id": "a", "prompt": "hi there", "max_tokens": 5, "metadata": {"k": 1}})
    assert job.messages == [{"role": "user", "content": "hi there"}]  # type: ignore[attr-defined]
    assert job.max_tokens == 5 and job.metadata == {"k": 1}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [
        {"custom_id": "a", "prompt": "hi there", "model": "tier:cheap", "max_tokens": 5, "metadata": {"k": [1]}},
        {"custom_id": "a", "prompt": "é ✓ \u2028", "temperature": 0.2, "system": "Be terse."},
        {"custom_id": "a", "prompt": "x", "max_tokens": 5.0},
    ],
)
def test_the_fast_and_the_full_parse_of_a_simple_line_agree(data: dict[str, object]) -> None:
    # the fast path reads bytes in one pydantic pass; the full one json.loads, then validates
    raw = json.dumps(data).encode()
    fast = _simple_job(raw, 3, "b")
    assert fast is not None, "the common line takes the fast path"
    assert fast == _job_from(json.loads(raw), 3, "b") == parse_line(raw, 3, "b", LIMITS)


def test_a_simple_line_passes_sampling_fields_and_a_system_message_and_refuses_any_other_field() -> None:
    # Given simple lines with a temperature and a system message, and one with a field of its own
    job = parse({"custom_id": "a", "prompt": "hi", "temperature": 0.2, "seed": 7, "system": "Be terse."})
    with pytest.raises(InputLineError) as refused:
        parse({"custom_id": "b", "prompt": "hi", "temprature": 0.2})

    # Then the sampling fields go to the provider and the system message comes first
    assert job.params == {"temperature": 0.2, "seed": 7}  # type: ignore[attr-defined]
    assert job.messages == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]  # type: ignore[attr-defined]
    # And an unknown field is one clear error for its line, not silently dropped
    assert refused.value.code == "unknown_field" and refused.value.custom_id == "b"
    assert "'temprature' is not a field of a simple line" in str(refused.value) and "metadata" in str(refused.value)


@pytest.mark.parametrize(
    "raw",
    [
        '{"custom_id": "a", "prompt": "body"}',  # "body" in the text: the full path, to be sure
        '{"custom_id": "a", "prompt": "x", "\\u0062ody": {"messages": [{"role": "user", "content": "y"}]}}',
        '{"custom_id": 7, "prompt": "x"}',
    ],
)
def test_lines_the_fast_path_cannot_be_sure_of_go_down_the_full_one(raw: str) -> None:
    assert _simple_job(raw.encode(), 3, "b") is None


@pytest.mark.parametrize(
    "data",
    [
        {"custom_id": "a", "prompt": "hi there"},
        {"custom_id": "a", "prompt": "hi", "model": "tier:cheap", "max_tokens": 5, "metadata": {"k": [1, None]}},
        {"custom_id": "a", "prompt": "é ✓", "temperature": 1, "system": "s"},
        {"custom_id": "a", "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2}},
    ],
)
def test_a_line_in_queue_form_is_the_job_as_it_would_be_dumped(data: dict[str, object]) -> None:
    raw = json.dumps(data).encode()
    wire, job = parse_wire(raw, 4, "b", LIMITS), parse_line(raw, 4, "b", LIMITS)
    assert wire.body == job.model_dump(mode="json", exclude_defaults=True)
    assert (wire.custom_id, wire.line, wire.model) == (job.custom_id, job.line, job.model)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (json.dumps({"custom_id": "a", "prompt": "   "}), "empty_prompt"),
        (json.dumps({"custom_id": "a", "prompt": "x" * 101}), "prompt_too_long"),
        (json.dumps({"custom_id": "a", "prompt": "x" * 600}), "line_too_long"),
        ("{not json", "invalid_json"),
    ],
)
def test_the_queue_form_refuses_what_parse_line_refuses(raw: str, code: str) -> None:
    with pytest.raises(InputLineError) as caught:
        parse_wire(raw, 7, "b", LIMITS)
    assert caught.value.code == code


def test_an_openai_batch_line_keeps_its_messages_model_and_extra_fields() -> None:
    body = {"model": "tier:cheap", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2}
    job = parse({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body})
    assert job.model == "tier:cheap" and job.params == {"temperature": 0.2}  # type: ignore[attr-defined]


def test_content_parts_count_as_prompt_text() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "part one"}]}]}
    job = parse({"custom_id": "a", "body": body})
    assert job.prompt_text == "part one"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"custom_id": "a"}), "missing_prompt"),
        (json.dumps({"prompt": "no id"}), "invalid_line"),
        (json.dumps({"custom_id": "a", "body": {"messages": []}}), "empty_messages"),
        (json.dumps({"custom_id": "a", "prompt": "   "}), "empty_prompt"),
        (json.dumps({"custom_id": "a", "prompt": "x" * 101}), "prompt_too_long"),
        (json.dumps({"custom_id": "a", "prompt": "x" * 600}), "line_too_long"),
        (json.dumps({"custom_id": "a", "url": "/v1/embeddings", "body": {"messages": [{"role": "user", "content": "x"}]}}), "unsupported_url"),
        (json.dumps({"custom_id": "a", "prompt": "x", "max_tokens": -1}), "invalid_line"),
    ],
)
def test_a_bad_line_raises_an_error_with_a_stable_code(raw: str, code: str) -> None:
    with pytest.raises(InputLineError) as caught:
        parse_line(raw, 7, "b", LIMITS)
    assert caught.value.code == code
    assert caught.value.message  # a sentence a person can act on


def test_size_errors_name_the_limit_and_the_actual_size() -> None:
    with pytest.raises(InputLineError) as caught:
        parse({"custom_id": "a", "prompt": "x" * 150})
    assert "150" in caught.value.message and "100" in caught.value.message
    assert caught.value.custom_id == "a"


@pytest.mark.parametrize("parse_any", [parse_line, parse_wire])
def test_half_a_surrogate_pair_is_refused_and_a_whole_one_or_an_escaped_backslash_is_not(parse_any: object) -> None:
    def code(raw: str) -> str | None:
        try:
            parse_any(raw.encode(), 3, "b", Limits())  # type: ignore[operator]
        except InputLineError as exc:
            return f"{exc.code} {exc.custom_id}"
        return None

    assert code('{"custom_id": "a", "prompt": "broken \\ud83d here"}') == "invalid_unicode a"
    assert code('{"custom_id": "a", "body": {"messages": [{"role": "system", "content": "\\uDC00"}, '
                '{"role": "user", "content": "hi"}]}}') == "invalid_unicode a"
    assert code('{"custom_id": "\\ud83d", "prompt": "x"}') == "invalid_unicode None"  # the id itself cannot be written
    assert code('{"custom_id": "a", "prompt": "a low half alone \\ude00"}') == "invalid_unicode a"
    assert code('{"custom_id": "a", "prompt": "an emoji \\ud83d\\ude00"}') is None
    assert code('{"custom_id": "a", "prompt": "the text \\\\ud83d, escaped"}') is None


def test_half_a_surrogate_pair_written_raw_is_refused_too() -> None:
    # As Python's "surrogatepass" or a CESU-8 writer puts it: bytes ED A0 BD, not an escape
    raw = '{"custom_id": "a", "prompt": "raw \ud83d here"}'.encode("utf-8", "surrogatepass")
    for parse_any in (parse_line, parse_wire):
        with pytest.raises(InputLineError) as caught:
            parse_any(raw, 3, "b", Limits())
        assert (caught.value.code, caught.value.custom_id) == ("invalid_unicode", "a")
