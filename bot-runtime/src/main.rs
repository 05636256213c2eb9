use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clawdbot_config::{ModelBackend, RuntimeConfig};

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
    /// Exit 0 when the server's /health/ready answers 2xx, else 1: the
    /// container image's HEALTHCHECK (the image has no curl).
    Healthcheck {
        /// Ask this URL instead of server.listen's /health/ready.
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Rewrite the conversation logs' text sealed with an old key under the
    /// active one, so the old key can be retired (docs/encryption.md).
    /// Safe to stop and rerun: it continues with what is left.
    Rekey {
        /// The id of the key to retire.
        #[arg(long)]
        from: String,
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch: u32,
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
            // The file checks that need no model load: a local model that
            // cannot start is refused here, not in a crash loop later.
            let backend = cfg.model.effective_backend();
            if matches!(backend, ModelBackend::Local | ModelBackend::Auto) {
                let local = bot_runtime::chat::model::local::startup_problem(&cfg.model.local);
                match (backend, local) {
                    (ModelBackend::Local, Some(why)) => {
                        eprintln!("config error: model.local.path: {why}");
                        return ExitCode::from(2);
                    }
                    (_, Some(why)) => {
                        println!("note: model.backend auto will answer without a model: {why}")
                    }
                    _ => {}
                }
            }
            // The keyring with its key file: a bad key is refused here,
            // naming it, not in a crash loop later.
            if let Err(why) = bot_runtime::crypto::Keyring::from_config(&cfg.encryption) {
                eprintln!("config error: {why}");
                return ExitCode::from(2);
            }
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
        Command::Rekey { from, batch } => rekey(&cfg, &from, batch),
        Command::Healthcheck { url, timeout_secs } => healthcheck(&cfg, url, timeout_secs),
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

fn healthcheck(cfg: &RuntimeConfig, url: Option<String>, timeout_secs: u64) -> ExitCode {
    use bot_runtime::support::healthcheck;
    bot_runtime::support::tls::install_crypto_provider();
    let checked = url
        .map_or_else(|| healthcheck::ready_url(&cfg.server.listen), Ok)
        .and_then(|u| healthcheck::probe(&u, std::time::Duration::from_secs(timeout_secs.max(1))));
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("unhealthy: {why}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cfg: RuntimeConfig) -> ExitCode {
    let _flush = match bot_runtime::telemetry::logging::init(&cfg) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("cannot start: {why}");
            return ExitCode::from(2);
        }
    };
    bot_runtime::support::tls::install_crypto_provider();
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

/// Runs `work` on the conversation log database, on a one-thread runtime
/// (the offline commands); an error is printed as `COMMAND: why (database
/// ...)` and becomes the exit code.
fn on_log_store<T, F, Fut>(cfg: &RuntimeConfig, command: &str, work: F) -> Result<T, ExitCode>
where
    F: FnOnce(bot_runtime::convlog::LogStore) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    bot_runtime::support::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{command}: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })?;
    runtime
        .block_on(async {
            let store = bot_runtime::convlog::LogStore::open_lazy(
                &bot_runtime::convlog::database_url(cfg),
            )?;
            let done = work(store.clone()).await;
            store.close().await;
            done.map_err(|e| anyhow::anyhow!("{e} (database {})", store.target()))
        })
        .map_err(|e| {
            eprintln!("{command}: {e}");
            ExitCode::FAILURE
        })
}

fn rekey(cfg: &RuntimeConfig, from: &str, batch: u32) -> ExitCode {
    let keyring = match bot_runtime::crypto::Keyring::from_config(&cfg.encryption) {
        Ok(k) => k,
        Err(why) => {
            eprintln!("rekey: {why}");
            return ExitCode::from(2);
        }
    };
    let problem = match keyring.active() {
        None => {
            Some("encryption is off: set encryption.enabled and an active key first".to_owned())
        }
        Some(active) if active == from => Some(format!(
            "key {from:?} is the active one: make the new key active first"
        )),
        _ if !keyring.has(from) => Some(format!(
            "key {from:?} is not in the keyring: it is needed to read what it sealed"
        )),
        _ => None,
    };
    if let Some(why) = problem {
        eprintln!("rekey: {why}");
        return ExitCode::from(2);
    }
    let result = on_log_store(cfg, "rekey", |store| async move {
        store.migrate().await?;
        let done = bot_runtime::convlog::rekey::rekey(&store, &keyring, from, batch, |p| {
            eprintln!("rekey: {} row(s) rewritten so far", p.rewritten)
        })
        .await?;
        Ok(done)
    });
    match result {
        Err(code) => code,
        Ok(done) if done.unreadable > 0 => {
            eprintln!(
                "rekey: {} row(s) rewritten; {} row(s) naming {from:?} failed authentication and \
                 were left as they are: do not retire the key yet",
                done.rewritten, done.unreadable
            );
            ExitCode::FAILURE
        }
        Ok(done) => {
            eprintln!(
                "rekey: {} row(s) rewritten; no conversation log text names {from:?} any more",
                done.rewritten
            );
            ExitCode::SUCCESS
        }
    }
}

/// `export`: rows go to stdout, problems to stderr (no log lines, which
/// would mix into the export).
fn export(cfg: &RuntimeConfig, since: &str, until: &str, format: &str) -> ExitCode {
    use bot_runtime::support::timefmt::parse_rfc3339_ms;
    let (Some(since_ms), Some(until_ms)) = (parse_rfc3339_ms(since), parse_rfc3339_ms(until))
    else {
        eprintln!("export: --since and --until must be RFC 3339 times like 2026-01-31T00:00:00Z");
        return ExitCode::from(2);
    };
    let format = match format.parse::<bot_runtime::convlog::export::Format>() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("export: --format: {e}");
            return ExitCode::from(2);
        }
    };
    let result = on_log_store(cfg, "export", |store| async move {
        let keyring = bot_runtime::crypto::Keyring::from_config(&cfg.encryption)
            .map_err(anyhow::Error::msg)?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        bot_runtime::convlog::export::export(&store, &keyring, since_ms, until_ms, format, &mut out)
            .await
    });
    match result {
        Err(code) => code,
        Ok(done) if done.unreadable_fields > 0 => {
            eprintln!(
                "export: {} exchange(s); {} text field(s) could not be decrypted (key not in the \
                 keyring, or tampered) and were written empty",
                done.rows, done.unreadable_fields
            );
            ExitCode::FAILURE
        }
        Ok(done) => {
            eprintln!("export: {} exchange(s)", done.rows);
            ExitCode::SUCCESS
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
