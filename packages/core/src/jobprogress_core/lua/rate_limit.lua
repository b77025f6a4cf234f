-- One hit on a rate limit (gcra.lua, which this script is joined to).
-- KEYS[1]  the limit's state for one subject
-- ARGV[1]  interval between hits at the sustained rate, ms (period / limit)
-- ARGV[2]  limit: hits allowed in a burst
-- Returns 0 when the hit is allowed, else the ms to wait before the next one is.
return gcra_hit(KEYS[1], ARGV[1], ARGV[2])
