-- Append one event to a job's stream and update the job's hash, in one atomic step.
-- KEYS[1] job hash, KEYS[2] event stream (same hash tag, same slot)
-- ARGV[1] approximate MAXLEN of the stream, ARGV[2] event type, ARGV[3] event data (JSON),
-- ARGV[4] a token unique to this append,
-- ARGV[5] the queue entry whose run must hold the job ('' for anyone),
-- ARGV[6] seconds the job's keys live once it has ended (0: keep),
-- ARGV[7..] field, value pairs to set on the hash.
-- Returns the new entry ID; the same ID again when the call is a retry of the last append
-- (same token), so a retried call never appends twice; false when the job is missing or
-- already finished: nothing is ever appended after a terminal event. Fails with LOSTCLAIM
-- when another run (another worker, or another queue entry) has taken the job over.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return false
end
if redis.call('HGET', KEYS[1], 'last_token') == ARGV[4] then
  return redis.call('HGET', KEYS[1], 'last_event_id')
end
if status == 'COMPLETED' or status == 'FAILED' or status == 'CANCELLED' then
  return false
end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'entry') ~= ARGV[5] then
  return redis.error_reply('LOSTCLAIM the job is held by another run')
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[2], 'data', ARGV[3])
if #ARGV > 6 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 7))
end
redis.call('HSET', KEYS[1], 'last_event_id', id, 'last_token', ARGV[4])
local ended = redis.call('HGET', KEYS[1], 'status')
if tonumber(ARGV[6]) > 0 and (ended == 'COMPLETED' or ended == 'FAILED' or ended == 'CANCELLED') then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
return id
