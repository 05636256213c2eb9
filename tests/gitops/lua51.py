"""Runs an Argo CD health script with Lua 5.1, the dialect of Argo CD's gopher-lua.

    from lua51 import health
    health(script_text, {'apiVersion': 'clawdbot.io/v1alpha1', ...})  # -> {'status': ..., 'message': ...}

The object becomes a Lua table literal assigned to the global `obj`. The script
runs in an environment like Argo CD's: the base and table libraries only (no
string, math, io, os or debug library) and no methods on strings, so a script
that leans on the string library fails here as it would in Argo CD.
"""
import math
import os
import shutil
import subprocess
import tempfile

LUA = os.environ.get('LUA51', '/usr/bin/lua5.1')


def lua51():
    """The interpreter's path. Missing, the tests fail rather than skip: a
    health check nobody ran is not known to work."""
    path = LUA if os.access(LUA, os.X_OK) else shutil.which('lua5.1')
    assert path, f'{LUA} not found: install Lua 5.1 (Debian package lua5.1) or set LUA51'
    return path


def quote(s):
    """A Lua 5.1 string literal for `s`: printable ASCII as is, every other
    byte of its UTF-8 as a three-digit decimal escape (Lua 5.1 has no \\x or
    \\u escapes; three digits keep a following digit out of the escape)."""
    out = ['"']
    for b in s.encode('utf-8'):
        c = chr(b)
        if c in '"\\':
            out.append('\\' + c)
        elif 0x20 <= b < 0x7f:
            out.append(c)
        else:
            out.append('\\%03d' % b)
    out.append('"')
    return ''.join(out)


def literal(value):
    """A Lua 5.1 expression for a JSON-like value: objects become tables
    keyed by strings, arrays sequences (from 1), null in an object a missing
    key, as Argo CD converts a Kubernetes object."""
    if value is None:
        return 'nil'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f'{value} has no JSON form')
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f'object key {k!r} is not a string')
            if v is not None:
                items.append(f'[{quote(k)}] = {literal(v)}')
        return '{' + ', '.join(items) + '}'
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            # A nil would end the sequence early for ipairs and #.
            raise ValueError('null inside an array has no Lua sequence form')
        return '{' + ', '.join(literal(v) for v in value) + '}'
    raise TypeError(f'{type(value).__name__} has no JSON form')


# Runs the script with `obj` in an environment holding the base and table
# libraries only, then writes status NUL message NUL. The string metatable's
# __index is taken away meanwhile, so ("x"):len() fails as in Argo CD.
HARNESS = r'''
local script_path = ...
local write = io.write
local chunk = assert(loadfile(script_path))
local env = { table = table }
local hidden = { string = true, math = true, io = true, os = true,
                 debug = true, coroutine = true, package = true, _G = true }
for k, v in pairs(_G) do
  if not hidden[k] then env[k] = v end
end
env._G = env
env.obj = OBJ
setfenv(chunk, env)
local strings = getmetatable("")
local index = strings.__index
strings.__index = nil
local ok, hs = pcall(chunk)
strings.__index = index
if not ok then error(hs, 0) end
if type(hs) ~= "table" then error("the script returned " .. type(hs) .. ", not a table", 0) end
for k in pairs(hs) do
  if k ~= "status" and k ~= "message" then error("unexpected field " .. tostring(k), 0) end
end
if type(hs.status) ~= "string" then error("hs.status is " .. type(hs.status), 0) end
if hs.message ~= nil and type(hs.message) ~= "string" then error("hs.message is " .. type(hs.message), 0) end
write(hs.status, "\0", hs.message or "", "\0")
'''


def run(script_text, obj):
    """(returncode, stdout bytes, stderr text) of running the script on obj."""
    lua = lua51()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, 'health.lua')
        harness = os.path.join(tmp, 'harness.lua')
        with open(script, 'w', encoding='utf-8') as f:
            f.write(script_text)
        with open(harness, 'w', encoding='utf-8') as f:
            f.write('OBJ = ' + literal(obj) + '\n' + HARNESS)
        p = subprocess.run([lua, harness, script], capture_output=True, timeout=30)
    return p.returncode, p.stdout, p.stderr.decode('utf-8', 'replace')


def health(script_text, obj):
    """{'status', 'message'} the script returns for obj; AssertionError with
    Lua's message when the script fails."""
    rc, out, err = run(script_text, obj)
    assert rc == 0, f'lua failed ({rc}): {err.strip()}'
    parts = out.split(b'\0')
    assert len(parts) == 3 and parts[2] == b'', f'unexpected output {out!r}'
    return {'status': parts[0].decode('utf-8'), 'message': parts[1].decode('utf-8')}


def echo(value):
    """Runs `io.write(<literal(value)>)` and returns the bytes written: checks
    that a string survives quote() unchanged."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'echo.lua')
        with open(path, 'w', encoding='utf-8') as f:
            f.write('io.write(' + literal(value) + ')\n')
        p = subprocess.run([lua51(), path], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode('utf-8', 'replace')
    return p.stdout
