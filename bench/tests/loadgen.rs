//! Load generator against the mock upstream: counts, modes, TTFT and the
//! no-coordinated-omission property.

use std::time::Duration;

use bytes::Bytes;
use clawdbot_bench::loadgen::{self, Config, Mode, SseScan, Target, percentile_ms};
use clawdbot_bench::mock::{Behavior, MockOptions, MockUpstream};
use hyper::Method;

fn config(mock: &MockUpstream, mode: Mode, stream: bool, secs: f64) -> Config {
    let body = format!(
        r#"{{"model":"mock-model","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    Config {
        target: Target::parse(&format!("{}/chat/completions", mock.base_url())).unwrap(),
        method: Method::POST,
        body: Bytes::from(body),
        headers: vec![loadgen::parse_header("Authorization: Bearer k").unwrap()],
        mode,
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::ZERO,
        stream,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn fixed_rate_sends_the_scheduled_count() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let rate = Mode::Rate {
        rps: 200.0,
        connections: 4,
    };
    let r = loadgen::run(config(&mock, rate, false, 1.0)).await.unwrap();
    assert_eq!(r.requests, 200);
    assert_eq!((r.errors, r.non_2xx), (0, 0));
    assert_eq!(r.rps, 200.0);
    assert!(r.p50_ms.unwrap() < 50.0);
    assert!(r.ttft_p50_ms.is_none());
    assert_eq!(mock.requests(), 200);
    assert_eq!(mock.last_authorization().as_deref(), Some("Bearer k"));
}

#[tokio::test]
async fn warmup_is_not_counted() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut cfg = config(
        &mock,
        Mode::Rate {
            rps: 100.0,
            connections: 2,
        },
        false,
        0.5,
    );
    cfg.warmup = Duration::from_millis(500);
    let r = loadgen::run(cfg).await.unwrap();
    assert_eq!(r.requests, 50);
    assert_eq!(mock.requests(), 100);
}

#[tokio::test]
async fn closed_loop_and_statuses() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let closed = Mode::Closed { connections: 4 };
    let r = loadgen::run(config(&mock, closed, false, 0.3))
        .await
        .unwrap();
    assert!(r.requests > 100, "{r:?}");
    assert_eq!(r.errors, 0);

    mock.set_default(Behavior::Status(500));
    let r = loadgen::run(config(&mock, closed, false, 0.2))
        .await
        .unwrap();
    assert!(r.requests > 0);
    assert_eq!(r.non_2xx, r.requests);
    assert_eq!(r.rps, 0.0);
    assert!(r.p50_ms.is_none(), "latency covers 2xx only");
}

#[tokio::test]
async fn streaming_reports_ttft() {
    let opts = MockOptions {
        reply: "one two three four".into(),
        chunk_delay: Duration::from_millis(20),
        ..MockOptions::default()
    };
    let mock = MockUpstream::start(opts).await.unwrap();
    let rate = Mode::Rate {
        rps: 20.0,
        connections: 8,
    };
    let r = loadgen::run(config(&mock, rate, true, 0.5)).await.unwrap();
    assert_eq!(r.requests, 10);
    let ttft = r.ttft_p50_ms.unwrap();
    let total = r.p50_ms.unwrap();
    assert!((20.0..60.0).contains(&ttft), "ttft {ttft}");
    assert!(total >= 80.0 && total > ttft * 2.0, "total {total}");
    assert!(
        mock.wait_for(|m| m.streams_completed() == 10, Duration::from_secs(2))
            .await
    );
}

/// One connection and a 50 ms server at 40 req/s: the backlog must show
/// up in latency instead of the generator quietly slowing down.
#[tokio::test]
async fn backlog_counts_from_due_time() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    mock.set_default(Behavior::Slow(Duration::from_millis(50)));
    let rate = Mode::Rate {
        rps: 40.0,
        connections: 1,
    };
    let r = loadgen::run(config(&mock, rate, false, 1.0)).await.unwrap();
    // 40 due in 1 s; ~20 served per second, the rest late or cut by grace.
    assert!(r.requests + r.errors == 40, "{r:?}");
    assert!(r.max_ms.unwrap() > 400.0, "{r:?}");
    assert!(r.p90_ms.unwrap() > 300.0, "{r:?}");
}

#[tokio::test]
async fn hung_requests_time_out_as_errors() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    mock.set_default(Behavior::Hang);
    let mut cfg = config(
        &mock,
        Mode::Rate {
            rps: 10.0,
            connections: 4,
        },
        false,
        0.3,
    );
    cfg.timeout = Duration::from_millis(100);
    let r = loadgen::run(cfg).await.unwrap();
    assert_eq!(r.requests, 0);
    assert_eq!(r.errors, 3);
}

#[test]
fn targets_must_be_loopback() {
    let t = Target::parse("http://127.0.0.1:8080/v1/chat/completions?x=1").unwrap();
    assert_eq!(t.addr.port(), 8080);
    assert_eq!(t.host, "127.0.0.1:8080");
    assert_eq!(t.path_and_query, "/v1/chat/completions?x=1");
    assert_eq!(Target::parse("http://[::1]:9/").unwrap().addr.port(), 9);
    assert_eq!(Target::parse("http://127.0.0.2").unwrap().addr.port(), 80);
    for bad in [
        "http://10.0.0.1/",
        "http://192.168.1.1:80/",
        "http://8.8.8.8/",
        "https://127.0.0.1/",
        "http://user@127.0.0.1/",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn sse_scan_finds_first_content_delta() {
    let mut s = SseScan::default();
    assert!(
        !s.feed(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
    );
    assert!(!s.feed(b": comment\n\ndata: {\"choices\":[{\"delta\":{\"cont"));
    assert!(s.feed(b"ent\":\"Hi\"}}]}\n\n"));
    let mut crlf = SseScan::default();
    assert!(crlf.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\n"));
    assert!(!SseScan::default().feed(b"data: [DONE]\n\n"));
}

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
    assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
    assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
    assert_eq!(percentile_ms(&v, 1.0), Some(100.0));
    assert_eq!(percentile_ms(&[], 0.5), None);
}

fn pool(n: usize) -> std::sync::Arc<[loadgen::Prepared]> {
    (0..n)
        .map(|i| loadgen::Prepared {
            path: if i % 2 == 0 {
                "/v1/chat/completions".into()
            } else {
                "/chat/completions".into()
            },
            body: Bytes::from(format!(
                r#"{{"model":"mock-model","messages":[{{"role":"user","content":"m{i}"}}]}}"#
            )),
            headers: vec![loadgen::parse_header(&format!("X-Item: {i}")).unwrap()],
        })
        .collect()
}

#[tokio::test]
async fn each_request_is_the_next_pool_item() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let rate = Mode::Rate {
        rps: 100.0,
        connections: 2,
    };
    let (r, used) = loadgen::run_each(config(&mock, rate, false, 0.5), pool(60))
        .await
        .unwrap();
    assert_eq!(r.requests, 50);
    assert_eq!(r.statuses.unwrap().get(&200), Some(&50));
    assert_eq!((used.built, used.sent, used.ok), (60, 50, 50));
    assert!(!used.exhausted);
    // The last one sent is item 49, not the config's body.
    let last = mock.last_request().unwrap();
    assert_eq!(last["messages"][0]["content"], "m49");
    // `run` leaves the status map out of its JSON.
    let plain = loadgen::run(config(&mock, rate, false, 0.1)).await.unwrap();
    assert!(plain.statuses.is_none());
    assert!(!serde_json::to_string(&plain).unwrap().contains("statuses"));
}

#[tokio::test]
async fn a_pool_that_runs_out_cuts_the_window_short() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let closed = Mode::Closed { connections: 2 };
    let (r, used) = loadgen::run_each(config(&mock, closed, false, 5.0), pool(300))
        .await
        .unwrap();
    assert!(used.exhausted, "{used:?}");
    assert_eq!((used.sent, used.ok, r.requests), (300, 300, 300));
    assert!(r.duration_s < 5.0, "{r:?}");
    assert_eq!(mock.requests(), 300);

    // Out during the warm-up: an error, not a report.
    let mut cfg = config(&mock, Mode::Closed { connections: 2 }, false, 1.0);
    cfg.warmup = Duration::from_secs(5);
    assert!(loadgen::run_each(cfg, pool(10)).await.is_err());
}
