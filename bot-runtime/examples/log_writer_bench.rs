//! Rows per second through the conversation-log writer into a database,
//! measured from the first submit until every row is committed (counted in
//! the table). Used by `make bench` (bench/state_bench.py).
//!
//!   cargo run --release -p bot-runtime --example log_writer_bench -- postgres://... 20000

use std::time::Instant;

use bot_runtime::convlog::spill::Spill;
use bot_runtime::convlog::{Exchange, LogStore, LogWriter, new_exchange_id};
use bot_runtime::support::timefmt::now_ms;
use bot_runtime::telemetry::metrics::Metrics;
use clawdbot_config::LogsConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: log_writer_bench DATABASE_URL [ROWS]"))?;
    let rows: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    bot_runtime::support::tls::install_crypto_provider();
    let store = LogStore::open_lazy(&url)?;
    store.migrate().await?;
    let spill_dir =
        std::env::temp_dir().join(format!("clawdbot-logbench-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&spill_dir)?;
    let metrics = Metrics::new();
    let writer = LogWriter::new(
        store.clone(),
        Spill::new(spill_dir.join("spill.jsonl")),
        &LogsConfig::default(),
        metrics.log_writer(),
    );
    writer.start();
    let started = Instant::now();
    let session = new_exchange_id();
    let mut max_submit_ms = 0f64;
    for i in 0..rows {
        let t = Instant::now();
        writer
            .submit(Exchange {
                id: new_exchange_id(),
                session_id: session.clone(),
                user_id: Some("bench".into()),
                owner: None,
                channel: "web".into(),
                user_input: format!("question {i}"),
                bot_response: "Hello from the mock upstream.".into(),
                model: "mock-model".into(),
                prompt_tokens: 3,
                completion_tokens: 5,
                latency_ms: 1,
                created_at: now_ms(),
            })
            .await;
        max_submit_ms = max_submit_ms.max(t.elapsed().as_secs_f64() * 1000.0);
    }
    let submitted = started.elapsed().as_secs_f64();
    writer.flush(std::time::Duration::from_secs(120)).await;
    let committed = started.elapsed().as_secs_f64();
    let in_db = store.session_exchanges(&session).await?.len();
    writer.drain(std::time::Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&spill_dir);
    anyhow::ensure!(
        in_db == rows,
        "only {in_db} of {rows} rows are in the database"
    );
    println!(
        "{}",
        serde_json::json!({
            "rows": rows,
            "submit_secs": submitted,
            "commit_secs": committed,
            "rows_per_sec": rows as f64 / committed,
            "max_submit_ms": max_submit_ms,
            "spilled": metrics.log_writer().spilled.get(),
        })
    );
    Ok(())
}
