"""Small helpers the benchmark scripts share (standard library only)."""
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_ready(url, proc, log=None, timeout=30, poll=0.01):
    """Polls `url`/health/ready until 200; fails when `proc` exits first,
    with the tail of `log` when there is one."""
    def tail():
        return f':\n{Path(log).read_text()[-3000:]}' if log else ''
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'{url} exited early{tail()}')
        try:
            with urllib.request.urlopen(url + '/health/ready', timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(poll)
    raise RuntimeError(f'{url} not ready{tail()}')


def stop(proc, timeout=5):
    """SIGTERM, then SIGKILL when it does not exit within `timeout`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_secs(pid):
    """User + system CPU seconds of a process."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def status_kb(pid, key, default=None):
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM, ...)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(key + ':'):
            return int(line.split()[1])
    return default


def replace_section(md_path, heading, section):
    """Replaces the Markdown section starting at `heading` (a '## ' line) up
    to the next '## ' heading with `section`, or appends it when missing."""
    section = section.strip('\n') + '\n'
    p = Path(md_path)
    text = p.read_text() if p.exists() else ''
    start = text.find('\n' + heading + '\n')
    if start < 0:
        p.write_text(text.rstrip('\n') + '\n\n' + section)
        return
    nxt = text.find('\n## ', start + 1)
    tail = '' if nxt < 0 else '\n' + text[nxt + 1:]
    p.write_text(text[:start].rstrip('\n') + '\n\n' + section + tail)
