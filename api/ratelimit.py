"""Per-token request rate (a token bucket) and concurrent streams, counted in Redis so that every
API process shares one count; without Redis (a bare `hearth serve-api` in tests), in memory."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV rate/s, burst, now. Returns seconds to wait, "0" when allowed.
_BUCKET = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""
# KEYS[1] counter; ARGV max. 1 when a slot was taken.
_OPEN = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 3600)
if n > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return 0 end
return 1
"""


@dataclass
class Limiter:
    rate: float  # requests per second per key; 0: unlimited
    burst: int
    max_streams: int  # 0: unlimited
    redis: aioredis.Redis | None = None
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _streams: dict[str, int] = field(default_factory=dict)

    async def wait_s(self, key: str) -> float:
        """0 when a request by `key` may go ahead now, else the seconds until one may."""
        if self.rate <= 0:
            return 0.0
        now = time.time()
        if self.redis is not None:
            try:
                out = await self.redis.eval(
                    _BUCKET, 1, f"hearth:rl:{key}", self.rate, self.burst, now
                )
            except RedisError as exc:
                _unlimited(exc)
                return 0.0
            return float(out)
        tokens, ts = self._buckets.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + max(0.0, now - ts) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        return wait

    async def open_stream(self, key: str) -> bool:
        if self.max_streams <= 0:
            return True
        if self.redis is not None:
            try:
                got = await self.redis.eval(_OPEN, 1, f"hearth:streams:{key}", self.max_streams)
            except RedisError as exc:
                _unlimited(exc)
                return True
            return bool(int(got))
        if self._streams.get(key, 0) >= self.max_streams:
            return False
        self._streams[key] = self._streams.get(key, 0) + 1
        return True

    async def close_stream(self, key: str) -> None:
        if self.max_streams <= 0:
            return
        if self.redis is not None:
            try:
                await self.redis.decr(f"hearth:streams:{key}")
            except RedisError as exc:
                _unlimited(exc)
        else:
            self._streams[key] = max(0, self._streams.get(key, 0) - 1)


def _unlimited(exc: Exception) -> None:
    """Redis is down: requests go on unlimited (and the outage is logged) rather than fail."""
    log.warning("rate limits are off while Redis is unreachable: %s", exc)


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
