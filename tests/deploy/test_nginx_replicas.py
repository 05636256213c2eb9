"""Two bot-runtime replicas behind examples/nginx/clawdbot.conf, over TLS.

(a) a session continues across replicas (Redis-shared history);
(b) streams arrive token by token through nginx;
(c) SIGTERM to one replica under load loses no acknowledged exchange, and
    nginx fails over so clients see (almost) no errors.

The failover test stops replica B: it stays last in this file.
"""

from __future__ import annotations

import http.client
import json
import ssl
import statistics
import threading
import time
import uuid

import pytest

from conftest import (
    ADMIN_KEY,
    API_KEY,
    CHUNK_DELAY_MS,
    MODEL,
    REPLY,
    Cluster,
    fail,
    psql,
    render_nginx_site,
    start_nginx,
    make_cert,
    SERVER_NAME,
)
import pyharness as ph


# --- HTTP over plain TCP (straight to a replica) or TLS (through nginx) -------


def connect(cluster: Cluster, target: str, timeout: float = 30) -> http.client.HTTPConnection:
    """`target`: "nginx" (HTTPS, certificate verified) or a replica's name."""
    if target == "nginx":
        conn = http.client.HTTPSConnection(
            "127.0.0.1", cluster.nginx.https_port, timeout=timeout, context=cluster.nginx.tls_context()
        )
        return conn
    replica = next(r for r in cluster.replicas if r.name == target)
    return http.client.HTTPConnection("127.0.0.1", replica.port, timeout=timeout)


def headers(key: str = API_KEY) -> dict[str, str]:
    # Host: the certificate's name, as a browser would send it.
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Host": SERVER_NAME}


def chat(conn: http.client.HTTPConnection, body: dict) -> tuple[int, dict, dict]:
    conn.request("POST", "/api/v1/chat", body=json.dumps(body), headers=headers())
    resp = conn.getresponse()
    raw = resp.read()
    try:
        data = json.loads(raw)
    except ValueError:
        data = {"raw": raw[:500].decode(errors="replace")}
    return resp.status, dict(resp.getheaders()), data


def words(text: str) -> int:
    return len(text.split())


# --- (a) sessions across replicas --------------------------------------------


def test_session_continues_on_the_other_replica(cluster: Cluster):
    """Turn 1 on replica A, turn 2 on replica B (straight to each port): B
    finds the session in Redis and sends the model the whole history."""
    a, b = connect(cluster, "replica-a"), connect(cluster, "replica-b")
    m1 = f"first turn on replica A {uuid.uuid4().hex}"
    status, _, first = chat(a, {"message": m1})
    assert status == 200, first
    assert first["reply"] == REPLY
    session = first["session_id"]

    m2 = "second turn asked of replica B"
    status, _, second = chat(b, {"message": m2, "session_id": session})
    assert status == 200, f"replica B did not continue replica A's session: {second}"
    assert second["session_id"] == session

    # The mock counts the words of every message it is sent. Against the same
    # question in a new session, turn 2 carries turn 1's question and answer.
    status, _, fresh = chat(b, {"message": m2})
    assert status == 200, fresh
    extra = second["usage"]["prompt_tokens"] - fresh["usage"]["prompt_tokens"]
    assert extra == words(m1) + words(REPLY), (
        f"turn 2 on B sent {extra} more prompt words than a fresh session; "
        f"turn 1 had {words(m1)} + {words(REPLY)}: B did not see A's history"
    )

    # And the log has both exchanges in order, read through either replica.
    # A replica waits for its own just-queued exchanges before reading, not
    # for the other's (the log is written off the request path, within
    # logs.flush_interval_ms): poll for a moment.
    expected = [("user", m1), ("assistant", REPLY), ("user", m2), ("assistant", REPLY)]
    for conn, patience in ((b, 3.0), (a, 3.0)):
        deadline = time.monotonic() + patience
        while True:
            conn.request("GET", f"/api/v1/sessions/{session}/messages", headers=headers())
            resp = conn.getresponse()
            msgs = json.loads(resp.read())
            assert resp.status == 200, msgs
            got = [(m["role"], m["content"]) for m in msgs["messages"]]
            if got == expected or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        assert got == expected


def test_session_hops_replicas_through_nginx(cluster: Cluster):
    """The same through nginx's round robin: consecutive turns of one session
    land on different replicas (nginx's access log names the upstream of each
    request id) and every turn sees all earlier ones."""
    conn = connect(cluster, "nginx")
    session = None
    history_words = 0
    upstreams = []
    for turn in range(4):
        message = f"turn {turn} through nginx"
        body = {"message": message} if session is None else {"message": message, "session_id": session}
        status, hdrs, data = chat(conn, body)
        assert status == 200, data
        session = data["session_id"]
        history_words += words(message)
        # The runtime echoes nginx's $request_id (X-Request-Id) back.
        rid = {k.lower(): v for k, v in hdrs.items()}.get("x-request-id")
        assert rid, f"no X-Request-Id in {hdrs}"
        hops = cluster.nginx.upstream_of(rid)
        assert len(hops) == 1, f"turn {turn} was retried: {hops}"
        upstreams.append(hops[0])
        assert data["usage"]["prompt_tokens"] >= history_words, data
        history_words += words(REPLY)
    replicas = {cluster.replica_by_addr(u).name for u in upstreams}
    assert replicas == {"replica-a", "replica-b"}, f"all turns on one replica: {upstreams}"
    crossings = sum(1 for x, y in zip(upstreams, upstreams[1:]) if x != y)
    assert crossings >= 1, upstreams


def test_http_redirects_to_https_and_metrics_stay_private(cluster: Cluster):
    plain = http.client.HTTPConnection("127.0.0.1", cluster.nginx.http_port, timeout=10)
    plain.request("GET", "/api/v1/chat?x=1", headers={"Host": SERVER_NAME})
    resp = plain.getresponse()
    resp.read()
    assert resp.status == 301
    assert resp.getheader("Location") == f"https://{SERVER_NAME}/api/v1/chat?x=1"

    conn = connect(cluster, "nginx")
    conn.request("GET", "/metrics", headers={"Host": SERVER_NAME})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404, "nginx serves /metrics publicly"
    conn.request("GET", "/health/ready", headers={"Host": SERVER_NAME})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert resp.getheader("Strict-Transport-Security"), "no HSTS header"
    # The replicas' own metrics port has them.
    r = cluster.replicas[0]
    m = http.client.HTTPConnection("127.0.0.1", r.metrics_port, timeout=10)
    m.request("GET", "/metrics")
    resp = m.getresponse()
    assert resp.status == 200 and b"clawdbot_http_request_duration_seconds" in resp.read()


def tls_handshake(cluster: Cluster, version: ssl.TLSVersion) -> str:
    """Handshakes with exactly `version`: the protocol agreed, or the error."""
    ctx = cluster.nginx.tls_context()
    # OpenSSL 3 will not offer TLS 1.0/1.1 at its default security level;
    # level 0 lets this client offer them, so a refusal is nginx's.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = version
    conn = http.client.HTTPSConnection("127.0.0.1", cluster.nginx.https_port, timeout=10, context=ctx)
    try:
        conn.connect()
        return conn.sock.version()
    except ssl.SSLError as exc:
        return f"refused: {exc}"
    finally:
        conn.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_only_tls_1_2_and_1_3(cluster: Cluster):
    assert tls_handshake(cluster, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert tls_handshake(cluster, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        outcome = tls_handshake(cluster, old)
        # The server's alert, not a client that could not offer the version.
        assert "ALERT_PROTOCOL_VERSION" in outcome.upper(), outcome


# --- (b) streams token by token ----------------------------------------------


def stream_arrivals(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[list[float], float, str]:
    """Sends a streaming request; returns the arrival time (s after the
    request went out) of each content event, the time the stream ended, and
    the text put together from the events."""
    t0 = time.monotonic()
    conn.request("POST", path, body=json.dumps(body), headers=headers())
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:500]
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    arrivals, text, event = [], [], None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                continue
            obj = json.loads(data)
            piece = None
            if path == "/api/v1/chat" and event == "delta":
                piece = obj["content"]
            elif path == "/v1/chat/completions" and obj.get("choices"):
                piece = obj["choices"][0].get("delta", {}).get("content")
            if piece:
                arrivals.append(time.monotonic() - t0)
                text.append(piece)
    return arrivals, time.monotonic() - t0, "".join(text)


STREAMS = {
    "/api/v1/chat": {"message": "stream me an answer", "stream": True},
    "/v1/chat/completions": {
        "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "stream me an answer"}],
    },
}


def assert_spread(arrivals: list[float], end: float, text: str, label: str) -> None:
    n = len(arrivals)
    assert text == REPLY, f"{label}: text {text!r}"
    assert n >= 8, f"{label}: only {n} content events"
    gaps = [y - x for x, y in zip(arrivals, arrivals[1:])]
    spread = arrivals[-1] - arrivals[0]
    timeline = ", ".join(f"{t * 1000:.0f}" for t in arrivals)
    # The mock waits CHUNK_DELAY_MS before each chunk: forwarded as they come,
    # they span about (n-1) delays; buffered, they arrive in one burst.
    assert spread >= 0.5 * (n - 1) * CHUNK_DELAY_MS / 1000, (
        f"{label}: {n} chunks arrived within {spread * 1000:.0f} ms (ms: {timeline}): buffered"
    )
    assert statistics.median(gaps) >= 0.5 * CHUNK_DELAY_MS / 1000, f"{label}: gaps bunched (ms: {timeline})"
    # The first token is out long before the stream ends.
    assert end - arrivals[0] >= 0.5 * spread, f"{label}: first token only at the end (ms: {timeline})"


@pytest.mark.parametrize("path", list(STREAMS))
def test_stream_arrives_token_by_token_through_nginx(cluster: Cluster, path: str):
    conn = connect(cluster, "nginx")
    arrivals, end, text = stream_arrivals(conn, path, STREAMS[path])
    assert_spread(arrivals, end, text, f"{path} through nginx (TLS)")


def test_the_timing_check_detects_a_buffering_proxy(cluster: Cluster, tmp_path):
    """Control: the same file with response buffering forced on (and the
    runtime's X-Accel-Buffering ignored) delivers the stream in one burst, and
    the check above would say so. Without this the test could not fail."""
    cert, key = make_cert(tmp_path)
    http_port, https_port = ph.free_port(), ph.free_port()
    site = render_nginx_site([r.port for r in cluster.replicas], http_port, https_port, cert, key, tmp_path)
    site = site.replace("proxy_buffering off;", "proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;")
    ngx = start_nginx(tmp_path, site, cert, http_port, https_port)
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", https_port, timeout=30, context=ngx.tls_context())
        arrivals, end, text = stream_arrivals(conn, "/api/v1/chat", STREAMS["/api/v1/chat"])
        with pytest.raises(AssertionError):
            assert_spread(arrivals, end, text, "buffering control")
    finally:
        ph.stop(ngx.service.proc)


# --- (c) SIGTERM under load: nothing acknowledged is lost --------------------


def test_sigterm_under_load_loses_no_acknowledged_exchange(cluster: Cluster):
    """Clients chat through nginx (new sessions, streamed and not) while
    replica B gets SIGTERM. Every exchange a client saw complete (200 with a
    reply, or a stream's `done` event) is in PostgreSQL exactly once; nginx
    sends what B refuses while draining, and everything after B is gone, to A."""
    stop_at = threading.Event()
    lock = threading.Lock()
    acked: list[str] = []
    failed: list[tuple[str, str]] = []
    sent_after_exit: list[str] = []
    b = next(r for r in cluster.replicas if r.name == "replica-b")
    b_exited = threading.Event()

    def worker(w: int) -> None:
        conn = connect(cluster, "nginx", timeout=20)
        i = 0
        while not stop_at.is_set() and i < 2000:
            message = f"failover {cluster.key_prefix} w{w} n{i}"
            streamed = i % 2 == 1
            i += 1
            try:
                conn.request("POST", "/api/v1/chat", headers=headers(),
                             body=json.dumps({"message": message, "stream": streamed}))
                resp = conn.getresponse()
                raw = resp.read()
                ok = resp.status == 200 and (
                    b"event: done" in raw if streamed else json.loads(raw).get("reply") == REPLY
                )
                outcome = f"HTTP {resp.status}: {raw[-300:]!r}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                ok, outcome = False, repr(exc)
                conn.close()
                conn = connect(cluster, "nginx", timeout=20)
            with lock:
                (acked if ok else failed).append(message if ok else (message, outcome))
                if ok and b_exited.is_set():
                    sent_after_exit.append(message)
            time.sleep(0.005)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(4)]
    access_before = cluster.nginx.access_log.stat().st_size
    for t in threads:
        t.start()
    time.sleep(1.5)
    with lock:
        before_term = len(acked)

    # A stream held open on B straight to its port: B keeps draining while it
    # runs (~0.5 s), answering 503 to what nginx sends it meanwhile. It must
    # finish and be logged.
    held = f"failover {cluster.key_prefix} held stream on B"
    held_started, held_done = threading.Event(), threading.Event()

    def hold() -> None:
        conn = connect(cluster, "replica-b")
        conn.request("POST", "/api/v1/chat", headers=headers(), body=json.dumps({"message": held, "stream": True}))
        resp = conn.getresponse()
        body = b""
        while chunk := resp.read1(4096):
            body += chunk
            if b"event: delta" in body:
                held_started.set()
        if b"event: done" in body:
            with lock:
                acked.append(held)
            held_done.set()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held_started.wait(10), "the held stream on B did not start"
    b.service.proc.terminate()
    try:
        code = b.service.proc.wait(timeout=20)
    except Exception:
        fail("replica B did not exit within 20 s of SIGTERM")
    b_exited.set()
    time.sleep(1.5)
    stop_at.set()
    for t in threads:
        t.join(timeout=30)
    holder.join(timeout=10)
    assert code == 0, f"replica B exited with status {code}"
    assert held_done.is_set(), "the stream in flight on B when it got SIGTERM did not finish"
    assert before_term >= 20, f"only {before_term} exchanges before SIGTERM: no load"
    assert len(sent_after_exit) >= 10, "replica A did not take over after B exited"

    # Both replicas answered before the stop (nginx spread the load).
    with cluster.nginx.access_log.open() as f:
        f.seek(access_before)
        lines = [l for l in f.read().splitlines() if "POST /api/v1/chat" in l]
    answered_by = {l.split("upstream=")[1].split(" ")[0].rstrip(",") for l in lines}
    assert {f"127.0.0.1:{r.port}" for r in cluster.replicas} <= answered_by, answered_by
    retried = [l for l in lines if ", " in l.split("upstream=")[1].split(" ustatus=")[0]]
    refused_by_drain = [l for l in retried if "ustatus=503, " in l]

    # Nothing acknowledged is missing; nothing is logged twice. The replicas
    # flush the log within milliseconds (B before it exits): poll briefly.
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 10
    while True:
        rows = psql(
            cluster.database,
            f"SELECT user_input, count(*) FROM conversation_logs "
            f"WHERE user_input LIKE 'failover {cluster.key_prefix}%' GROUP BY user_input",
        )
        counts = {line.rsplit("|", 1)[0]: int(line.rsplit("|", 1)[1]) for line in rows.splitlines() if line}
        missing = [m for m in acked if counts.get(m, 0) == 0]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    spill = [p for r in cluster.replicas for p in (cluster.workdir / r.name).rglob("log-spill*")]
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged exchanges are not in conversation_logs "
        f"(spill files: {[(str(p), p.stat().st_size) for p in spill]}); first: {missing[:5]}"
    )
    duplicated = {m: c for m, c in counts.items() if c > 1}
    assert not duplicated, f"exchanges logged more than once: {list(duplicated.items())[:5]}"

    # Failover: a draining replica's 503 and a stopped one's refused
    # connections are retried on A by nginx, so no client saw an error.
    assert not failed, (
        f"{len(failed)} of {len(acked) + len(failed)} requests failed during the stop "
        f"(nginx retried {len(retried)}): {failed[:5]}"
    )
    assert refused_by_drain, f"no request met B's draining 503 (retries: {retried})"
    print(
        f"\nfailover: {len(acked)} acknowledged, {len(failed)} failed, {len(retried)} retried by nginx, "
        f"({len(refused_by_drain)} after B's draining 503), {len(sent_after_exit)} after B exited"
    )
