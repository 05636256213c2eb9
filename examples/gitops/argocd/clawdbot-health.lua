-- Argo CD health of a ClawdBot (clawdbot.io/v1alpha1), from the status the
-- operator writes (operator/src/status.rs): status.observedGeneration and
-- conditions Ready, Progressing, Degraded, Paused, RuntimeReady, RedisReady,
-- DatabaseReady, StateShared, MonitoringReady, each stamped with the
-- generation it describes.
--
-- Argo CD runs this with gopher-lua (Lua 5.1) and no string library: only
-- the .. operator and tostring work on strings here.

local hs = {}

local function find(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- "Reason: message", or whichever of the two is set.
local function describe(c)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  return message
end

local generation = obj.metadata.generation
local waiting = "waiting for the operator to observe generation " .. tostring(generation)

-- Written for an older spec: the operator has not looked at the latest
-- change yet, so this says nothing about it.
local function behind(observed)
  return generation ~= nil and observed ~= nil and observed < generation
end

if obj.status == nil or obj.status.observedGeneration == nil
    or behind(obj.status.observedGeneration) then
  hs.status = "Progressing"
  hs.message = waiting
  return hs
end

local conditions = obj.status.conditions or {}
local degraded = find(conditions, "Degraded")
local paused = find(conditions, "Paused")
local ready = find(conditions, "Ready")

local function stale(c)
  return c ~= nil and behind(c.observedGeneration)
end

if stale(degraded) or stale(paused) or stale(ready) then
  hs.status = "Progressing"
  hs.message = waiting
  return hs
end

-- Degraded=True: an invalid spec, a missing Secret, a failed apply, a name
-- conflict; its reason and message say which.
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

-- spec.paused: the operator changes nothing until it is unpaused.
if paused ~= nil and paused.status == "True" then
  hs.status = "Suspended"
  hs.message = describe(paused)
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

-- Ready=False without Degraded: a rollout, or a dependency (Redis,
-- database, the runtime's pods) that is not ready yet.
hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "waiting for the Ready condition"
end
return hs
