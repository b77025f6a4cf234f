-- Append a batch of reported events to an external job, in order, in one atomic step:
-- each event's stream entry and its change of the job's hash, skipping events whose
-- idempotency key was appended before.
-- KEYS[1] job hash, KEYS[2] event stream, KEYS[3] sorted set of the job's event keys
-- (same hash tag, same slot)
-- ARGV[1] approximate MAXLEN of the stream, ARGV[2] seconds the job's keys live once it has
-- ended, ARGV[3] seconds the key set lives while the job runs, ARGV[4] keys kept at most,
-- ARGV[5] number of events, then per event: type, data (JSON), key ('' for none), the
-- number of field, value pairs to set on the hash, and those pairs.
-- Returns {'missing'} when there is no such job; {'ended', cancel_requested} when the job
-- has ended and the batch has an event not appended before (nothing is appended then);
-- else {'ok', cancel_requested, id or '' (a duplicate) for each event}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'missing'}
end
local cancel = redis.call('HGET', KEYS[1], 'cancel_requested') or '0'
local events = {}
local fresh = 0
local pos = 6
for i = 1, tonumber(ARGV[5]) do
  local count = tonumber(ARGV[pos + 3])
  local event = {type = ARGV[pos], data = ARGV[pos + 1], key = ARGV[pos + 2], first = pos + 4, count = count}
  event.duplicate = event.key ~= '' and redis.call('ZSCORE', KEYS[3], event.key) ~= false
  if not event.duplicate then
    fresh = fresh + 1
  end
  events[i] = event
  pos = pos + 4 + 2 * count
end
local function ended(value)
  return value == 'COMPLETED' or value == 'FAILED' or value == 'CANCELLED'
end
if fresh > 0 and ended(status) then
  return {'ended', cancel}
end
local reply = {'ok', cancel}
local last = nil
for i, event in ipairs(events) do
  if event.duplicate then
    reply[i + 2] = ''
  else
    last = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'type', event.type, 'data', event.data)
    if event.count > 0 then
      redis.call('HSET', KEYS[1], unpack(ARGV, event.first, event.first + 2 * event.count - 1))
    end
    if event.key ~= '' then
      redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'report_seq', 1), event.key)
    end
    reply[i + 2] = last
  end
end
if last then
  redis.call('HSET', KEYS[1], 'last_event_id', last)
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[4]) - 1)
  if ended(redis.call('HGET', KEYS[1], 'status')) then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    redis.call('EXPIRE', KEYS[2], ARGV[2])
    redis.call('EXPIRE', KEYS[3], ARGV[2])
  elseif redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('EXPIRE', KEYS[3], ARGV[3])
  end
end
return reply
