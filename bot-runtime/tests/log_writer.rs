//! The batched log writer under faults: a database that is down, cut
//! mid-load (through a TCP proxy inside the test, so other tests on the
//! same server are undisturbed) and restored, a full queue, corrupt spill
//! lines, and spill files replayed across a restart.

mod logdb;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bot_runtime::convlog::{Exchange, LogStore};
use bot_runtime::support::timefmt::now_ms;
use logdb::*;
use tokio::net::{TcpListener, TcpStream};

/// Nothing listens here: connections are refused at once.
const DEAD_DB: &str = "postgres://postgres@127.0.0.1:1/none";

fn spill_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn no_spill_left(path: &Path) -> bool {
    let mut replaying = path.as_os_str().to_owned();
    replaying.push(".replaying");
    !path.exists() && !Path::new(&replaying).exists()
}

#[tokio::test]
async fn spilled_exchanges_are_replayed_at_the_next_start_exactly_once() {
    for engine in ENGINES {
        let dir = common_dir();
        let spill = dir.join("spill.jsonl");
        let m = metrics();
        let down = writer(DEAD_DB, &spill, &fast_logs_config(), m.clone());
        let batch: Vec<_> = (0..300)
            .map(|i| exchange("s1", Some("u"), now_ms() + i))
            .collect();
        for e in &batch {
            down.submit(e.clone()).await;
        }
        down.drain(Duration::from_secs(3)).await;
        assert_eq!(spill_lines(&spill), 300, "{engine:?}: all spilled, fsynced");
        assert_eq!(m.spilled.get(), 300);
        assert!(m.write_failures.get() > 0);
        assert_eq!(m.queue_depth.get(), 0);

        // Some lines twice, as after a replay cut short and spilled again.
        let again: String = batch[..40]
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&spill)
            .and_then(|mut f| std::io::Write::write_all(&mut f, again.as_bytes()))
            .unwrap();

        let db = TestDb::create(engine).await;
        let up = writer(&db.url, &spill, &fast_logs_config(), metrics());
        assert!(
            eventually(Duration::from_secs(20), || async { no_spill_left(&spill) }).await,
            "{engine:?}: replayed at start"
        );
        up.drain(Duration::from_secs(3)).await;
        let store = db.store().await;
        let ids = all_ids(&store).await;
        assert_eq!(ids.len(), 300, "{engine:?}: no duplicates");
        let want: HashSet<_> = batch.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.into_iter().collect::<HashSet<_>>(), want);
    }
}

#[tokio::test]
async fn corrupt_spill_lines_are_skipped_and_the_rest_replayed() {
    for engine in ENGINES {
        let dir = common_dir();
        let spill = dir.join("spill.jsonl");
        let good: Vec<_> = (0..3).map(|i| exchange("s", None, now_ms() + i)).collect();
        let mut bytes = Vec::new();
        bytes.extend(serde_json::to_vec(&good[0]).unwrap());
        bytes.extend(b"\nnot json at all\n");
        bytes.extend(b"\xff\xfe\x00 invalid utf-8\n");
        bytes.extend(br#"{"id":"short","session_id":"s"}"#);
        bytes.push(b'\n');
        bytes.extend(
            serde_json::to_vec(&Exchange {
                id: "X".repeat(32),
                ..good[0].clone()
            })
            .unwrap(),
        );
        bytes.push(b'\n');
        bytes.extend(serde_json::to_vec(&good[1]).unwrap());
        bytes.extend(b"\n\n");
        bytes.extend(serde_json::to_vec(&good[2]).unwrap());
        bytes.push(b'\n');
        // A torn last write.
        let torn = serde_json::to_vec(&exchange("s", None, 1)).unwrap();
        bytes.extend(&torn[..torn.len() / 2]);
        std::fs::write(&spill, bytes).unwrap();

        let db = TestDb::create(engine).await;
        let w = writer(&db.url, &spill, &fast_logs_config(), metrics());
        assert!(eventually(Duration::from_secs(20), || async { no_spill_left(&spill) }).await);
        w.drain(Duration::from_secs(3)).await;
        let ids: HashSet<_> = all_ids(&db.store().await).await.into_iter().collect();
        assert_eq!(
            ids,
            good.iter().map(|e| e.id.clone()).collect(),
            "{engine:?}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_spills_instead_of_growing_and_drain_spills_the_rest() {
    let dir = common_dir();
    let spill = dir.join("spill.jsonl");
    let cfg = clawdbot_config::LogsConfig {
        queue_capacity: 5,
        ..fast_logs_config()
    };
    let m = metrics();
    // Not started: nothing takes from the queue.
    let w = bot_runtime::convlog::LogWriter::new(
        LogStore::open_lazy(DEAD_DB).unwrap(),
        bot_runtime::convlog::spill::Spill::new(spill.clone()),
        &cfg,
        m.clone(),
    );
    for i in 0..20 {
        w.submit(exchange("s", None, i)).await;
    }
    assert_eq!(m.queue_depth.get(), 5);
    assert_eq!(spill_lines(&spill), 15);
    w.drain(Duration::from_secs(1)).await;
    assert_eq!(spill_lines(&spill), 20);
    assert_eq!((m.spilled.get(), m.queue_depth.get()), (20, 0));
    // After the drain nothing is queued any more: straight to the file.
    w.submit(exchange("s", None, 21)).await;
    assert_eq!(spill_lines(&spill), 21);
}

/// A TCP proxy that can cut every connection and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Accept connections but forward nothing: a database that hangs.
    hang: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let hang = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (c, h, k) = (cut.clone(), hang.clone(), conns.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the database is "down"
                }
                if h.load(Ordering::SeqCst) {
                    held.push(client); // open, silent
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                k.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            cut,
            hang,
            conns,
        }
    }

    /// Existing connections go silent and new ones are never answered.
    fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn cutting_the_database_mid_load_loses_and_duplicates_nothing() {
    let db = TestDb::create(Engine::Postgres).await;
    db.store().await; // migrated directly; the writer migrates again through the proxy
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let dir = common_dir();
    let spill = dir.join("spill.jsonl");
    let m = metrics();
    let w = writer(&url, &spill, &fast_logs_config(), m.clone());

    let store = db.store().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    // About 1000 exchanges a second for 3 s: before, during and after the cut.
    let load: Vec<_> = (0..8)
        .map(|t| {
            let (w, acked) = (w.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0..375 {
                    let e = exchange(&format!("s{t}"), Some("u"), now_ms());
                    let id = e.id.clone();
                    w.submit(e).await;
                    // submit returned: the client would now get its reply.
                    acked.lock().unwrap().push(id);
                    if i % 5 == 0 {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                    }
                }
            })
        })
        .collect();
    // Cut while batches are being written, not before the first one.
    assert!(
        eventually(Duration::from_secs(10), || async {
            all_ids(&store).await.len() >= 200
        })
        .await
    );
    proxy.cut();
    let at_cut = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.restore();
    let at_restore = acked.lock().unwrap().len();
    for l in load {
        l.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert_eq!(acked.len(), 3000);
    assert!(
        at_cut < at_restore && at_restore < 3000,
        "load ran through the cut: {at_cut} {at_restore}"
    );
    let done = eventually(Duration::from_secs(30), || async {
        w.flush(Duration::from_secs(1)).await;
        no_spill_left(&spill) && all_ids(&store).await.len() >= acked.len()
    })
    .await;
    w.drain(Duration::from_secs(5)).await;
    let ids = all_ids(&store).await;
    assert!(done, "recovered: {} of {} logged", ids.len(), acked.len());
    assert_eq!(ids.len(), acked.len(), "no duplicates");
    let logged = ids.len();
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), acked);
    eprintln!(
        "database cut mid-load (after {at_cut}, restored after {at_restore}): {} acknowledged, \
         {} logged, {} write failures, {} spilled",
        acked.len(),
        logged,
        m.write_failures.get(),
        m.spilled.get()
    );
    assert!(m.write_failures.get() > 0, "the cut was felt");
    assert!(m.spilled.get() > 0, "and bridged by the spill file");
}

#[tokio::test]
async fn a_drain_against_a_hanging_database_spills_by_the_deadline_and_the_next_start_replays() {
    let db = TestDb::create(Engine::Postgres).await;
    let store = db.store().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let dir = common_dir();
    let spill = dir.join("spill.jsonl");
    let w = writer(&url, &spill, &fast_logs_config(), metrics());
    let first = exchange("s", None, now_ms());
    w.submit(first.clone()).await;
    assert!(w.flush(Duration::from_secs(10)).await);
    assert_eq!(all_ids(&store).await, vec![first.id]);

    proxy.hang();
    let rest: Vec<_> = (0..100)
        .map(|i| exchange("s", None, now_ms() + i))
        .collect();
    for e in &rest {
        w.submit(e.clone()).await;
    }
    let started = std::time::Instant::now();
    w.drain(Duration::from_millis(1500)).await;
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "the drain deadline holds: {:?}",
        started.elapsed()
    );
    assert_eq!(
        spill_lines(&spill),
        100,
        "everything left is in the spill file"
    );

    // The next start (database reachable) replays it.
    let next = writer(&db.url, &spill, &fast_logs_config(), metrics());
    assert!(eventually(Duration::from_secs(20), || async { no_spill_left(&spill) }).await);
    next.drain(Duration::from_secs(3)).await;
    let ids: HashSet<_> = all_ids(&store).await.into_iter().collect();
    assert_eq!(ids.len(), 101);
    assert!(rest.iter().all(|e| ids.contains(&e.id)));
}

fn common_dir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("clawdbot-test-logw-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
