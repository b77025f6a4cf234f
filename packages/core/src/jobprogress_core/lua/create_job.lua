-- Create a job's hash and append its first event, in one atomic step.
-- KEYS[1] job hash, KEYS[2] event stream (same hash tag, same slot)
-- ARGV[1] approximate MAXLEN, ARGV[2] event type, ARGV[3] event data (JSON),
-- ARGV[4..] field, value pairs of the new hash.
-- Returns the entry ID of the first event, or false if the job already exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[2], 'data', ARGV[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('HSET', KEYS[1], 'last_event_id', id)
return id
