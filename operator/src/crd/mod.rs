//! The `ClawdBot` custom resource (`clawdbot.io/v1alpha1`).
//!
//! Field docs become `kubectl explain` text: they are written for the person
//! running the cluster. Secrets appear only as references; no field holds a
//! secret value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub mod monitoring;
mod state;

pub use state::*;

pub const GROUP: &str = "clawdbot.io";
pub const VERSION: &str = "v1alpha1";
pub const DEFAULT_IMAGE: &str = concat!("clawdbot/bot-runtime:", env!("CARGO_PKG_VERSION"));

/// Without `spec.redis`, sessions live in each pod's memory: allowed only
/// with one replica and no autoscaling. Ratcheted: an object that already
/// broke the rule (made before it existed) still accepts unrelated edits.
pub const SINGLE_POD_RULE: &str = concat!(
    "has(self.redis) || ((!has(self.replicas) || self.replicas <= 1) && ",
    "!(has(self.autoscaling) && has(self.autoscaling.enabled) && self.autoscaling.enabled)) || ",
    "(oldSelf.hasValue() && !has(oldSelf.value().redis) && ",
    "((has(oldSelf.value().replicas) && oldSelf.value().replicas > 1) || ",
    "(has(oldSelf.value().autoscaling) && has(oldSelf.value().autoscaling.enabled) && oldSelf.value().autoscaling.enabled)))"
);

/// A chat bot: the bot-runtime Deployment, its Service and configuration,
/// and the optional pieces around it.
// Repeated `printcolumn(type_ = "string")` entries look alike to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "clawdbot.io",
    version = "v1alpha1",
    kind = "ClawdBot",
    plural = "clawdbots",
    shortname = "cb",
    category = "clawdbot",
    namespaced,
    status = "ClawdBotStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.name"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "A ClawdBot runs one chat bot: bot-runtime pods, their Service and configuration."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(SINGLE_POD_RULE).message("spec.redis is required with more than one replica or with autoscaling: in-memory sessions are not shared between pods").field_path(".redis").optional_old_self(true))]
pub struct ClawdBotSpec {
    /// Container image of bot-runtime. Defaults to the release matching the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When to pull the image: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets holding registry credentials for the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Desired bot-runtime pods; the ClawdBot's scale subresource (`kubectl
    /// scale`, HorizontalPodAutoscaler, KEDA). Defaults to 1 when the object
    /// is created; the default has no field manager, so leave it out of what
    /// GitOps re-applies when an autoscaler owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000), extend("default" = 1))]
    pub replicas: Option<i32>,
    /// CPU and memory requests and limits of the bot-runtime container.
    /// Defaults: requests 50m CPU / 64Mi, limit 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The model the bot talks to.
    #[serde(default)]
    pub model: ModelSpec,
    /// API keys of the bot's HTTP API.
    #[serde(default)]
    pub auth: AuthSpec,
    /// The FAQ the bot answers from (docs/knowledge.md): a ConfigMap
    /// (`name`) or a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge: Option<KnowledgeSpec>,
    /// Encryption at rest of conversation text (docs/encryption.md): the
    /// keyring comes from a Secret, never from the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    /// IM platforms the bot answers on.
    #[serde(default)]
    pub channels: ChannelsSpec,
    /// Redis for sessions and IM deliveries shared by every replica: `managed`
    /// or `external`. Unset: in-memory sessions in each pod, allowed only with
    /// one replica and no autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// Database for conversation logs: `managed`, `cloudNativePG` or
    /// `external`. Unset: an SQLite file in each pod's scratch volume (lost
    /// with the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,
    /// A HorizontalPodAutoscaler targeting this ClawdBot's scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// A PodDisruptionBudget for the bot-runtime pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudgetSpec>,
    /// A NetworkPolicy limiting who may reach the bot-runtime pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// An Ingress exposing the bot outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// ServiceMonitor and PrometheusRule (only where the Prometheus Operator's API exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// Additions to the bot-runtime pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,
    /// Per-client request limit of the bot's API. Default 20 requests/s, burst 40.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Peers (IP addresses or CIDR ranges) whose X-Forwarded-For header names
    /// the real client, for per-client rate limits and bad-key throttling.
    /// Unset: the private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16,
    /// 100.64.0.0/10, fc00::/7), which covers an in-cluster ingress controller.
    /// Set [] when clients reach the pods directly (no proxy), so they cannot
    /// claim another address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub trusted_proxies: Option<Vec<String>>,
    /// Origins (`https://chat.example.com`, no path) whose pages may call the
    /// bot's API from a browser (CORS). Empty: only the bot's own web chat.
    /// `*` lets every website do so; the runtime warns about it at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub cors_allowed_origins: Vec<String>,
    /// The conversation log: how long exchanges are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_logs: Option<ConversationLogsSpec>,
    /// Stop reconciling: the operator makes no changes to this bot's objects
    /// until it is set back to false.
    #[serde(default)]
    pub paused: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A key of a Secret in the ClawdBot's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Secret in the ClawdBot's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ModelBackend {
    /// An OpenAI-compatible HTTP endpoint.
    #[serde(rename = "OpenAI")]
    OpenAI,
    /// A GGUF model run inside the pod by llama.cpp (`spec.model.local`).
    Local,
    /// No model: the FAQ and dialog rules answer, or the bot says it does not know.
    None,
}

/// Where the runtime image keeps its default model file.
pub const IMAGE_MODEL_PATH: &str = "/opt/clawdbot/models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Where the runtime image keeps the FAQ's embedding model.
pub const IMAGE_EMBEDDINGS_PATH: &str = "/opt/clawdbot/models/all-MiniLM-L6-v2.Q8_0.gguf";

/// The model file of `backend: Local`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.persistentVolumeClaim) || has(self.path)").message("model.local.path (the file inside the claim) is required with model.local.persistentVolumeClaim").field_path(".path"))]
pub struct LocalModelSpec {
    /// The GGUF file: a path inside the runtime image (default: the image's
    /// own model, /opt/clawdbot/models/SmolLM2-135M-Instruct.Q4_1.gguf), or,
    /// with persistentVolumeClaim, a path relative to the claim's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
    /// A PersistentVolumeClaim in the bot's namespace holding the model
    /// file, mounted read-only at /var/lib/clawdbot/models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub persistent_volume_claim: Option<String>,
    /// Expected SHA-256 of the file (hex); a mismatch keeps the pod from
    /// starting with a message naming the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: Option<String>,
    /// Tokens of context per conversation. Default 2048.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 256, max = 131072))]
    pub context_size: Option<u32>,
    /// Conversations generated at once per pod. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub parallel: Option<u32>,
}

/// The knowledge base: a ConfigMap (up to 1 MiB) or, for more, a
/// PersistentVolumeClaim; exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// The Secret key holding the keyring: `ID:ALGORITHM:BASE64KEY` entries
    /// (sm4-gcm: 16-byte keys, aes-256-gcm: 32-byte keys), comma or newline
    /// separated. Updating it rolls the pods.
    pub keys_secret_ref: SecretKeyRef,
    /// The id of the key new values are sealed with; the others only read.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub active: String,
    /// How the runtime hashes API keys for comparison: `SHA256` (default)
    /// or `SM3` (GB/T 32905).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<KeyDigest>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyDigest {
    Sha256,
    Sm3,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.persistentVolumeClaim)").message("knowledge needs exactly one of name (a ConfigMap) and persistentVolumeClaim"))]
pub struct KnowledgeSpec {
    /// A ConfigMap of FAQ files (.md, .yaml), mounted read-only at
    /// /etc/clawdbot/knowledge; edits reach the bot without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// A PersistentVolumeClaim of FAQ files, mounted read-only at
    /// /var/lib/clawdbot/knowledge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub persistent_volume_claim: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.backend) || self.backend != 'OpenAI' || has(self.endpoint)").message("model.endpoint is required when model.backend is OpenAI").field_path(".endpoint"))]
#[x_kube(validation = Rule::new("!has(self.apiKeySecretRef) || has(self.endpoint)").message("model.apiKeySecretRef needs model.endpoint").field_path(".apiKeySecretRef"))]
pub struct ModelSpec {
    /// `OpenAI`, `Local` or `None`. Unset: `OpenAI` when an endpoint is set,
    /// else `None`. `Local` raises the pod's default memory to 384Mi
    /// requested, 512Mi limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<ModelBackend>,
    /// The model file for `backend: Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalModelSpec>,
    /// OpenAI-compatible base URL, usually ending in /v1 (e.g. https://api.openai.com/v1
    /// or http://vllm.models:8000/v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s/]+.*$"))]
    pub endpoint: Option<String>,
    /// Model name sent to the endpoint and listed by the bot's /v1/models. Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
    /// The Secret key holding the endpoint's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Endpoints tried in order when the one before fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub fallbacks: Vec<ModelFallbackSpec>,
    /// System prompt for web-chat and IM conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub system_prompt: Option<String>,
    /// Sampling temperature used when a caller sets none, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Completion token limit used when a caller sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u32>,
}

/// A further OpenAI-compatible endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelFallbackSpec {
    /// OpenAI-compatible base URL.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s/]+.*$"))]
    pub endpoint: String,
    /// Model name there. Defaults to model.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Secret key holding this endpoint's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The Secret key holding the bot's API keys: comma-separated `KEY` or
    /// `KEY:admin`. Unset: the operator generates a Secret `<name>-api-keys`
    /// (key `api-keys`) once and names it in status.authSecretName, so no bot
    /// is an open relay spending the model key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsSpec {
    /// DingTalk. The Secret may also hold the channel's other runtime keys (reply_format, ...). Credentials Secret keys: app_key, app_secret, robot_code, webhook_url, secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dingtalk: Option<DingTalkChannel>,
    /// Feishu / Lark. The Secret may also hold the channel's other runtime keys (reply_format, ...). Credentials Secret keys: app_id, app_secret, verification_token, encrypt_key, notify_webhook_url, notify_secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feishu: Option<FeishuChannel>,
    /// WeCom. The Secret may also hold the channel's other runtime keys. Credentials Secret keys: corp_id, agent_id, secret, token, encoding_aes_key, robot_webhook_url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wecom: Option<BasicChannel>,
    /// Slack. The Secret may also hold the channel's other runtime keys. Credentials Secret keys: signing_secret, bot_token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<BasicChannel>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DingTalkMode {
    Http,
    Stream,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum FeishuMode {
    Webhook,
    WebSocket,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.credentialsSecretRef)").message("an enabled channel needs credentialsSecretRef").field_path(".credentialsSecretRef"))]
pub struct DingTalkChannel {
    /// Answer on this platform.
    #[serde(default)]
    pub enabled: bool,
    /// `Http` (DingTalk calls the bot's webhook; needs an Ingress) or `Stream`
    /// (the bot connects out; no public URL). Default Http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DingTalkMode>,
    /// Secret whose keys are the runtime's config leaf names for this platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.credentialsSecretRef)").message("an enabled channel needs credentialsSecretRef").field_path(".credentialsSecretRef"))]
pub struct FeishuChannel {
    /// Answer on this platform.
    #[serde(default)]
    pub enabled: bool,
    /// `Webhook` (Feishu calls the bot; needs an Ingress) or `WebSocket` (the
    /// bot connects out). Default Webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FeishuMode>,
    /// Secret whose keys are the runtime's config leaf names for this platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Use Lark (open.larksuite.com) instead of Feishu (open.feishu.cn).
    #[serde(default)]
    pub lark: bool,
    /// Webhook mode without an `encrypt_key` in the Secret: events then
    /// prove nothing but the plaintext verification token they carry, and
    /// cannot be refused as replays. Off unless you accept that.
    #[serde(default)]
    pub allow_unencrypted: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.credentialsSecretRef)").message("an enabled channel needs credentialsSecretRef").field_path(".credentialsSecretRef"))]
pub struct BasicChannel {
    /// Answer on this platform.
    #[serde(default)]
    pub enabled: bool,
    /// Secret whose keys are the runtime's config leaf names for this platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
pub struct AutoscalingSpec {
    /// Create the HorizontalPodAutoscaler.
    #[serde(default)]
    pub enabled: bool,
    /// Fewest pods. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: Option<i32>,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) to aim for. Default 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))").message("set disruptionBudget.minAvailable or maxUnavailable, not both"))]
pub struct DisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default)]
    pub enabled: bool,
    /// Pods that must stay up during voluntary disruptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_available: Option<i32>,
    /// Pods that may be down during voluntary disruptions. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_unavailable: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy.
    #[serde(default)]
    pub enabled: bool,
    /// Namespaces (by label `kubernetes.io/metadata.name`) allowed to reach the
    /// bot's port besides its own. Empty: its own namespace only, so list your
    /// ingress controller's namespace (e.g. ingress-nginx) when you use an Ingress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_namespaces: Vec<String>,
    /// Namespaces (by name) whose pods may scrape `/metrics` on the `metrics`
    /// port: your Prometheus's. Nothing else reaches that port, not even the
    /// bot's own namespace. Empty: no one can scrape the bot.
    #[serde(default = "default_monitoring_namespaces")]
    pub monitoring_namespaces: Vec<String>,
}

fn default_monitoring_namespaces() -> Vec<String> {
    vec!["monitoring".into()]
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_namespaces: Vec::new(),
            monitoring_namespaces: default_monitoring_namespaces(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.host)").message("an enabled ingress needs a host").field_path(".host"))]
pub struct IngressSpec {
    /// Create the Ingress.
    #[serde(default)]
    pub enabled: bool,
    /// Host name, e.g. bot.example.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub host: Option<String>,
    /// IngressClass to use. Unset: the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret with the TLS certificate for the host. Unset: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Extra annotations (e.g. cert-manager issuer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a ServiceMonitor and a PrometheusRule (the alerts, each with a
    /// runbook) for the Prometheus Operator. Without its CRDs the bot stays
    /// Ready and MonitoringReady says so; they are created once it is installed.
    #[serde(default)]
    pub enabled: bool,
    /// Labels your Prometheus selects ServiceMonitors and rules by (e.g. release: prometheus).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Per-alert changes, keyed by alert name (e.g. ClawdBotHighLatency):
    /// threshold, `for` duration, rate window, or `enabled: false`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alerts: BTreeMap<String, AlertOverride>,
    /// Where each alert's `runbook_url` points: `<base>/<AlertName>.md`.
    /// Unset: the runbooks in the project's docs/runbooks/.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_base_url: Option<String>,
    /// How often Prometheus scrapes the pods (e.g. 30s). Unset: your
    /// Prometheus's global scrape interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d|w|y))+$"))]
    pub scrape_interval: Option<String>,
    /// Also a ConfigMap `<name>-dashboard` labelled `grafana_dashboard: "1"`
    /// holding this bot's Grafana dashboard, for Grafana's sidecar. Works
    /// without the Prometheus Operator.
    #[serde(default)]
    pub grafana_dashboard: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertOverride {
    /// `false` leaves the alert out. Unset: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The alert's threshold, in the unit its runbook states (seconds, a
    /// share between 0 and 1, a rate per second, a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How long the condition must hold before the alert fires (e.g. 5m).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d|w|y))+$"))]
    pub for_: Option<String>,
    /// The rate/increase window of the expression (e.g. 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d|w|y))+$"))]
    pub window: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained requests per second per client address; 0 turns the limit off.
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub requests_per_second: f64,
    /// Requests a client may send in a burst above the sustained rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationLogsSpec {
    /// Exchanges older than this many days are deleted from the database,
    /// in small batches. Unset: kept until you delete them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub retention_days: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector for the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules for the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClawdBotStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, Paused, RuntimeReady, RedisReady,
    /// DatabaseReady, StateShared and (with spec.monitoring) MonitoringReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// bot-runtime pods that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// bot-runtime pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the pods, for the scale subresource (HPA, KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster URL of the bot, e.g. http://NAME.NAMESPACE.svc:18789.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret holding the bot's API keys (generated when auth.apiKeysSecretRef is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_name: Option<String>,
}
