//! Shared state handed to every handler: cheap to clone (one `Arc`).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clawdbot_config::RuntimeConfig;
use ipnet::IpNet;

use crate::auth::KeyStore;
use crate::chat::model::Provider;
use crate::chat::sessions::SessionStore;
use crate::convlog::{LogStore, LogWriter};
use crate::deliveries::Deliveries;
use crate::http::drain::Drain;
use crate::http::ratelimit::{AuthThrottle, RateLimiter};
use crate::im::inbound::Verifiers;
use crate::im::notify::Notifier;
use crate::im::outbound::Outbound;
use crate::knowledge::KnowledgeBase;
use crate::knowledge::guide::Guide;
use crate::knowledge::rules::Rules;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub cfg: RuntimeConfig,
    /// The model as configured: the OpenAI-compatible `/v1` API uses it.
    pub provider: Arc<dyn Provider>,
    /// The bot's own conversations (web chat, `/api/v1/chat`, IM): dialog
    /// rules and the FAQ first, then `provider`.
    pub bot: Arc<dyn Provider>,
    pub knowledge: Arc<KnowledgeBase>,
    pub sessions: Arc<SessionStore>,
    pub metrics: Metrics,
    pub keys: KeyStore,
    pub limiter: RateLimiter,
    pub auth_throttle: AuthThrottle,
    pub trusted_proxies: Vec<IpNet>,
    pub drain: Arc<Drain>,
    pub started: Instant,
    /// Conversation logs: the batched writer and, through it, the store.
    pub logs: LogWriter,
    /// IM channels: webhook verifiers, the durable delivery queue, the
    /// platform API clients, and the notification queues (started with
    /// the server).
    pub verifiers: Verifiers,
    pub deliveries: Arc<Deliveries>,
    pub outbound: Arc<Outbound>,
    pub notifier: OnceLock<Notifier>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Fails only on a log database URL sqlx cannot use, an SQLite
    /// directory that cannot be created or a keyring that does not parse
    /// (the error names the key); nothing connects here.
    pub fn new(cfg: RuntimeConfig, provider: Arc<dyn Provider>) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        metrics.register_all(provider.collectors());
        let knowledge = Arc::new(KnowledgeBase::load(&cfg.knowledge));
        let guide = Guide::new(
            provider.clone(),
            Rules::from_config(&cfg.dialog),
            knowledge.clone(),
            &cfg.knowledge,
        );
        metrics.register_all(guide.collectors());
        let keyring = Arc::new(
            crate::crypto::Keyring::from_config(&cfg.encryption).map_err(anyhow::Error::msg)?,
        );
        if keyring.enabled() {
            tracing::info!(
                active_key = cfg.encryption.active.as_deref().unwrap_or(""),
                "encryption at rest: conversation logs, the spill file, Redis session history \
                 and stored IM deliveries are encrypted"
            );
        }
        let store = LogStore::open_lazy(&crate::convlog::database_url(&cfg))?;
        // One pool per database: the IM delivery table shares it.
        let deliveries = Arc::new(Deliveries::from_config(
            &cfg,
            &metrics,
            store.clone(),
            keyring.clone(),
        )?);
        let logs = LogWriter::encrypting(
            store,
            crate::convlog::spill::Spill::new(crate::convlog::spill_path(&cfg)),
            &cfg.logs,
            metrics.log_writer(),
            keyring.clone(),
        );
        let trusted_proxies = cfg
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| clawdbot_config::parse_net(p))
            .collect();
        Ok(Self(Arc::new(Inner {
            verifiers: Verifiers::from_config(&cfg)?,
            deliveries,
            outbound: Arc::new(Outbound::new(&cfg)?),
            notifier: OnceLock::new(),
            sessions: Arc::new(SessionStore::from_config(&cfg, &metrics, keyring.clone())?),
            metrics,
            logs,
            keys: KeyStore::with_digest(&cfg.auth.api_keys, cfg.encryption.digest),
            limiter: RateLimiter::new(
                cfg.server.rate_limit.requests_per_second,
                cfg.server.rate_limit.burst,
            ),
            auth_throttle: AuthThrottle::new(
                cfg.auth.max_failures,
                Duration::from_secs(cfg.auth.failure_window_secs),
            ),
            trusted_proxies,
            drain: Arc::new(Drain::default()),
            started: Instant::now(),
            provider,
            bot: Arc::new(guide),
            knowledge,
            cfg,
        })))
    }
}

impl AppState {
    /// The notification queues; none until the server starts them.
    pub fn notifier(&self) -> &Notifier {
        static NONE: OnceLock<Notifier> = OnceLock::new();
        self.notifier
            .get()
            .unwrap_or_else(|| NONE.get_or_init(Notifier::none))
    }

    /// Observes one model call made for `channel`.
    pub fn observe_call(
        &self,
        channel: &'static str,
        session_id: Option<String>,
    ) -> crate::chat::engine::CallObserver {
        crate::chat::engine::CallObserver::start(
            self.metrics.model(),
            self.provider.label(),
            channel,
            session_id,
        )
    }

    /// Whether any IM channel is enabled (workers run only then).
    pub fn channels_enabled(&self) -> bool {
        self.cfg.dingtalk.enabled
            || self.cfg.feishu.enabled
            || self.cfg.wecom.enabled
            || self.cfg.slack.enabled
    }
}
