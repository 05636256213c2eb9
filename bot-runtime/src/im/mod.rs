//! IM channels: DingTalk, Feishu/Lark, WeCom and Slack.
//!
//! One folder per platform holds all of it: `protocol` (pure: `verify`
//! turns a request's headers and raw bytes into a [`Verdict`] or a typed
//! [`Rejection`]; builders shape what we send back), `reply` (its API
//! client: answers and robot notifications) and, where the platform has
//! one, its long-connection client (`stream`, `ws`). Shared here: the
//! message types, signature and cipher helpers (`crypto`), the webhook
//! verifiers of the enabled channels (`inbound`), the long-connection
//! loop (`longconn`), HTTP calls with pacing and retries (`call`), the
//! reply and notification fronts (`outbound`, `notify`). Verified messages
//! go to an [`InboundSink`] (the durable delivery store in `deliveries`).

pub mod call;
pub mod crypto;
pub mod dingtalk;
pub mod feishu;
pub mod inbound;
pub mod longconn;
pub mod notify;
pub mod outbound;
pub mod slack;
pub mod wecom;

use std::future::Future;
use std::pin::Pin;

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// The start of every HTTP client that calls an IM platform (replies,
/// notifications, long-connection endpoints): our user agent, and no
/// redirects, so a platform token in a header or query never follows a
/// `Location` to another host.
pub(crate) fn platform_client() -> reqwest::ClientBuilder {
    crate::support::tls::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(longconn::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Dingtalk,
    Feishu,
    Wecom,
    Slack,
}

impl Platform {
    pub const ALL: [Platform; 4] = [Self::Dingtalk, Self::Feishu, Self::Wecom, Self::Slack];

    /// The metric label, log field and conversation-log channel.
    pub fn label(self) -> &'static str {
        match self {
            Self::Dingtalk => "dingtalk",
            Self::Feishu => "feishu",
            Self::Wecom => "wecom",
            Self::Slack => "slack",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.label() == s)
    }
}

/// A verified user message, ready for the chat engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub platform: Platform,
    /// The platform's id of this delivery, the dedupe key: DingTalk `msgId`,
    /// Feishu `header.event_id` (v1: `uuid`), WeCom `MsgId`, Slack `event_id`.
    pub delivery_id: String,
    /// The message's own id where the platform has one besides the delivery
    /// id (Feishu `message_id`): a second dedupe key.
    pub message_id: Option<String>,
    /// The chat the message came from (a group or a one-to-one chat).
    pub conversation_id: String,
    /// The sender, as the platform names them to this app.
    pub user_id: String,
    /// What the user wrote, with the bot's @-mention removed, trimmed.
    pub text: String,
    /// Where the answer goes.
    pub reply: ReplyTo,
}

/// Routing for the answer, per platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "lowercase")]
pub enum ReplyTo {
    Dingtalk {
        /// Per-conversation reply URL from the message; valid until
        /// `session_webhook_expires_ms`.
        session_webhook: Option<String>,
        session_webhook_expires_ms: Option<i64>,
        /// `conversationType` "2".
        group: bool,
        /// `conversationId`, the group's `openConversationId` for the OpenAPI.
        conversation_id: String,
        /// `senderStaffId`: the OpenAPI's one-to-one recipient, and the @ in groups.
        sender_staff_id: Option<String>,
        /// `robotCode` from the message (falls back to `dingtalk.robot_code`).
        robot_code: Option<String>,
    },
    Feishu {
        /// Replied to with `POST /open-apis/im/v1/messages/{message_id}/reply`.
        message_id: String,
        chat_id: String,
    },
    Wecom {
        /// `FromUserName`: the recipient of the message-send API.
        to_user: String,
    },
    Slack {
        channel: String,
        /// Set when the message was in a thread: answer in the same thread.
        thread_ts: Option<String>,
    },
}

/// What an authentic request asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A user message to answer.
    Message(Box<Inbound>),
    /// A handshake answered in the HTTP response itself (Feishu and Slack
    /// `url_verification`, WeCom's `echostr`).
    Handshake {
        content_type: &'static str,
        body: String,
    },
    /// Authentic, nothing to answer: the bot's own message, an event type we
    /// do not handle, a message with no text. Acked with 200.
    Ignored(&'static str),
}

/// Why a request was refused. Nothing refused reaches the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing or wrong signature")]
    BadSignature,
    #[error("timestamp missing or outside the freshness window")]
    Stale,
    #[error("wrong verification token or receiver")]
    BadToken,
    #[error("cannot decrypt the body: {0}")]
    Undecryptable(&'static str),
    #[error("malformed body: {0}")]
    Malformed(String),
    /// A valid signature already seen with another message: its headers
    /// were replayed with a new body.
    #[error("this signature came with another message before")]
    Replayed,
}

impl Rejection {
    /// The `outcome` label of `clawdbot_webhook_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale",
            Self::BadToken => "bad_token",
            Self::Replayed => "replayed",
            Self::Undecryptable(_) | Self::Malformed(_) => "malformed",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadSignature | Self::Stale | Self::BadToken | Self::Replayed => {
                StatusCode::UNAUTHORIZED
            }
            Self::Undecryptable(_) | Self::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn malformed(why: impl Into<String>) -> Self {
        Self::Malformed(why.into())
    }
}

/// What became of a delivery handed to an [`InboundSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Recorded durably; it will be answered.
    New,
    /// Seen before (a redelivery or a replay): not answered again.
    Duplicate,
    /// Signed credentials seen before with another message
    /// ([`InboundSink::accept_signed`]): refused, nothing recorded.
    Replayed,
}

/// A signed callback's credentials (DingTalk's `timestamp` and `sign`),
/// to be bound to the first message they carried for `ttl`: the same
/// credentials with another message are a replay with a new body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBinding {
    pub key: String,
    pub ttl: std::time::Duration,
}

/// The delivery could not be recorded: do not ack, so the platform retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery not recorded: {0}")]
pub struct SinkError(pub String);

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<Accepted, SinkError>> + Send + 'a>>;

/// Where verified messages go, from webhooks and long connections alike:
/// deduplicated and recorded durably before the platform gets its ack.
pub trait InboundSink: Send + Sync + 'static {
    fn accept(&self, message: Inbound) -> SinkFuture<'_>;
    /// [`InboundSink::accept`], with the callback's credentials bound to
    /// the message in the same step, shared by every replica:
    /// [`Accepted::Replayed`] when they came with another message before.
    fn accept_signed(&self, message: Inbound, binding: SignatureBinding) -> SinkFuture<'_>;
}

/// Starts the long-connection clients the config asks for (DingTalk Stream
/// mode, Feishu's WebSocket mode), counting frames in `outcomes` (the
/// webhook outcome counter); they stop when `stop` turns true.
pub fn long_connections(
    cfg: &clawdbot_config::RuntimeConfig,
    sink: std::sync::Arc<dyn InboundSink>,
    outcomes: &prometheus::IntCounterVec,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use clawdbot_config::{DingTalkMode, FeishuMode, Secret};
    let link = |p: Platform, api_base: &str, id: &Option<String>, secret: &Option<Secret>, beat| {
        let secret = secret.clone().unwrap_or_else(|| Secret::new(""));
        let mut link =
            longconn::LinkConfig::new(api_base, id.clone().unwrap_or_default(), secret, beat);
        let m = outcomes.clone();
        link.on_outcome = Some(std::sync::Arc::new(move |outcome| {
            m.with_label_values(&[p.label(), outcome]).inc()
        }));
        link
    };
    let mut tasks = Vec::new();
    let d = &cfg.dingtalk;
    if d.enabled && d.mode == DingTalkMode::Stream {
        let beat = dingtalk::stream::HEARTBEAT;
        let link = link(
            Platform::Dingtalk,
            &d.api_base,
            &d.app_key,
            &d.app_secret,
            beat,
        );
        tasks.push(tokio::spawn(dingtalk::stream::run(
            link,
            sink.clone(),
            stop.clone(),
        )));
    }
    let f = &cfg.feishu;
    if f.enabled && f.mode == FeishuMode::Websocket {
        let link = link(
            Platform::Feishu,
            &f.api_base,
            &f.app_id,
            &f.app_secret,
            feishu::ws::HEARTBEAT,
        );
        tasks.push(tokio::spawn(feishu::ws::run(link, sink, stop)));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::any;

    async fn serve(app: Router) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    #[test]
    fn debug_output_of_config_and_verifiers_shows_no_secret() {
        use clawdbot_config::{ApiKey, RuntimeConfig, Scope, Secret};
        let s = |n: &str| Some(Secret::new(format!("SECRET{n}")));
        let mut cfg = RuntimeConfig::default();
        cfg.auth.api_keys = vec![ApiKey {
            key: Secret::new("SECRETapikey"),
            scope: Scope::Admin,
            name: None,
        }];
        cfg.model.api_key = s("model");
        cfg.redis.url = s("redis");
        cfg.database.url = s("db");
        (
            cfg.dingtalk.app_secret,
            cfg.dingtalk.webhook_url,
            cfg.dingtalk.secret,
        ) = (s("dt1"), s("dt2"), s("dt3"));
        cfg.feishu.app_secret = s("fs1");
        cfg.feishu.verification_token = s("fs2");
        cfg.feishu.encrypt_key = s("fs3");
        cfg.feishu.notify_webhook_url = s("fs4");
        cfg.feishu.notify_secret = s("fs5");
        (cfg.wecom.secret, cfg.wecom.token) = (s("wc1"), s("wc2"));
        cfg.wecom.robot_webhook_url = s("wc3");
        // An EncodingAESKey is 43 base64 characters.
        cfg.wecom.encoding_aes_key = Some(Secret::new(format!("SECRETwc4{}", "A".repeat(34))));
        cfg.wecom.corp_id = Some("ww-corp".into());
        (cfg.slack.signing_secret, cfg.slack.bot_token) = (s("sl1"), s("sl2"));

        let dingtalk = super::dingtalk::Verifier::from_config(&cfg.dingtalk).expect("dingtalk");
        let feishu = super::feishu::Verifier::from_config(&cfg.feishu).expect("feishu");
        let slack = super::slack::Verifier::from_config(&cfg.slack).expect("slack");
        let wecom = super::wecom::Crypto::from_config(&cfg.wecom)
            .expect("wecom")
            .expect("a usable key");
        for dump in [
            format!("{cfg:?}"),
            format!("{dingtalk:?}"),
            format!("{feishu:?}"),
            format!("{slack:?}"),
            format!("{wecom:?}"),
        ] {
            assert!(!dump.contains("SECRET"), "{dump}");
        }
        // The values are all there, only not printed.
        assert_eq!(dingtalk.app_secret.expose(), "SECRETdt1");
        assert_eq!(slack.signing_secret.expose(), "SECRETsl1");
        assert_eq!(wecom.token, "SECRETwc2");
    }

    #[tokio::test]
    async fn platform_clients_do_not_follow_redirects() {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let elsewhere = serve(Router::new().fallback(any(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { "token received" }
        })))
        .await;
        let location = format!("http://{elsewhere}/collect");
        let platform = serve(Router::new().fallback(any(move || {
            let location = location.clone();
            async move {
                (
                    http::StatusCode::FOUND,
                    [(http::header::LOCATION, location)],
                )
            }
        })))
        .await;
        let url = format!("http://{platform}/api/send?access_token=secret");
        let resp = super::platform_client()
            .build()
            .unwrap()
            .post(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        // A default client would have carried the request there.
        let followed = reqwest::Client::new().get(&url).send().await.unwrap();
        assert_eq!(followed.status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
