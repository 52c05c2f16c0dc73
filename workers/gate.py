"""The gate in front of each deployment: cooldowns and rate limits shared by every worker.

One Lua call per attempt asks Redis whether a deployment may take a call now: it is not
cooling down after failures, and its requests and tokens in the last minute stay under
the config's rpm/tpm. Because the state is in Redis, N worker machines together stay
under a provider's limit, and a 429 seen by one worker slows the deployment for all.

The minute is a sliding window estimated from two fixed windows (the previous one
weighted by how much of it still overlaps), which is accurate to a few percent and needs
two counters per deployment instead of a log of every call.

A deployment that cooled down for its failures is on probation once the cooldown ends (a
circuit breaker's half-open state): it takes one call at a time, the probe, and the others
pass it over as if it still cooled down, until a probe is answered. A failed probe cools it
down again. (A Retry-After's cooldown sets no probation: the provider said when to return.) So a
provider that hangs, or keeps failing, gets one call per cooldown instead of every call
made in the moment after each cooldown (a walkthrough saw a micro-batch's 13 to 23 calls
sent to a hung provider each time, every process of the tier stalled for the calls'
timeout).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from workers.ledger import PREFIX

log = logging.getLogger("turnout.gate")

# KEYS: cooldown, requests window now, requests window before, tokens now, tokens before, calls now,
#       probation, probe
# ARGV: rpm (0 = none), tpm (0 = none), tokens, ms into the current window, ms a probe may take,
#       ms to wait at most while another's probe is out
# Returns 0 when admitted (and counted), -1 when admitted as a probation's probe, else the ms to
# wait; while cooling down, {ms, the cooldown's value}: "1", or the failure for good that cooled it;
# while another's probe is out on a probation that followed a failure for good, {ms, it, 0}: until
# the probe says the failure is mended, a call would fail as it did.
_ADMIT = """
local cooling = redis.call('PTTL', KEYS[1])
if cooling > 0 then return {cooling, redis.call('GET', KEYS[1])} end
local probe = 0
if redis.call('EXISTS', KEYS[7]) == 1 then
  if not redis.call('SET', KEYS[8], 1, 'NX', 'PX', ARGV[5]) then
    local wait = math.max(math.min(redis.call('PTTL', KEYS[8]), tonumber(ARGV[6])), 1)
    local why = redis.call('GET', KEYS[7])
    if why and why ~= '1' then return {wait, why, 0} end
    return wait
  end
  probe = -1
end
local rpm, tpm, tokens, into = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local weight = (60000 - into) / 60000
local function over(limit, now_key, before_key, amount)
  if limit <= 0 then return false end
  local used = tonumber(redis.call('GET', now_key) or '0') + weight * tonumber(redis.call('GET', before_key) or '0')
  return used + amount > limit
end
if over(rpm, KEYS[2], KEYS[3], 1) or over(tpm, KEYS[4], KEYS[5], tokens) then
  if probe < 0 then redis.call('DEL', KEYS[8]) end
  return 60000 - into
end
redis.call('INCR', KEYS[6]); redis.call('PEXPIRE', KEYS[6], 120000)
if rpm > 0 then redis.call('INCR', KEYS[2]); redis.call('PEXPIRE', KEYS[2], 120000) end
if tpm > 0 then redis.call('INCRBY', KEYS[4], tokens); redis.call('PEXPIRE', KEYS[4], 120000) end
return probe
"""

# KEYS: cooldown, failures this minute, calls this minute, probation, probe, last failure
# ARGV: retry-after ms (0 = none), cooldown ms, allowed fails, ms probation lasts unless a probe
#       is answered, 1 when the failed call was a probation's probe, the failure when it was for
#       good (a bad key, an account out of credit; '' otherwise): a cooldown it sets or lengthens
#       keeps it, and callers passing the deployment over meanwhile fail as it did; the failure
#       as status shows it (kept 10 minutes)
# Without a Retry-After, a deployment cools down only when it failed more than the allowed
# number of times AND on more than half its calls this minute: at 10% random errors and
# hundreds of calls a minute it stays in service; a failed probe, at once (and frees the
# probe). A cooldown is never shortened; one for failures puts the deployment on probation
# after it (none with cooldown_s 0). One for a Retry-After does not: the provider said when to
# come back, and a tier whose calls all waited on one probe would lose more than it saves.
_FAILED = """
local function cool(ms, probation)
  if ms > 0 and redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], ARGV[6] ~= '' and ARGV[6] or 1, 'PX', ms) end
  if probation and ms > 0 then redis.call('SET', KEYS[4], ARGV[6] ~= '' and ARGV[6] or 1, 'PX', ms + tonumber(ARGV[4])) end
end
local fails = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 120)
redis.call('SET', KEYS[6], ARGV[7], 'EX', 600)
if ARGV[5] == '1' then redis.call('DEL', KEYS[5]) end
if tonumber(ARGV[1]) > 0 then cool(tonumber(ARGV[1]), false) return 1 end
if ARGV[5] == '1' then cool(tonumber(ARGV[2]), true) return 1 end
local calls = tonumber(redis.call('GET', KEYS[3]) or '0')
if fails > tonumber(ARGV[3]) and fails * 2 > calls then cool(tonumber(ARGV[2]), true) return 1 end
return 0
"""

#: Failures (without Retry-After) a deployment may have in a minute before it cools down.
ALLOWED_FAILS_PER_MINUTE = 3
#: How long a deployment stays on probation after a cooldown if no probe is answered (none
#: is made while nothing needs it): then it takes calls freely again.
PROBATION_S = 600.0
#: How much of a failure's message the gate keeps for `turnout status`.
LAST_FAILURE_CHARS = 300
#: A probe's lease beyond its call's timeout: a probe a little late does not let a second out.
PROBE_MARGIN_S = 5.0
#: The longest a caller waits while another's probe is out before it may look again (the
#: probe is often answered in a second; its lease runs for the call's whole timeout).
PROBE_WAIT_S = 2.0


class Gate:
    """Admits calls to deployments, cluster-wide; made on the worker's event loop."""

    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self._admit = self.redis.register_script(_ADMIT)
        self._failed = self.redis.register_script(_FAILED)

    async def admit(self, deployment: str, rpm: int | None, tpm: int | None, tokens: int, probe_s: float) -> Admission:
        """Whether the deployment takes this call now (as its probation's probe, which may take
        ``probe_s``), else the seconds until it might."""
        now_ms = int(time.time() * 1000)
        window, into = divmod(now_ms, 60_000)
        base = f"{PREFIX}:gate:{deployment}"
        keys = [f"{base}:cooldown", f"{base}:rpm:{window}", f"{base}:rpm:{window - 1}"]
        keys += [f"{base}:tpm:{window}", f"{base}:tpm:{window - 1}", f"{base}:calls:{now_ms // 60_000}"]
        keys += [f"{base}:probation", f"{base}:probe"]
        lease_ms, most_ms = int((probe_s + PROBE_MARGIN_S) * 1000), int(PROBE_WAIT_S * 1000)
        result = await self._admit(keys=keys, args=[rpm or 0, tpm or 0, tokens, into, lease_ms, most_ms])
        if isinstance(result, list):  # cooling down (or on probation after failing for good): for what?
            return Admission(int(result[0]) / 1000, broken=_for_good(result[1]), cooling=len(result) == 2)
        return Admission(max(int(result), 0) / 1000, probe=int(result) < 0)

    async def failed(self, deployment: str, retry_after: float | None, cooldown_s: float, probe: bool = False,
                     for_good: FailedForGood | None = None, what: str = "") -> None:
        """Note a failed call: a Retry-After cools the deployment down at once, for every worker;
        otherwise more than ALLOWED_FAILS_PER_MINUTE failures do, for ``cooldown_s``, or a
        failed ``probe`` (its probation's one call). A failure ``for_good`` (a bad key) that
        cools the deployment down is kept with the cooldown: jobs passing it over meanwhile
        fail as it did, instead of waiting to call it again."""
        base = f"{PREFIX}:gate:{deployment}"
        window = int(time.time()) // 60
        await self._failed(
            keys=[f"{base}:cooldown", f"{base}:fails:{window}", f"{base}:calls:{window}", f"{base}:probation", f"{base}:probe",
                  f"{base}:last-failure"],
            args=[int((retry_after or 0) * 1000), int(cooldown_s * 1000), ALLOWED_FAILS_PER_MINUTE, int(PROBATION_S * 1000),
                  "1" if probe else "0", json.dumps(for_good.__dict__) if for_good else "",
                  f"{time.strftime('%H:%M:%S', time.gmtime())}Z {what[:LAST_FAILURE_CHARS]}"],
        )

    async def answered(self, deployment: str) -> None:
        """A probe was answered (or refused the request itself, which is no fault of the
        deployment's): its probation ends, and it takes calls freely again. A Redis error is
        logged, not raised: the answer in hand matters more, and the probe's lease lapses."""
        base = f"{PREFIX}:gate:{deployment}"
        try:
            await self.redis.delete(f"{base}:probation", f"{base}:probe")
        except redis.RedisError as exc:
            log.warning("could not end %s's probation: %s", deployment, exc)


def health(client: redis.Redis, deployment: str) -> dict[str, Any]:
    """What the gate knows of a deployment now, for `turnout status` (a synchronous client):
    its state (ok, cooling down, on probation), and its calls and failures this minute."""
    base = f"{PREFIX}:gate:{deployment}"
    minute = int(time.time()) // 60
    pipe = client.pipeline(transaction=False)
    pipe.pttl(f"{base}:cooldown").exists(f"{base}:probation").exists(f"{base}:probe")
    pipe.get(f"{base}:calls:{minute}").get(f"{base}:fails:{minute}").get(f"{base}:cooldown").get(f"{base}:last-failure")
    cooling_ms, probation, probe, calls, fails, why, last = pipe.execute()
    broken = _for_good(why)
    if cooling_ms and cooling_ms > 0:
        state = f"cooling down {cooling_ms / 1000:.0f}s" + (f" ({broken.code})" if broken else "")
    elif probation:
        state = "on probation, probe out" if probe else "on probation"
    else:
        state = "ok"
    return {"deployment": deployment, "state": state, "calls_this_minute": int(calls or 0), "failures_this_minute": int(fails or 0),
            "last_failure": last.decode(errors="replace") if last else None,
            "for_good": broken.code if broken and cooling_ms and cooling_ms > 0 else None}


@dataclass(frozen=True)
class FailedForGood:
    """A deployment's failure that no retry mends (a bad key, an account out of credit)."""

    code: str
    message: str
    status: int | None


def _for_good(value: Any) -> FailedForGood | None:
    """The failure for good a cooldown key holds, if it holds one (else it is "1")."""
    if not value or value in (b"1", "1"):
        return None
    try:
        return FailedForGood(**json.loads(value))
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Admission:
    wait: float  # 0: admitted; else seconds until the deployment might take a call
    probe: bool = False  # admitted as its probation's one call at a time
    broken: FailedForGood | None = None  # cooling down after this failure for good (or on probation after it, another's probe out)
    cooling: bool = False  # the wait is a cooldown (else its rate limit, or another's probe)
