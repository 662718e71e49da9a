"""What the Redis store writes and reads: key names, the event record, Lua scripts.

Beside the onion: only ``gateway.redisstore``'s background tasks and probe
claims use these, always through ``RedisLink.call``. Every key starts with
``store.prefix`` and every key expires, so several fleets (or tests) can share
one Redis and a fleet that goes away leaves nothing behind for long:

==============================  ==============================================
``<p>events``                   pub/sub channel: every ``FleetEvent``
``<p>breaker:<dep>``            the deployment's last OPEN/CLOSED event (JSON)
``<p>breaker:<dep>:probes:<t>`` probe slots taken in the open period ending at t
``<p>pause:<dep>``              the deployment's longest 429 pause (JSON)
``<p>budget:<provider>:<sec>``  requests (``r``) and retries (``t``) per second
``<p>tenant:<tenant>``          calls in flight per replica, with a lease
``<p>cache:<key>``              response cache and idempotency records
==============================  ==============================================
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

#: A breaker record outlives its open period by this long (for late joiners).
RECORD_TTL_S: Final = 3600.0
#: A replica's tenant count counts this long after its last sync (crash → freed).
TENANT_LEASE_S: Final = 3.0


class FleetEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A breaker transition or a 429 pause, as one replica tells the others."""

    #: The replica that saw it (its own events are ignored when they come back).
    origin: str
    kind: Literal["breaker", "pause"]
    deployment: str
    #: For breakers: ``open``, ``half_open`` or ``closed``.
    state: str | None = None
    #: For OPEN breakers and pauses: the unix time it ends.
    until_wall: float | None = None
    at_wall: float
    reason: str


encode_event: Final = msgspec.json.Encoder().encode
decode_event: Final = msgspec.json.Decoder(FleetEvent).decode


class Keys:
    """Key names under one prefix."""

    __slots__ = ("channel", "prefix")

    def __init__(self, prefix: str) -> None:
        """Name keys under ``prefix`` (e.g. ``"fusebox:"``)."""
        self.prefix = prefix
        self.channel = f"{prefix}events"

    def breaker(self, deployment: str) -> str:
        """The breaker record of ``deployment``."""
        return f"{self.prefix}breaker:{deployment}"

    def probes(self, deployment: str, period_ms: int) -> str:
        """The probe slots claimed in ``deployment``'s open period ending then."""
        return f"{self.breaker(deployment)}:probes:{period_ms}"

    def pause(self, deployment: str) -> str:
        """The 429 pause of ``deployment``."""
        return f"{self.prefix}pause:{deployment}"

    def budget(self, provider: str, second: int) -> str:
        """``provider``'s request and retry counts in one unix second."""
        return f"{self.prefix}budget:{provider}:{second}"

    def tenant(self, tenant: str) -> str:
        """``tenant``'s calls in flight, per replica."""
        return f"{self.prefix}tenant:{tenant}"

    def cache(self, key: str) -> str:
        """A response-cache or idempotency entry."""
        return f"{self.prefix}cache:{key}"


#: Claim a probe slot. KEYS[1]: the breaker record. ARGV: probes allowed per open
#: period, the claim's lease (ms), now (unix ms). Returns {1, period}: granted,
#: counted under the open period ending at ``period`` (0: nothing counted, the
#: fleet knows no open period); {0, until}: refused, the fleet's open period
#: lasts until ``until``; {0, 0}: refused, the period's slots are taken.
CLAIM_PROBE: Final = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {1, 0} end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' or rec['state'] ~= 'open' then return {1, 0} end
local until_ms = math.floor((tonumber(rec['until_wall']) or 0) * 1000)
if until_ms > tonumber(ARGV[3]) then return {0, until_ms} end
local key = KEYS[1] .. ':probes:' .. string.format('%d', until_ms)
local n = redis.call('INCR', key)
if n == 1 then redis.call('PEXPIRE', key, ARGV[2]) end
if n <= tonumber(ARGV[1]) then return {1, until_ms} end
redis.call('DECR', key)
return {0, 0}
"""

#: Give back probe slots whose probes ended without a verdict (a client hung
#: up, a 429). KEYS[1]: the period's counter. ARGV: how many.
RELEASE_PROBES: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('DECRBY', KEYS[1], ARGV[1]) < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
end
return 1
"""

#: Store a pause unless a longer one is stored, then publish it. KEYS[1]: the
#: pause key. ARGV: the event JSON, its until (unix s), ttl (ms), the channel.
PUBLISH_PAUSE: Final = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, old = pcall(cjson.decode, raw)
  if ok and type(old) == 'table' and tonumber(old['until_wall'])
     and tonumber(old['until_wall']) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""

#: Add this replica's new requests and retries to the current second, then sum
#: the window. KEYS: the window's seconds, newest first. ARGV: requests,
#: retries, the bucket's ttl (s). Returns {requests, retries} for the fleet.
SYNC_BUDGET: Final = """
local r, t = tonumber(ARGV[1]), tonumber(ARGV[2])
if r > 0 then redis.call('HINCRBY', KEYS[1], 'r', r) end
if t > 0 then redis.call('HINCRBY', KEYS[1], 't', t) end
if r > 0 or t > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
local sum_r, sum_t = 0, 0
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'r', 't')
  sum_r = sum_r + (tonumber(v[1]) or 0)
  sum_t = sum_t + (tonumber(v[2]) or 0)
end
return {sum_r, sum_t}
"""

#: Write this replica's calls in flight for a tenant, drop expired replicas and
#: sum the others. KEYS[1]: the tenant's hash. ARGV: replica, "count:expires_ms",
#: now (unix ms), the hash's ttl (ms). Returns the other replicas' calls.
SYNC_TENANT: Final = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local others = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] ~= ARGV[1] then
    local n, expires = string.match(fields[i + 1], '^(%d+):(%d+)$')
    if n and tonumber(expires) >= tonumber(ARGV[3]) then
      others = others + tonumber(n)
    else
      redis.call('HDEL', KEYS[1], fields[i])
    end
  end
end
return others
"""
