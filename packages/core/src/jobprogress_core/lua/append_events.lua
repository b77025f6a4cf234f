-- Append a batch of events to a job's stream, in order, each with its change of the job's
-- hash, in one atomic step: all of the batch, or nothing. Nothing is ever appended after a
-- terminal event. The worker appends one event a call, under its claim and with a token;
-- a reporter of an external job appends batches whose events may carry idempotency keys.
-- KEYS[1] job hash, KEYS[2] event stream, and with idempotency keys KEYS[3] the sorted set
-- of the job's event keys (same hash tag, same slot)
-- ARGV[1] approximate MAXLEN of the stream, ARGV[2] seconds the job's keys live once it has
-- ended (0: keep), ARGV[3] a token unique to this batch ('' for none), ARGV[4] the queue
-- entry whose run must hold the job ('' for anyone), ARGV[5] seconds the key set lives
-- while the job runs, ARGV[6] keys kept at most (both unused without KEYS[3]), ARGV[7]
-- number of events, ARGV[8] to ARGV[11] the most steps, metric keys, artifacts and
-- annotations a job may have, then per event: type, data (JSON), key ('' for none; unused
-- without KEYS[3]), the number of field, value pairs to set on the hash, and those pairs.
-- The job's hash keeps what a snapshot shows of the richer events: `steps` (JSON list of
-- {stepId, name, status, startedAt, endedAt}, in order of first report), `metrics` (JSON
-- object: each key's latest {value, step}), and the counts `artifacts` and `annotations`.
-- Returns {'missing'} when there is no such job; {'again', cancel_requested, id} when the
-- token is the one of the last batch appended (a retried call, even once the job ended:
-- nothing is appended again, id is the last event's); {'ended', cancel_requested} when the
-- job has ended and the batch has an event not appended before (nothing is appended then);
-- {'limit', type, most} when the batch would take the job past a limit (nothing is
-- appended then); else {'ok', cancel_requested, id or '' (a duplicate key) for each event}. Fails with
-- LOSTCLAIM when another run (another worker, or another queue entry) has taken the job
-- over.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'missing'}
end
local cancel = redis.call('HGET', KEYS[1], 'cancel_requested') or '0'
local token, holder = ARGV[3], ARGV[4]
if token ~= '' and redis.call('HGET', KEYS[1], 'last_token') == token then
  return {'again', cancel, redis.call('HGET', KEYS[1], 'last_event_id') or ''}
end
local keyed = #KEYS > 2
local events = {}
local fresh = 0
local limits = {step = tonumber(ARGV[8]), metric = tonumber(ARGV[9]),
                artifact = tonumber(ARGV[10]), annotation = tonumber(ARGV[11])}
local pos = 12
for i = 1, tonumber(ARGV[7]) do
  local count = tonumber(ARGV[pos + 3])
  local event = {type = ARGV[pos], data = ARGV[pos + 1], key = ARGV[pos + 2], first = pos + 4, count = count}
  event.duplicate = keyed and event.key ~= '' and redis.call('ZSCORE', KEYS[3], event.key) ~= false
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
if holder ~= '' and redis.call('HGET', KEYS[1], 'entry') ~= holder then
  return redis.error_reply('LOSTCLAIM the job is held by another run')
end
-- What the batch makes of the job's steps, metrics and counts: refused whole past a limit.
local state = nil
local function load_state()
  local steps, metrics, artifacts, annotations = unpack(redis.call('HMGET', KEYS[1], 'steps', 'metrics',
                                                                   'artifacts', 'annotations'))
  local loaded = {steps = cjson.decode(steps or '[]'), metrics = cjson.decode(metrics or '{}'),
                  counts = {artifact = tonumber(artifacts or '0'), annotation = tonumber(annotations or '0')}}
  loaded.keys = 0
  for _ in pairs(loaded.metrics) do
    loaded.keys = loaded.keys + 1
  end
  return loaded
end
local function take(event)
  local data = cjson.decode(event.data)
  if event.type == 'step' then
    local found = nil
    for _, step in ipairs(state.steps) do
      if step.stepId == data.stepId then
        found = step
        break
      end
    end
    if not found then
      if #state.steps >= limits.step then
        return {'limit', 'step', limits.step}
      end
      found = {stepId = data.stepId}
      table.insert(state.steps, found)
    end
    for _, name in ipairs({'name', 'status', 'startedAt', 'endedAt'}) do
      if data[name] ~= nil and data[name] ~= cjson.null then
        found[name] = data[name]
      end
    end
  elseif event.type == 'metric' then
    for _, metric in ipairs(data.metrics) do
      if state.metrics[metric.key] == nil then
        if state.keys >= limits.metric then
          return {'limit', 'metric', limits.metric}
        end
        state.keys = state.keys + 1
      end
      state.metrics[metric.key] = {value = metric.value, step = data.step}
    end
  else
    state.counts[event.type] = state.counts[event.type] + 1
    if state.counts[event.type] > limits[event.type] then
      return {'limit', event.type, limits[event.type]}
    end
  end
  return nil
end
for _, event in ipairs(events) do
  if not event.duplicate and limits[event.type] then
    state = state or load_state()
    local refused = take(event)
    if refused then
      return refused
    end
  end
end
-- cjson writes a number with 14 significant digits: a metric's value keeps all 17 (what
-- the event itself carries), so that a snapshot shows the value the live event showed.
local function number_json(value)
  if value == math.floor(value) and math.abs(value) < 1e15 then
    return string.format('%d', value)
  end
  return string.format('%.17g', value)
end
local function encode_metrics(metrics)
  local parts = {}
  for key, metric in pairs(metrics) do
    local step = ''
    if metric.step == cjson.null then
      step = ',"step":null'
    elseif metric.step ~= nil then
      step = ',"step":' .. number_json(metric.step)
    end
    table.insert(parts, cjson.encode(key) .. ':{"value":' .. number_json(metric.value) .. step .. '}')
  end
  return '{' .. table.concat(parts, ',') .. '}'
end
-- Encoded before anything is written: a script that fails is not rolled back.
local encoded = nil
if state then
  encoded = {'metrics', encode_metrics(state.metrics), 'artifacts', state.counts.artifact,
             'annotations', state.counts.annotation}
  if #state.steps > 0 then  -- an empty table would be encoded as an object
    table.insert(encoded, 'steps')
    table.insert(encoded, cjson.encode(state.steps))
  end
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
    if keyed and event.key ~= '' then
      redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'report_seq', 1), event.key)
    end
    reply[i + 2] = last
  end
end
if encoded then
  redis.call('HSET', KEYS[1], unpack(encoded))
end
if last then
  if token ~= '' then
    redis.call('HSET', KEYS[1], 'last_event_id', last, 'last_token', token)
  else
    redis.call('HSET', KEYS[1], 'last_event_id', last)
  end
  if keyed then
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
  end
  if ended(redis.call('HGET', KEYS[1], 'status')) then
    if tonumber(ARGV[2]) > 0 then
      for _, key in ipairs(KEYS) do
        redis.call('EXPIRE', key, ARGV[2])
      end
    end
  elseif keyed and redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('EXPIRE', KEYS[3], ARGV[5])
  end
end
return reply
