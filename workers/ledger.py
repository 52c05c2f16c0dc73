"""The ledger: a batch's state in Redis, recorded so that every input line ends as exactly
one output or error line, whatever runs twice.

Keys per batch (``turnout:batch:<id>:…``):
    meta    hash: submitted, done, failed, sealed, cost, frontier_cost, per-tier counters,
            max_cost (the spending cap, when the batch has one);
            spill_path/spill_size/spill_cursor/spilled when output lines are spilled to a file
    ids:<n> hashes: custom_id → input line (duplicate detection, resumable submit); the line
            gets a trailing "!" once its answer is spilled, which marks the job done. The
            ids are spread over ``id_buckets`` (in meta) small hashes by a digest of the id,
            sized at ~64 ids each from the expected number of lines, so Redis keeps each as
            a compact listpack: ~25 bytes an id instead of ~80 in one big hash. A batch begun
            by an older version has no ``id_buckets`` and keeps one hash, ``ids``.
    out     hash: custom_id → output line (JSON), first write wins; a spilled line leaves it
            (the "!" in ids keeps a re-delivered job skipped; a line recorded without an id
            claim, as some tests do, keeps an empty value instead)
    err     hash: key → error line (JSON); a later success for the same key removes it
    events  stream: one entry per recorded line, for ``collect --follow``
    deleted a tombstone left by ``delete`` for a week: a late re-delivery of one of the
            batch's jobs is skipped instead of running again into a half-made batch

Recording is a Lua script, so "first write wins" and the counters move together
atomically even when a re-delivered job races its first run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from schemas.errors import TurnoutError
from schemas.result import BatchStatus, ResultLine, TierReport, json_text

PREFIX = "turnout"
BATCHES = f"{PREFIX}:batches"

#: Ids per ``ids`` bucket a batch is sized for. Redis keeps a hash of at most 128 entries of
#: at most 64 bytes as a listpack (its defaults); at 64 on average, the fullest of 65,536
#: buckets stays near 100.
IDS_PER_BUCKET = 64
#: Buckets at most (a batch of ~16M lines); past that, buckets grow into plain hashes.
MAX_ID_BUCKETS = 1 << 18
#: Buckets for a batch of unknown size (a stream): ~260,000 lines at 64 a bucket.
UNSIZED_ID_BUCKETS = 4096

# Prepended to the scripts that touch a batch's ids: the hash an id lives in. Scripts name
# the bucket keys themselves (the producer and the workers need not know the bucket count),
# which Redis allows outside cluster mode; turnout's keys are not cluster-ready anyway.
_IDS = """
local function id_buckets(meta)
  return tonumber(redis.call('HGET', meta, 'id_buckets') or '0')
end
local function ids_key(ids, n, custom_id)
  if n == 0 then return ids end
  return ids .. ':' .. (tonumber(string.sub(redis.sha1hex(custom_id), 1, 8), 16) % n)
end
local function owner(meta, ids, custom_id)
  return redis.call('HGET', ids_key(ids, id_buckets(meta), custom_id), custom_id)
end
"""

# KEYS: out, err, meta, events, deleted, ids   ARGV: key, line json, cost, tier, frontier cost
_RECORD_OK = _IDS + """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
if string.sub(owner(KEYS[3], KEYS[6], ARGV[1]) or '', -1) == '!' then return 0 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'failed', -1)
else
  redis.call('HINCRBY', KEYS[3], 'done', 1)
end
redis.call('HINCRBY', KEYS[3], 'tier:' .. ARGV[4] .. ':jobs', 1)
redis.call('HINCRBYFLOAT', KEYS[3], 'tier:' .. ARGV[4] .. ':cost', ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[3], 'cost', ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[3], 'frontier_cost', ARGV[5])
redis.call('HSET', KEYS[3], 'updated_at', ARGV[6])
redis.call('XADD', KEYS[4], '*', 'k', ARGV[1], 'ok', '1')
return 1
"""

# KEYS: out, err, meta, events, deleted, ids   ARGV: key, line json, tier, now
_RECORD_ERROR = _IDS + """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if string.sub(owner(KEYS[3], KEYS[6], ARGV[1]) or '', -1) == '!' then return 0 end
if redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 2 end
redis.call('HINCRBY', KEYS[3], 'done', 1)
redis.call('HINCRBY', KEYS[3], 'failed', 1)
redis.call('HINCRBY', KEYS[3], 'tier:' .. ARGV[3] .. ':failed', 1)
redis.call('HSET', KEYS[3], 'updated_at', ARGV[4])
redis.call('XADD', KEYS[4], '*', 'k', ARGV[1], 'ok', '0')
return 1
"""

# KEYS: err, meta, deleted   ARGV: key, tier   Takes back an error line (its job is sent again):
# 1 when there was one, and the batch counts the line as not done until it is recorded anew.
_REOPEN = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'done', -1)
redis.call('HINCRBY', KEYS[2], 'failed', -1)
redis.call('HINCRBY', KEYS[2], 'tier:' .. ARGV[2] .. ':failed', -1)
return 1
"""

# KEYS: ids, meta   ARGV: JSON array of custom_ids, JSON array of their lines (two arguments,
# not two per job: redis-py packs each argument in Python, which cost more than the script).
# Returns (position, owning line) pairs, flat, for the ids an earlier line owns: usually none,
# so the reply stays small however big the chunk.
_CLAIM = _IDS + """
local ids, lines = cjson.decode(ARGV[1]), cjson.decode(ARGV[2])
local n = id_buckets(KEYS[2])
local taken = {}
for i = 1, #ids do
  local line, key = lines[i], ids_key(KEYS[1], n, ids[i])
  if redis.call('HSETNX', key, ids[i], line) == 0 then
    local owner = redis.call('HGET', key, ids[i])
    if owner ~= line and owner ~= line .. '!' then  -- '!': its answer was spilled
      taken[#taken + 1] = i
      taken[#taken + 1] = (string.gsub(owner, '!$', ''))
    end
  end
end
return taken
"""

# KEYS: out, meta, lock, ids   ARGV: token, size before, cursor, size after, path, custom_id...
# Drops the spilled lines, marking their ids done ("!"; an empty value where no id was
# claimed); -1 (and nothing done) unless this spiller still holds the lease, the file's
# committed size is still the one it started from, and the batch still exists.
_SPILL_COMMIT = _IDS + """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if (redis.call('HGET', KEYS[2], 'spill_size') or '0') ~= ARGV[2] then return -1 end
local n, buckets = 0, id_buckets(KEYS[2])
for i = 6, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value and string.len(value) > 0 then
    local key = ids_key(KEYS[4], buckets, ARGV[i])
    local owner = redis.call('HGET', key, ARGV[i])
    if owner then
      redis.call('HDEL', KEYS[1], ARGV[i])
      if string.sub(owner, -1) ~= '!' then redis.call('HSET', key, ARGV[i], owner .. '!') end
    else
      redis.call('HSET', KEYS[1], ARGV[i], "")
    end
    n = n + 1
  end
end
redis.call('HSET', KEYS[2], 'spill_cursor', ARGV[3], 'spill_size', ARGV[4], 'spill_path', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'spilled', n)
return n
"""

# KEYS: meta, ids   ARGV: bucket count   Gives a new batch its ids buckets; one an older version
# began (ids claimed in its one hash, or lines enqueued) keeps that hash.
_LAYOUT = """
if redis.call('HEXISTS', KEYS[1], 'id_buckets') == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'enqueued_line') or '0') > 0 then return 0 end
redis.call('HSET', KEYS[1], 'id_buckets', ARGV[1])
return 1
"""

# KEYS: meta, ids   ARGV: custom_id...   Each id's entry (its line, "!" once spilled), or nil.
_OWNERS = _IDS + """
local n, found = id_buckets(KEYS[1]), {}
for i = 1, #ARGV do
  found[i] = redis.call('HGET', ids_key(KEYS[2], n, ARGV[i]), ARGV[i])
end
return found
"""

# KEYS: lock   ARGV: token, ttl ms (0: release)   1 when the caller holds the lease afterwards.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then
  if holder then redis.call('DEL', KEYS[1]) end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: How long a producer's submit lease outlives its last renewal (it renews with every chunk).
SUBMIT_LEASE_MS = 30_000

#: How long a deleted batch's tombstone keeps late re-deliveries of its jobs from running.
DELETED_TTL_S = 7 * 86_400

#: Tier name used in counters for lines that failed before routing (bad input).
NO_TIER = "-"
#: `status` measures a batch's rate over this long (its last RATE_SAMPLE lines, if more).
RATE_WINDOW_S = 60.0
RATE_SAMPLE = 5000


@dataclass(frozen=True)
class BatchKeys:
    batch_id: str

    def key(self, name: str) -> str:
        return f"{PREFIX}:batch:{self.batch_id}:{name}"

    @property
    def meta(self) -> str:
        return self.key("meta")

    @property
    def ids(self) -> str:
        """The one ids hash of a batch begun by an older version; the prefix of the buckets' keys."""
        return self.key("ids")

    def id_bucket(self, n: int) -> str:
        return f"{self.ids}:{n}"

    @property
    def out(self) -> str:
        return self.key("out")

    @property
    def err(self) -> str:
        return self.key("err")

    @property
    def events(self) -> str:
        return self.key("events")

    @property
    def deleted(self) -> str:
        return self.key("deleted")

    @property
    def recording(self) -> list[str]:
        """The keys the recording scripts take, in their order."""
        return [self.out, self.err, self.meta, self.events, self.deleted, self.ids]

    def all(self) -> list[str]:
        return [self.meta, self.ids, self.out, self.err, self.events, self.key("spill-lock"), self.key("submitting")]


def id_buckets_for(expected_lines: int | None) -> int:
    """How many ids buckets a batch of about ``expected_lines`` lines gets (None: unknown)."""
    if expected_lines is None:
        return UNSIZED_ID_BUCKETS
    return min(max(1, -(-expected_lines // IDS_PER_BUCKET)), MAX_ID_BUCKETS)


def check_max_cost(usd: float | None, name: str = "--max-cost") -> None:
    """Refuse a spending cap that caps nothing or everything (None: no cap, fine)."""
    if usd is not None and not (usd > 0 and math.isfinite(usd)):
        raise TurnoutError(f"{name} {usd:g}: give the most the batch may spend, in USD, above 0")


def over_cap(batch_id: str, spent: float, cap: float | None) -> str | None:
    """The warning for a batch that has spent its cap already: its lines yet to run (replayed
    dead letters too) would end as budget_spent."""
    if cap is None or spent < cap:
        return None
    return (f"batch {batch_id} has spent ${spent:.4f}, which its ${cap:.4f} cap does not exceed: its lines yet to run end "
            f"as budget_spent without a call; give a --max-cost above ${spent:.4f} to answer them")


def spilled(owner: bytes | None) -> bool:
    """Whether an ``ids`` value marks its job's answer as spilled (so the job is done)."""
    return owner is not None and owner.endswith(b"!")


def gone_while(batch_id: str, doing: str) -> str:
    """Why a batch vanished under a waiter or a follower, and what to do."""
    return (
        f"batch {batch_id} is gone from Redis while {doing} it: it was deleted (`turnout delete`), or Redis restarted without "
        "persistence (deploy/README.md: appendonly yes) and lost it; `turnout submit FILE --batch-id "
        f"{batch_id}` runs its lines again"
    )

class Ledger:
    """Reads and writes batches' state; one instance per process, thread-safe like redis-py."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._ok = client.register_script(_RECORD_OK)
        self._error = client.register_script(_RECORD_ERROR)
        self._claim = client.register_script(_CLAIM)
        self._spill_commit = client.register_script(_SPILL_COMMIT)
        self._owners = client.register_script(_OWNERS)
        self._layout = client.register_script(_LAYOUT)
        self._reopen = client.register_script(_REOPEN)
        self._lease = client.register_script(_LEASE)

    # --- the producer's side -------------------------------------------------------------

    def open_batch(self, batch_id: str, expected_lines: int | None = None) -> None:
        """Begin the batch, or go on with it; ``expected_lines`` (a guess will do) sizes a new
        batch's ids buckets."""
        keys = BatchKeys(batch_id)
        now = time.time()
        self.redis.delete(keys.deleted)  # the id is in use again: a new batch, whatever was deleted
        self._layout(keys=[keys.meta, keys.ids], args=[id_buckets_for(expected_lines)])
        self.redis.hsetnx(keys.meta, "started_at", now)
        self.redis.hset(keys.meta, mapping={"sealed": 0, "updated_at": now})
        self.redis.zadd(BATCHES, {batch_id: now}, nx=True)

    def counts_blank_lines(self, batch_id: str) -> bool:
        """Whether the batch numbers its lines as an editor does, blank lines included. A new
        batch does, and says so in its meta; one begun by a version that counted non-blank
        lines only (something enqueued, no mark) keeps counting that way, or its resume mark
        and its claimed ids' lines would point at other lines."""
        meta = BatchKeys(batch_id).meta
        numbering, enqueued = self.redis.hmget(meta, ["numbering", "enqueued_line"])
        if numbering is None and int(enqueued or 0) > 0:
            return False
        if numbering is None:
            self.redis.hsetnx(meta, "numbering", "physical")
            numbering = self.redis.hget(meta, "numbering")
        return bool(numbering == b"physical")

    def claim_ids(self, batch_id: str, pairs: list[tuple[str, int]]) -> list[int]:
        """Register (custom_id, line) pairs; returns the line that owns each id (its own, or an earlier one)."""
        owners = [line for _, line in pairs]
        # lines as strings: Lua would print a number past 1e14 in exponent form
        args = [json.dumps([custom_id for custom_id, _ in pairs]), json.dumps([str(line) for line in owners])]
        keys = BatchKeys(batch_id)
        taken = self._claim(keys=[keys.ids, keys.meta], args=args)
        for position, owner in zip(taken[::2], taken[1::2]):
            owners[int(position) - 1] = int(owner)
        return owners

    def progress(self, batch_id: str, submitted: int, enqueued_line: int) -> None:
        self.redis.hset(BatchKeys(batch_id).meta, mapping={"submitted": submitted, "enqueued_line": enqueued_line})

    def enqueued_line(self, batch_id: str) -> int:
        """The last input line known to be enqueued: a restarted submit goes on after it."""
        return int(self.redis.hget(BatchKeys(batch_id).meta, "enqueued_line") or 0)

    def first_config(self, batch_id: str, digest: str) -> str:
        """The digest of the config the batch was first run with: ``digest``, when it is new."""
        meta = BatchKeys(batch_id).meta
        pipe = self.redis.pipeline()
        pipe.hsetnx(meta, "config_digest", digest)
        pipe.hget(meta, "config_digest")
        return str(pipe.execute()[1].decode())

    def set_max_cost(self, batch_id: str, usd: float) -> str | None:
        """Cap what the batch may spend: the tier workers call nothing more for it once its
        recorded cost reaches ``usd`` (``spending``). Returns a warning when it already has."""
        check_max_cost(usd, "max_cost")
        self.redis.hset(BatchKeys(batch_id).meta, "max_cost", repr(float(usd)))
        return over_cap(batch_id, *self.spending(batch_id))

    def spending(self, batch_id: str) -> tuple[float, float | None]:
        """What the batch has spent, and its cap (None: it has none)."""
        cost, cap = self.redis.hmget(BatchKeys(batch_id).meta, ["cost", "max_cost"])
        return float(cost or 0.0), float(cap) if cap is not None else None

    def seal(self, batch_id: str, submitted: int) -> None:
        self.redis.hset(BatchKeys(batch_id).meta, mapping={"submitted": submitted, "sealed": 1})

    # --- the workers' side ---------------------------------------------------------------

    def record_ok(self, batch_id: str, key: str, line: ResultLine, frontier_cost: float) -> bool:
        """Record a success; False when the key already had one (the job ran twice)."""
        return self.record_ok_many(batch_id, [(key, line, frontier_cost)])[0]

    def record_ok_many(self, batch_id: str, items: list[tuple[str, ResultLine, float]]) -> list[bool]:
        """Record a micro-batch's successes in one round trip; each is still its own atomic script."""
        keys = BatchKeys(batch_id)
        pipe = self.redis.pipeline(transaction=False)
        now = time.time()
        for key, line, frontier_cost in items:
            args = [key, json_text(line), repr(line.turnout.cost_usd), line.turnout.tier or NO_TIER]
            self._ok(keys=keys.recording, args=args + [repr(frontier_cost), now], client=pipe)
        return [bool(result) for result in pipe.execute()]

    def record_error(self, batch_id: str, key: str, line: ResultLine) -> bool:
        """Record a failure unless the key already succeeded; a newer error replaces an older one."""
        keys = BatchKeys(batch_id)
        args = [key, json_text(line), line.turnout.tier or NO_TIER, time.time()]
        return bool(self._error(keys=keys.recording, args=args) == 1)

    def reopen(self, batch_id: str, key: str, tier: str) -> bool:
        """Take back the error line of a job about to be sent again (a dead letter replayed):
        the batch is not complete until the job records a line anew. False when there was none."""
        keys = BatchKeys(batch_id)
        return bool(self._reopen(keys=[keys.err, keys.meta, keys.deleted], args=[key, tier]))

    def answered(self, batch_id: str, keys: list[str]) -> list[bool]:
        """Which of these keys already have an output line (so a re-delivered job is skipped)."""
        if not keys:
            return []
        batch = BatchKeys(batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(batch.deleted)
        pipe.hmget(batch.out, keys)
        self._owners(keys=[batch.meta, batch.ids], args=keys, client=pipe)
        deleted, values, owners = pipe.execute()
        return [bool(deleted) or value is not None or spilled(owner) for value, owner in zip(values, owners)]

    def owners(self, batch_id: str, custom_ids: list[str]) -> list[bytes | None]:
        """Each id's ids entry: the line that claimed it (with a "!" once its answer was spilled), or None."""
        keys = BatchKeys(batch_id)
        found: list[bytes | None] = self._owners(keys=[keys.meta, keys.ids], args=custom_ids) if custom_ids else []
        return found

    def id_keys(self, batch_id: str) -> list[str]:
        """The keys the batch's ids may live in: its buckets, or its one older hash."""
        keys = BatchKeys(batch_id)
        n = int(self.redis.hget(keys.meta, "id_buckets") or 0)
        return [keys.id_bucket(b) for b in range(n)] if n else [keys.ids]

    # --- the collector's side ------------------------------------------------------------

    def status(self, batch_id: str) -> BatchStatus | None:
        meta = {k.decode(): v.decode() for k, v in self.redis.hgetall(BatchKeys(batch_id).meta).items()}
        if not meta:
            return None
        tiers: dict[str, TierReport] = {}
        for field, value in meta.items():
            if field.startswith("tier:"):
                _, tier, what = field.split(":", 2)
                report = tiers.setdefault(tier, TierReport())
                setattr(report, {"jobs": "jobs", "failed": "failed", "cost": "cost_usd"}[what], float(value) if what == "cost" else int(value))
        return BatchStatus(
            batch_id=batch_id,
            submitted=int(meta.get("submitted", 0)),
            done=int(meta.get("done", 0)),
            failed=int(meta.get("failed", 0)),
            sealed=meta.get("sealed") == "1",
            cost_usd=float(meta.get("cost", 0.0)),
            frontier_cost_usd=float(meta.get("frontier_cost", 0.0)),
            max_cost_usd=float(meta["max_cost"]) if "max_cost" in meta else None,
            tiers=tiers,
            started_at=float(meta["started_at"]) if "started_at" in meta else None,
            updated_at=float(meta["updated_at"]) if "updated_at" in meta else None,
        )

    def recent_rate(self, batch_id: str, started_at: float | None = None) -> float:
        """Lines recorded per second lately: over the last RATE_WINDOW_S (or since the batch
        started, if later), or over its last RATE_SAMPLE lines when more came in that time,
        read from the batch's events stream on Redis's clock. 0.0 when none came."""
        seconds, micros = self.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        since_ms = now_ms - int(RATE_WINDOW_S * 1000)
        if started_at is not None and started_at * 1000 < now_ms:  # (the producer's clock: never ahead of Redis's)
            since_ms = max(since_ms, int(started_at * 1000))
        entries = self.redis.xrevrange(BatchKeys(batch_id).events, max="+", min=str(since_ms), count=RATE_SAMPLE)
        if not entries:
            return 0.0
        if len(entries) >= RATE_SAMPLE:  # a busy batch: the span of its last RATE_SAMPLE lines
            since_ms = int(entries[-1][0].split(b"-")[0])
        return len(entries) / max((now_ms - since_ms) / 1000, 1.0)

    def batches(self) -> list[str]:
        return [b.decode() for b in self.redis.zrevrange(BATCHES, 0, -1)]

    def lines(self, batch_id: str, which: str) -> Iterator[bytes]:
        """Every recorded line of ``which`` ("out" or "err") still held in Redis, streamed with
        HSCAN; output lines spilled to a file are not (see ``workers.collector.output_lines``)."""
        keys = BatchKeys(batch_id)
        for _, value in self.redis.hscan_iter(keys.key(which), count=1000):
            if value:
                yield value

    # --- spilling output lines to a file ---------------------------------------------------

    def spill_state(self, batch_id: str) -> tuple[str | None, int, str]:
        """(spill file, its committed size in bytes, last events-stream id spilled)."""
        path, size, cursor = self.redis.hmget(BatchKeys(batch_id).meta, ["spill_path", "spill_size", "spill_cursor"])
        return (path.decode() if path else None), int(size or 0), (cursor.decode() if cursor else "0-0")

    def unspilled(self, batch_id: str, cursor: str, count: int) -> tuple[str | None, list[tuple[str, bytes]]]:
        """Output lines recorded after ``cursor`` among the next ``count`` events, oldest first:
        (the last event's id, [(custom_id, line)]); (None, []) when no event came after it."""
        keys = BatchKeys(batch_id)
        entries = self.redis.xrange(keys.events, min=f"({cursor}", count=count)
        if not entries:
            return None, []
        ids = [fields[b"k"].decode() for _, fields in entries if fields[b"ok"] == b"1"]
        values = self.redis.hmget(keys.out, ids) if ids else []
        return entries[-1][0].decode(), [(k, v) for k, v in zip(ids, values) if v]

    def commit_spill(self, batch_id: str, token: str, before: int, cursor: str, size: int, path: str, moved: list[str]) -> int:
        """After the lines are on disk: drop them here (a "!" on their ids), move the cursor and the committed size.
        -1 when the lease was lost, the file moved on or the batch was deleted meanwhile."""
        keys = BatchKeys(batch_id)
        args = [token, before, cursor, size, path, *moved]
        return int(self._spill_commit(keys=[keys.out, keys.meta, keys.key("spill-lock"), keys.ids], args=args))

    def spill_lock(self, batch_id: str, token: str, ttl_ms: int = 60_000) -> bool:
        """Take or renew the batch's spill lease: one spiller (or reader of the spill file) at a time."""
        return bool(self._lease(keys=[BatchKeys(batch_id).key("spill-lock")], args=[token, ttl_ms]))

    def submit_lease(self, batch_id: str, token: str, ttl_ms: int = SUBMIT_LEASE_MS) -> bool:
        """Take or renew the batch's submit lease: one producer at a time, or two would each
        claim the other's lines as their own and move the resume mark and size under it."""
        return bool(self._lease(keys=[BatchKeys(batch_id).key("submitting")], args=[token, ttl_ms]))

    def submit_release(self, batch_id: str, token: str) -> None:
        self._lease(keys=[BatchKeys(batch_id).key("submitting")], args=[token, 0])

    def spill_unlock(self, batch_id: str, token: str) -> None:
        self._lease(keys=[BatchKeys(batch_id).key("spill-lock")], args=[token, 0])

    def error_lines(self, batch_id: str) -> Iterator[bytes]:
        """Error lines whose key has no output line (a replayed job's old error is dropped)."""
        keys, cursor = BatchKeys(batch_id), 0
        while True:
            cursor, page = self.redis.hscan(keys.err, cursor, count=1000)
            pipe = self.redis.pipeline(transaction=False)
            for key in page:
                pipe.hexists(keys.out, key)  # (a spilled job's error was dropped when it was answered)
            for value, answered in zip(page.values(), pipe.execute()):
                if not answered:
                    yield value
            if not cursor:
                return

    def follow(self, batch_id: str, block_ms: int = 1000, count: int = 500) -> Iterator[tuple[bool, bytes]]:
        """Each recorded line as it is recorded, from the first, until the batch is complete:
        (is an output line, the line). An output line already spilled comes as b"" (the
        collector's ``follow`` reads it from the spill file). Lines are read from Redis with
        their events, up to ``count`` in one round trip: an error line that a replayed job's
        answer replaced before it was read is left out; one read before that comes, and so does
        the job's new line, later (its answer, or a new error after ``reopen``).

        The batch's status is read before each read of its events: complete then (its
        counters and its events move in one script), and fewer events read than asked for,
        means every line was followed. Raises TurnoutError when the batch is deleted (or
        deleted and submitted again) before that; lines read before the delete still come."""
        keys = BatchKeys(batch_id)
        last, started = "0-0", None
        while True:
            status = self.status(batch_id)
            if status is None or (started is not None and status.started_at != started):
                raise TurnoutError(gone_while(batch_id, "following"))
            started = status.started_at
            entries = self.redis.xread({keys.events: last}, count=count, block=None if status.complete else block_ms)
            for _, items in entries:
                pipe = self.redis.pipeline(transaction=False)  # one round trip for the lines of up to ``count`` events
                for _, fields in items:
                    pipe.hget(keys.out if fields[b"ok"] == b"1" else keys.err, fields[b"k"])
                values = pipe.execute()
                oks = [fields[b"ok"] == b"1" for _, fields in items]
                # an answer is never replaced: gone from Redis means spilled, or the batch deleted
                if any(ok and value is None for ok, value in zip(oks, values)) and self._started_at(keys) != started:
                    raise TurnoutError(gone_while(batch_id, "following"))
                for (entry_id, _), ok, value in zip(items, oks, values):
                    last = entry_id
                    if ok:
                        yield ok, value or b""
                    elif value is not None:
                        yield ok, value
            if status.complete and sum(len(items) for _, items in entries) < count:
                return

    def _started_at(self, keys: BatchKeys) -> float | None:
        raw = self.redis.hget(keys.meta, "started_at")
        return float(raw) if raw is not None else None

    def id_bytes(self, batch_id: str) -> int:
        """What the batch's ids take in Redis (``MEMORY USAGE``), for the benchmarks."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.id_keys(batch_id):
            pipe.memory_usage(key, samples=0)
        return sum(int(n or 0) for n in pipe.execute())

    def delete(self, batch_id: str) -> None:
        """Drop the batch's lines and counters, leaving a tombstone (see the module docstring)."""
        keys = BatchKeys(batch_id)
        ids = self.id_keys(batch_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.deleted, 1, ex=DELETED_TTL_S)
        pipe.delete(*keys.all())
        for start in range(0, len(ids), 10_000):
            pipe.unlink(*ids[start : start + 10_000])
        pipe.zrem(BATCHES, batch_id)
        pipe.execute()

    def deleted(self, batch_id: str) -> bool:
        return bool(self.redis.exists(BatchKeys(batch_id).deleted))
