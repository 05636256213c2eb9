use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clawdbot_config::{LogFormat, RuntimeConfig};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// ClawdBot runtime: web chat, chat API, OpenAI-compatible endpoint.
#[derive(Parser)]
#[command(name = "bot-runtime", version, about)]
struct Cli {
    /// YAML config file (see examples/config.example.yaml). Optional: the
    /// embedded defaults plus environment variables are enough.
    #[arg(long, short = 'c', global = true, env = "CLAWDBOT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the config file and environment, print problems, exit non-zero on any.
    CheckConfig,
    /// Print the JSON schema of the config file.
    ConfigSchema,
    /// Write the conversation logs of a time range to stdout, oldest first
    /// (reads `database.url` / `DATABASE_URL` like the server).
    Export {
        /// Start, inclusive: an RFC 3339 time such as 2026-01-01T00:00:00Z.
        #[arg(long)]
        since: String,
        /// End, exclusive: an RFC 3339 time.
        #[arg(long)]
        until: String,
        /// `jsonl` (one JSON object per line) or `csv` (with a header row).
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if matches!(command, Command::ConfigSchema) {
        println!("{:#}", clawdbot_config::schema());
        return ExitCode::SUCCESS;
    }
    let cfg = match load_config(cli.config.as_ref()) {
        Ok(cfg) => cfg,
        Err(lines) => {
            for line in lines {
                eprintln!("config error: {line}");
            }
            return ExitCode::from(2);
        }
    };
    match command {
        Command::CheckConfig => {
            println!(
                "config OK: listen {}, model backend {:?} ({}), {} API key(s)",
                cfg.server.listen,
                cfg.model.effective_backend(),
                cfg.model.name,
                cfg.auth.api_keys.len()
            );
            ExitCode::SUCCESS
        }
        Command::Serve => serve(cfg),
        Command::Export {
            since,
            until,
            format,
        } => export(&cfg, &since, &until, &format),
        Command::ConfigSchema => unreachable!("handled above"),
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<RuntimeConfig, Vec<String>> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| vec![format!("{}: cannot read: {e}", p.display())])?,
        None => String::new(),
    };
    clawdbot_config::load(&text, std::env::vars())
        .map_err(|e| e.issues().iter().map(ToString::to_string).collect())
}

/// Lines a logging thread may have queued before it waits for the writer.
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Logs go to stdout through tracing-appender's writer thread, so a
/// request's log line is a queue push, not a write system call on a
/// runtime worker. Nothing is dropped (not lossy): with the queue full the
/// logging thread waits, as on a slow stdout. The guard writes out what is
/// left when `serve` returns.
fn init_logging(cfg: &RuntimeConfig) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cfg.logging.format {
        // One object per line: timestamp, level, the event's fields, target
        // and the current span's fields (request id, route) under "span".
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

fn serve(cfg: RuntimeConfig) -> ExitCode {
    let _flush = init_logging(&cfg);
    bot_runtime::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.server.listen))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            model_backend = ?cfg.model.effective_backend(),
            model = %cfg.model.name,
            api_keys = cfg.auth.api_keys.len(),
            version = env!("CARGO_PKG_VERSION"),
            "bot-runtime ready"
        );
        bot_runtime::serve(cfg, listener, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "bot-runtime stopped with an error");
            eprintln!("bot-runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `export`: rows go to stdout, problems to stderr (no log lines, which
/// would mix into the export).
fn export(cfg: &RuntimeConfig, since: &str, until: &str, format: &str) -> ExitCode {
    use bot_runtime::timefmt::parse_rfc3339_ms;
    let (Some(since_ms), Some(until_ms)) = (parse_rfc3339_ms(since), parse_rfc3339_ms(until))
    else {
        eprintln!("export: --since and --until must be RFC 3339 times like 2026-01-31T00:00:00Z");
        return ExitCode::from(2);
    };
    let format = match format.parse::<bot_runtime::logs::export::Format>() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("export: --format: {e}");
            return ExitCode::from(2);
        }
    };
    bot_runtime::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("export: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let store = bot_runtime::logs::LogStore::open_lazy(&bot_runtime::logs::database_url(cfg))?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let n =
            bot_runtime::logs::export::export(&store, since_ms, until_ms, format, &mut out).await;
        store.close().await;
        n.map_err(|e| anyhow::anyhow!("{e} (database {})", store.target()))
    });
    match result {
        Ok(n) => {
            eprintln!("export: {n} exchange(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("export: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
