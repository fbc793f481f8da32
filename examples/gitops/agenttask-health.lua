-- Argo CD health of an AgentTask (agenttask.dev/AgentTask), from status.phase:
--   Pending, Running, WaitingForApproval -> Progressing
--   Suspended (or spec.suspend is true)   -> Suspended
--   Succeeded                            -> Healthy
--   Failed                               -> Degraded, "<reason>: <message>"
-- Uses no standard library beyond the base one (Argo CD runs it without the others).
local hs = {}
local st = obj.status
if st == nil or st.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the task"
  return hs
end
local phase = st.phase
local reason = st.reason
local message = st.message
local suspend = obj.spec ~= nil and obj.spec.suspend == true
if suspend and phase ~= "Succeeded" and phase ~= "Failed" and phase ~= "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspending: spec.suspend is true; the step in flight finishes first"
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message or "The task succeeded"
elseif phase == "Failed" then
  hs.status = "Degraded"
  if reason ~= nil and message ~= nil then
    hs.message = reason .. ": " .. message
  else
    hs.message = reason or message or st.error or "The task failed"
  end
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = message or "Suspended (spec.suspend is true)"
elseif phase == "Pending" or phase == "Running" or phase == "WaitingForApproval" then
  hs.status = "Progressing"
  if message ~= nil then
    hs.message = phase .. ": " .. message
  else
    hs.message = phase
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
