use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use clawdbot_operator::controller::{self, Apis, Context, MIN_KUBERNETES, server_version};
use clawdbot_operator::crd::{ClawdBot, DEFAULT_IMAGE};
use clawdbot_operator::leader::{LeaseSettings, run_as_leader};
use clawdbot_operator::liveness::Liveness;
use clawdbot_operator::metrics::Metrics;
use clawdbot_operator::{crd, http, render, validate};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, CustomResourceExt};
use tokio::sync::watch;

/// Reconciles ClawdBot resources into running bot-runtime deployments.
#[derive(Parser)]
#[command(name = "clawdbot-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the ClawdBot CustomResourceDefinition as YAML.
    Crd,
    /// Print the API permissions the operator needs (JSON), for RBAC checks.
    Permissions,
    /// Print every object the controller would apply for a ClawdBot, offline.
    Render {
        /// The ClawdBot manifest (YAML).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

#[derive(Parser, Clone)]
struct RunArgs {
    /// Watch only these namespaces, comma-separated (default: all
    /// namespaces). Each gets watches of its own, so the operator needs
    /// access to those namespaces only.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Namespace of the leader-election Lease (default: POD_NAMESPACE, else "default").
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "clawdbot-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// ClawdBots reconciled at the same time.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// bot-runtime image used when a ClawdBot names none.
    #[arg(long, env = "CLAWDBOT_RUNTIME_IMAGE", default_value = DEFAULT_IMAGE)]
    runtime_image: String,
    /// Log format: json or text.
    #[arg(long, default_value = "json")]
    log_format: String,
    /// URL of a bot for reading its /health/ready ({name} and {namespace}
    /// are replaced); the default is its in-cluster Service.
    #[arg(long, default_value = controller::DEFAULT_PROBE_URL)]
    probe_url: String,
    /// Seconds between API discovery rounds (an API installed later, such
    /// as CloudNativePG, is picked up at the next one).
    #[arg(long, default_value_t = 60)]
    rediscover_secs: u64,
    /// /healthz fails when queued work has waited this long without a
    /// reconcile starting (or one has run this long), so the kubelet
    /// restarts a stuck controller.
    #[arg(long, default_value_t = 300)]
    stall_timeout_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => match serde_saphyr::to_string(&ClawdBot::crd()) {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Permissions) => {
            let all = clawdbot_operator::permissions::required();
            match serde_json::to_string_pretty(&all) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot print the permissions: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Render { file }) => render_file(&file),
        Some(Command::Run(args)) => run(args),
        None => run(RunArgs::parse_from(["clawdbot-operator"])),
    }
}

/// Renders every ClawdBot in the file (other documents, such as the
/// Secrets an example ships with, are skipped).
fn render_file(file: &PathBuf) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let docs: Vec<kube::api::DynamicObject> = match serde_saphyr::from_str_multiple(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: not Kubernetes objects: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let bots: Vec<_> = docs
        .iter()
        .filter(|d| {
            d.types.as_ref().is_some_and(|t| {
                t.kind == "ClawdBot" && t.api_version == format!("{}/{}", crd::GROUP, crd::VERSION)
            })
        })
        .collect();
    if bots.is_empty() {
        eprintln!(
            "{}: no ClawdBot ({}/{}) in the file",
            file.display(),
            crd::GROUP,
            crd::VERSION
        );
        return ExitCode::from(2);
    }
    let mut out = String::new();
    for raw in bots {
        let mut cb = match validate::parse(raw) {
            Ok(cb) => cb,
            Err(e) => {
                eprintln!("invalid ClawdBot: {e}");
                return ExitCode::from(2);
            }
        };
        if cb.metadata.namespace.is_none() {
            cb.metadata.namespace = Some("default".into());
        }
        let errors = validate::validate(&cb);
        if !errors.is_empty() {
            for e in errors {
                eprintln!(
                    "invalid ClawdBot {}: {e}",
                    cb.metadata.name.as_deref().unwrap_or("?")
                );
            }
            return ExitCode::from(2);
        }
        let rendered = render::build(
            &cb,
            &render::Inputs {
                default_image: DEFAULT_IMAGE.into(),
                ..render::Inputs::default()
            },
        )
        .and_then(|c| c.to_yaml_documents());
        match rendered {
            Ok(docs) => {
                for d in docs {
                    out.push_str("---\n");
                    out.push_str(&d);
                }
            }
            Err(e) => {
                eprintln!("cannot render: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{out}");
    ExitCode::SUCCESS
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        b.init();
    } else {
        b.json().flatten_event(true).with_current_span(false).init();
    }
}

fn run(args: RunArgs) -> ExitCode {
    init_logging(&args.log_format);
    // kube and everything else share one rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One thread: the operator waits on the API server almost all the time,
    // and a second worker only adds cross-thread wakeups (measured: about a
    // quarter of the CPU per reconcile in the 1000-bot burst).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(&args.metrics_addr).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let liveness = Arc::new(Liveness::new(std::time::Duration::from_secs(
        args.stall_timeout_secs,
    )));
    let probe = http::Probe {
        metrics: metrics.clone(),
        ready: ready.clone(),
        liveness: liveness.clone(),
    };
    let mut http_shutdown = shutdown_rx.clone();
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(listener, http::router(probe))
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.changed().await;
            })
            .await;
    });
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = shutdown_tx.send(true);
    });

    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    tracing::info!(server = %version.git_version, "connected to the API server");
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("clawdbot-operator-{}", std::process::id()));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "clawdbot-operator".into(),
            instance: Some(identity.clone()),
        },
    );
    if let Some(v) = server_version(&version.major, &version.minor)
        && v < MIN_KUBERNETES
    {
        warn_old_server(&recorder, &version.git_version).await;
    }
    let scopes = watch_scopes(&args.namespaces);
    tracing::info!(namespaces = ?scopes, "watching (None: every namespace)");
    let contexts: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let mut ctx = Context::new(
                client.clone(),
                recorder.clone(),
                metrics.clone(),
                Apis::default(),
                args.runtime_image.clone(),
            );
            ctx.operator_namespace = std::env::var("POD_NAMESPACE").ok();
            ctx.probe_url = args.probe_url.clone();
            ctx.liveness = liveness.clone();
            (Arc::new(ctx), scope.clone())
        })
        .collect();
    let rediscover = std::time::Duration::from_secs(args.rediscover_secs.max(1));
    ready.store(true, Ordering::SeqCst);
    let concurrency = args.concurrency;
    let lease = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity,
        duration_secs: 15,
        grace_secs: 5,
    };
    run_as_leader(client, lease, metrics, shutdown_rx, move |stop| {
        let runs: Vec<_> = contexts
            .iter()
            .map(|(ctx, scope)| {
                controller::run(
                    ctx.clone(),
                    scope.clone(),
                    concurrency,
                    stop.clone(),
                    rediscover,
                )
            })
            .collect();
        async move {
            futures_util::future::join_all(runs).await;
        }
    })
    .await?;
    http_task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The scopes to watch: each named namespace once, or `[None]` (every
/// namespace) when none is named.
fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let named: std::collections::BTreeSet<_> = namespaces
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .collect();
    if named.is_empty() {
        return vec![None];
    }
    named.into_iter().map(|n| Some(n.to_owned())).collect()
}

/// The runtime pods' preStop `sleep` action needs Kubernetes 1.30: on an
/// older server they are refused. Said in the log and as an Event on the
/// operator's own pod (when it knows its name).
async fn warn_old_server(recorder: &Recorder, version: &str) {
    let (min_major, min_minor) = MIN_KUBERNETES;
    let note = format!(
        "Kubernetes {version} is older than {min_major}.{min_minor}, the oldest this operator \
         supports: bot-runtime pods use the preStop sleep action, which older API servers refuse. \
         Upgrade the cluster."
    );
    tracing::error!(server = version, "{note}");
    let (Ok(name), Ok(ns)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) else {
        return;
    };
    let pod = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name),
        namespace: Some(ns),
        ..ObjectReference::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "UnsupportedKubernetesVersion".into(),
        note: Some(note),
        action: "Start".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &pod).await {
        tracing::warn!(error = %e, "cannot publish the version warning");
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_comma_separated_deduplicated_or_all() {
        let args =
            RunArgs::try_parse_from(["run", "--namespace", "team-b,team-a, team-a,"]).unwrap();
        assert_eq!(
            watch_scopes(&args.namespaces),
            [Some("team-a".to_owned()), Some("team-b".to_owned())]
        );
        let args = RunArgs::try_parse_from(["run"]).unwrap();
        assert_eq!(watch_scopes(&args.namespaces), [None]);
    }
}
