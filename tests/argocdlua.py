"""Run an Argo CD health check (Lua) the way Argo CD does, with a real Lua interpreter.

Argo CD (``util/lua/lua.go``) runs health scripts in gopher-lua, a Lua 5.1: a fresh state
per call with only the base, package and table libraries (and a restricted ``os``) unless the
customization sets ``useOpenLibs``; the object as the global ``obj`` (JSON numbers as Lua
numbers, arrays as 1-based tables, null as absent); the script's returned table is encoded to
JSON and read as ``{status, message}``; a status outside Argo CD's list becomes ``Unknown``
with "Lua returned an invalid health status". Here: lupa's Lua 5.1 with the other libraries
removed, string methods included (``("x"):sub`` fails as it does there).
"""

from __future__ import annotations

from typing import Any

import lupa.lua51 as lua51

STATUSES = ("Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing")
INVALID = "Lua returned an invalid health status"
REMOVED = ("string", "math", "io", "debug", "coroutine", "os", "utf8")


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        table = runtime.table()
        for k, v in value.items():
            if v is not None:
                table[k] = _to_lua(runtime, v)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for i, v in enumerate(value, start=1):
            table[i] = _to_lua(runtime, v)
        return table
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    return float(value)


def health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """``{"status", "message"}`` as Argo CD would show it for ``obj``."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    # No string methods and no libraries beyond base/package/table, as in Argo CD.
    runtime.execute('local mt = getmetatable("") if mt then mt.__index = nil end')
    g = runtime.globals()
    for name in REMOVED:
        g[name] = None
    g["obj"] = _to_lua(runtime, obj)
    result = runtime.execute(script)
    if lua51.lua_type(result) != "table":
        raise TypeError(f"expect table output from Lua script, not {lua51.lua_type(result)}")
    out = {str(k): v for k, v in result.items()}
    status, message = out.get("status"), out.get("message")
    if status not in STATUSES:
        return {"status": "Unknown", "message": INVALID}
    return {"status": str(status), "message": "" if message is None else str(message)}
