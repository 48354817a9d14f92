package redis

import goredis "github.com/redis/go-redis/v9"

// Generations are uint64 (a login time in nanoseconds is a typical proposal), past the 2^53 a
// Lua number holds exactly, so the scripts keep them as decimal strings: compared by length then
// bytes, and incremented digit by digit.
const luaLib = `
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function inc(s)
  local out, carry = {}, 1
  for i = #s, 1, -1 do
    local d = string.byte(s, i) - 48 + carry
    if d == 10 then d = 0; carry = 1 else carry = 0 end
    out[i] = string.char(48 + d)
  end
  local r = table.concat(out)
  if carry == 1 then r = '1' .. r end
  return r
end
local function gen_of(e)
  return string.match(e, '^(%d+)|')
end
`

// claimScript: KEYS device hash, groups set, pending hash; ARGV proposed gen, conn, instance,
// user, now (ms). Assigns max(proposed, last+1), writes the entry, keeps the groups and the
// pending messages (no linger while claimed; the pending hash lives until its last message
// expires), drops expired messages. Returns {gen, previous entry or ”, previous user or ”,
// groups, {id, value, ...}}.
var claimScript = goredis.NewScript(luaLib + `
local cur = redis.call('HMGET', KEYS[1], 'e', 'n', 'u')
local prev, last, prevUser = cur[1], cur[2], cur[3]
if prev then
  local pg = gen_of(prev)
  if pg and (not last or gt(pg, last)) then last = pg end
end
local gen = ARGV[1]
local nx = inc(last or '0')
if gt(nx, gen) then gen = nx end
redis.call('HSET', KEYS[1], 'e', gen .. '|' .. ARGV[2] .. '|' .. ARGV[3], 'n', gen, 'u', ARGV[4])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
local now = tonumber(ARGV[5])
local pend, maxexp = {}, 0
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local v = all[i + 1]
  local _, exp = string.match(v, '^(%d+)|(%d+)|')
  exp = tonumber(exp or '0')
  if exp <= now then
    redis.call('HDEL', KEYS[3], all[i])
  else
    pend[#pend + 1] = all[i]
    pend[#pend + 1] = v
    if exp > maxexp then maxexp = exp end
  end
end
if maxexp > 0 then redis.call('PEXPIREAT', KEYS[3], maxexp) end
return {gen, prev or '', prevUser or '', redis.call('SMEMBERS', KEYS[2]), pend}
`)

// releaseScript: KEYS device hash, groups set, pending hash; ARGV entry, linger (ms). Removes the
// entry only while it still is ARGV[1], then lets the device's keys linger (the pending hash
// keeps a shorter expiry of its own). Returns 1 when removed.
var releaseScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'e') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'e')
local l = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], l)
redis.call('PEXPIRE', KEYS[2], l)
local t = redis.call('PTTL', KEYS[3])
if t == -1 or t > l then redis.call('PEXPIRE', KEYS[3], l) end
return 1
`)

// refreshScript: KEYS device hash, groups set; ARGV gen, conn, instance, user. Writes the entry
// back unless the device has a newer generation (current, or last given). Returns 1 when
// written.
var refreshScript = goredis.NewScript(luaLib + `
local cur = redis.call('HMGET', KEYS[1], 'e', 'n')
local gen = ARGV[1]
if cur[1] then
  local g = gen_of(cur[1])
  if g and gt(g, gen) then return 0 end
elseif cur[2] and gt(cur[2], gen) then
  return 0
end
redis.call('HSET', KEYS[1], 'e', gen .. '|' .. ARGV[2] .. '|' .. ARGV[3], 'u', ARGV[4])
if not cur[2] or gt(gen, cur[2]) then redis.call('HSET', KEYS[1], 'n', gen) end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
return 1
`)

// userSetScript: KEYS user hash; ARGV device, entry, gen. Sets the user's field for the device
// unless it holds a newer generation.
var userSetScript = goredis.NewScript(luaLib + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local g = gen_of(cur)
  if g and gt(g, ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

// userDelScript: KEYS user hash; ARGV device, entry. Removes the field only while it is entry.
var userDelScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
`)

// memberScript: KEYS device hash, groups set; ARGV group, '1' to join or '0' to leave, default
// linger (ms). A device with no connection has its groups linger with its record (or for the
// default linger when the store has no record).
var memberScript = goredis.NewScript(`
if ARGV[2] ~= '1' then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'e') == 1 then return 1 end
local t = redis.call('PTTL', KEYS[1])
if t < 0 then t = tonumber(ARGV[3]) end
redis.call('PEXPIRE', KEYS[2], t)
return 1
`)

// pendingScript: KEYS device hash, pending hash; ARGV id, expires (ms), data, now (ms), default
// linger (ms). Stores "seq|expires|data" (seq orders the messages). A claimed device's pending
// hash lives until its last message expires; an unclaimed device's lingers with its record.
var pendingScript = goredis.NewScript(`
local exp = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
if exp <= now then return 0 end
local connected = redis.call('HEXISTS', KEYS[1], 'e') == 1
local ht = redis.call('PTTL', KEYS[1])
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', seq) .. '|' .. ARGV[2] .. '|' .. ARGV[3])
if connected then
  local t = redis.call('PTTL', KEYS[2])
  if t == -1 or now + t < exp then redis.call('PEXPIREAT', KEYS[2], exp) end
else
  if ht < 0 then
    ht = tonumber(ARGV[5])
    redis.call('PEXPIRE', KEYS[1], ht)
  end
  redis.call('PEXPIRE', KEYS[2], ht)
end
return 1
`)

// instancesScript: KEYS registry hash, expiry sorted set; ARGV now (ms). Drops the lapsed
// registrations and returns the live ones' JSON.
var instancesScript = goredis.NewScript(`
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for i = 1, #dead do redis.call('HDEL', KEYS[1], dead[i]) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1]) end
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(live))
`)

// allScripts are loaded together when the server is found without one.
var allScripts = []*goredis.Script{claimScript, releaseScript, refreshScript, userSetScript, userDelScript, memberScript, pendingScript, instancesScript}
