-- A job's hash with its first event, in the scripts that create a job (store.load_script
-- joins them). job_key: the job hash; events_key: its event stream (same hash tag, same
-- slot); maxlen: the stream's approximate MAXLEN; event_type, data: the first event;
-- fields: the hash's field, value pairs. Returns the entry ID of the first event.
local function new_job(job_key, events_key, maxlen, event_type, data, fields)
  local id = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'type', event_type, 'data', data)
  redis.call('HSET', job_key, unpack(fields))
  redis.call('HSET', job_key, 'last_event_id', id)
  return id
end
