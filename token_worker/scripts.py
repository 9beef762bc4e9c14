"""The Lua that runs inside Redis: every write that must not interleave with another.

Only the refresher side loads or runs these: the ``reader`` ACL user can neither
load a script nor run one (``ops/redis-acl.conf``). Readers read through a
*function* that the refresher side loads (``FCALL_RO``, flagged ``no-writes``), or
with plain commands where it is absent.

Every script checks the type of each key it touches before it writes anything:
a key of the wrong type (an operator's typo, a hostile write) is deleted and
rebuilt rather than left to make every refresh fail with WRONGTYPE halfway.
Every key a script touches is passed in ``KEYS`` (Redis requires it; on a cluster
they share one hash slot). The due script only reads: it treats a key of the wrong type
as absent instead; the claim script writes only its claims set.
"""

from __future__ import annotations

from string import Template

from . import records

__all__ = ["ACQUIRE", "CLAIM", "DUE", "EXTEND", "FAIL", "FUNCTION_LIBRARY",
           "FUNCTION_LIBRARY_NAME", "PUBLISH", "READ_FUNCTION", "RELEASE"]

# shared by every script: delete KEYS[i] unless it is one of the allowed types
_TYPES = """
local function want(key, a, b)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= a and t ~= b then redis.call('DEL', key) end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: token, schedule, lock, status
# ARGV: value, expires_at_ms, refresh_at, profile, channel, fingerprint, owner, issued_at,
#       then status field/value pairs
# Returns 1 written; 0 a token issued later is already published; -1 already expired;
# -2 the lock is another holder's (ours expired and was taken: fenced out).
# The PUBLISH line is events.Event.published(...).encode() built in Lua (its twin;
# tests/test_events.py checks that Event.parse reads it).
PUBLISH = _TYPES + """
want(KEYS[1], 'string'); want(KEYS[2], 'zset'); want(KEYS[3], 'string'); want(KEYS[4], 'hash')
local lock = redis.call('GET', KEYS[3])
if lock and lock ~= ARGV[7] then return -2 end
local new_ttl = tonumber(ARGV[2]) - now_ms()
if new_ttl <= 0 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local cur = tonumber(redis.call('HGET', KEYS[4], '$issued_at') or '')
  if cur == nil then
    -- written before issued_at was recorded: the old never-shorter rule decides
    if redis.call('PTTL', KEYS[1]) > new_ttl then return 0 end
  elseif cur >= tonumber(ARGV[8]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', new_ttl)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', ARGV[5], ARGV[4] .. ' ' .. ARGV[6])
return 1
"""

# KEYS: status, schedule, lock
# ARGV: owner, profile, next_attempt_at, attempt started at, field/value pairs
# -> {consecutive failures now, previous error code}, or {-1, ''} when fenced out: the
# lock is another holder's, or a token issued after this attempt began is published
# (a holder paused past its lock must not undo the success of the one that took over)
FAIL = _TYPES + """
want(KEYS[1], 'hash'); want(KEYS[2], 'zset'); want(KEYS[3], 'string')
local lock = redis.call('GET', KEYS[3])
if lock and lock ~= ARGV[1] then return {-1, ''} end
local issued = tonumber(redis.call('HGET', KEYS[1], '$issued_at') or '')
if issued and issued > tonumber(ARGV[4]) then return {-1, ''} end
local previous = redis.call('HGET', KEYS[1], '$last_error_code') or ''
local n = tonumber(redis.call('HGET', KEYS[1], '$consecutive_failures') or '0') or 0
n = math.floor(n) + 1
redis.call('HSET', KEYS[1], '$consecutive_failures', n)
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return {n, previous}
"""

# KEYS: lock   ARGV: owner, ttl_ms -> 1 taken; 0 held by someone else
# A lock with no expiry can only come from a hand-made SET: give it one, or no refresh
# of this profile would ever run again (and forced waits would spin on it).
ACQUIRE = _TYPES + """
want(KEYS[1], 'string')
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lock   ARGV: owner, ttl_ms -> 1 extended; 0 no longer ours
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lock   ARGV: owner
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The due test shared by DUE and CLAIM. KEYS: schedule, then per profile its token keys,
# status keys and rejected markers (n each, in the order of the profiles); ARGV[1]: the
# rejected cooldown seconds, profiles from ARGV[FIRST]. Fills at[i]: when profile i is due
# (now when it already is). Every key is passed, as Redis requires of scripts (on a
# cluster they share one slot: the prefix is the hash tag).
# Due: the schedule's time has passed or it has none; or the token key is gone while no
# failure backoff is running (evicted, lost in a failover, deleted by hand); or the
# current token was reported rejected and no refresh a report caused ran within the
# cooldown. Keys of the wrong type read as absent. Needs Redis 6.2 (ZMSCORE).
_DUE_TIMES = """
local function read(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return nil end
  return r
end
local first = $first
local n = #ARGV - first + 1
-- one command per 1,000 keys instead of one per key: the common tick (every token
-- present, no report) then costs a handful of calls, whatever the profile count
local function count(from_key)
  local total = 0
  for from = from_key, from_key + n - 1, 1000 do
    total = total + redis.call('EXISTS', unpack(KEYS, from, math.min(from + 999, from_key + n - 1)))
  end
  return total
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cooldown = tonumber(ARGV[1])
local scores = {}
if redis.call('TYPE', KEYS[1])['ok'] == 'zset' then
  for from = 1, n, 1000 do
    local r = redis.call('ZMSCORE', KEYS[1],
                         unpack(ARGV, from + first - 1, math.min(from + 999, n) + first - 1))
    for j = 1, #r do scores[from + j - 1] = r[j] end
  end
end
local tokens = n > 0 and count(2) or 0
local markers = n > 0 and count(2 + 2 * n) or 0
local at = {}
for i = 1, n do
  local token, status, marker = KEYS[1 + i], KEYS[1 + n + i], KEYS[1 + 2 * n + i]
  local score = tonumber(scores[i] or '')
  local is_due = score == nil or score <= now
  if not is_due and tokens < n and redis.call('EXISTS', token) == 0 then
    is_due = (tonumber(read('HGET', status, '$consecutive_failures') or '0') or 0) <= 0
  elseif not is_due and markers > 0 then
    local reported = read('GET', marker)
    if reported then
      local s = read('HMGET', status, '$fingerprint', '$rejected_refresh_at') or {}
      if s[1] == reported then
        is_due = now - (tonumber(s[2] or '0') or 0) >= cooldown
      end
    end
  end
  at[i] = is_due and now or score
end
"""

# -> {now as "sec.usec", due profiles}. Only reads.
DUE = Template(_DUE_TIMES).safe_substitute(first=2) + """
local due = {}
for i = 1, n do
  if at[i] <= now then due[#due + 1] = ARGV[i + 1] end
end
return {t[1] .. '.' .. string.format('%06d', tonumber(t[2])), due}
"""

# Beat's claim: KEYS as DUE's plus the claims set last; ARGV: cooldown, horizon seconds,
# claim seconds, profiles. Each profile due within the horizon that no live claim holds is
# claimed until (when it runs + claim seconds): its message is sent once, and a backlog or
# a second beat cannot send it again until its task ends (release) or the claim lapses.
# A token with little life left when it runs is claimed for at most half of that life
# (not under the horizon, at least 1 s): a message lost with its worker or its broker is
# then re-sent while the token is still valid, not after it expired.
# -> {now as "sec.usec", {profile, runs at, 1 when a lapsed claim was still there}...}
CLAIM = Template(_DUE_TIMES).safe_substitute(first=4) + """
local claims = KEYS[2 + 3 * n]
if redis.call('TYPE', claims)['ok'] ~= 'zset' then redis.call('DEL', claims) end
local horizon, hold = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 1, n do
  if at[i] ~= nil and at[i] <= now + horizon then
    local name = ARGV[i + 3]
    local held = tonumber(redis.call('ZSCORE', claims, name) or '')
    -- a claim further out than any this script makes (+inf written by hand) is void: it
    -- must not keep the profile from ever being sent
    if held ~= nil and held > now + horizon + hold then held = now end
    if held == nil or held <= now then
      local run = math.max(at[i], now)
      local until_ = run + hold
      local pttl = tonumber(redis.call('PTTL', KEYS[1 + i]))
      if pttl > 0 then
        local half = (now + pttl / 1000 - run) / 2
        until_ = run + math.min(hold, math.max(half, horizon, 1))
      end
      redis.call('ZADD', claims, until_, name)
      out[#out + 1] = name
      out[#out + 1] = string.format('%.6f', run)
      out[#out + 1] = held and 1 or 0
    end
  end
end
return {t[1] .. '.' .. string.format('%06d', tonumber(t[2])), out}
"""

# The reader's hot path, loaded by the refresher side (FUNCTION LOAD) and run by readers
# with FCALL_RO. The name carries a version, so two fleet versions never replace each
# other's. KEYS: token -> false, or pttl ms (13 chars) .. TIME sec (10) .. usec (6) .. value
# (one string parses faster than an array)
READ_FUNCTION = "token_worker_read_1"
FUNCTION_LIBRARY_NAME = "token_worker_1"
FUNCTION_LIBRARY = f"""#!lua name={FUNCTION_LIBRARY_NAME}
redis.register_function{{function_name='{READ_FUNCTION}', flags={{'no-writes'}},
  callback=function(keys, args)
    local v = redis.call('GET', keys[1])
    if not v then return false end
    local t = redis.call('TIME')
    return string.format('%013d%010d%06d', redis.call('PTTL', keys[1]), tonumber(t[1]),
                         tonumber(t[2])) .. v
  end}}
"""


def _field_names(lua: str) -> str:
    """Status field names come from :mod:`token_worker.records` (spelled once)."""
    return Template(lua).substitute(
        issued_at=records.ISSUED_AT, last_error_code=records.LAST_ERROR_CODE,
        consecutive_failures=records.CONSECUTIVE_FAILURES, fingerprint=records.FINGERPRINT,
        rejected_refresh_at=records.REJECTED_REFRESH_AT)


PUBLISH = _field_names(PUBLISH)
FAIL = _field_names(FAIL)
DUE = _field_names(DUE)
CLAIM = _field_names(CLAIM)
