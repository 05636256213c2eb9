//! The conversation log database: managed PostgreSQL (official image,
//! one-replica StatefulSet, pg_dump backups) or a CloudNativePG Cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource,
    PodTemplateSpec, Secret, Service, Volume,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::json;

use super::child_meta;
use super::stateful::{
    self, StatefulParts, empty_dir, exec_probe, generated_secret, mount, plain_env, resources,
    restricted_container, restricted_pod,
};
use crate::crd::{BackupSpec, ClawdBot, CloudNativePg, ManagedPostgres, postgres_major};
use crate::labels::{
    self, DATA_VOLUME, DATABASE, DATABASE_KEY, DB_BACKUP, PASSWORD_KEY, POSTGRES_PORT, RUNTIME,
    USERNAME_KEY,
};

/// Role and database the runtime uses.
pub const DB_USER: &str = "clawdbot";
pub const DB_NAME: &str = "clawdbot";
pub const DEFAULT_SIZE: &str = "1Gi";
pub const DEFAULT_BACKUP_SIZE: &str = "2Gi";
pub const DEFAULT_BACKUP_SCHEDULE: &str = "0 3 * * *";
pub const DEFAULT_BACKUP_KEEP: u32 = 7;
pub const DEFAULT_CNPG_INSTANCES: i32 = 3;
/// Annotation on the StatefulSet naming the PostgreSQL major version its
/// volume was written by.
pub const MAJOR_ANNOTATION: &str = "clawdbot.io/postgres-major";
/// PGDATA below the volume's root: initdb refuses a mount point that holds
/// `lost+found`.
const PGDATA: &str = "/var/lib/postgresql/data/pgdata";

/// The dump script the backup CronJob runs, from its environment: PGHOST,
/// PGPORT, PGUSER, PGPASSWORD, PGDATABASE (libpq's own variables),
/// BACKUP_DIR and KEEP. A dump is written under a temporary name and
/// renamed when complete, so a failed run never leaves a file that looks
/// like a backup; older dumps are removed only after a successful one.
pub const BACKUP_SCRIPT: &str = r#"set -eu
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$BACKUP_DIR/$PGDATABASE-$stamp.dump"
pg_dump --format=custom --no-owner --file="$out.partial"
mv "$out.partial" "$out"
ls -1 "$BACKUP_DIR"/*.dump | sort -r | tail -n +$((KEEP + 1)) | while read -r old; do rm -f -- "$old"; done
echo "backup written: $out ($(wc -c < "$out") bytes)"
"#;

fn credentials_name(cb: &ClawdBot) -> String {
    labels::db_name(&cb.name_any())
}

pub fn statefulset(cb: &ClawdBot, m: &ManagedPostgres, hash: &str) -> StatefulSet {
    let name = labels::db_name(&cb.name_any());
    let secret = credentials_name(cb);
    let ready = format!(
        "pg_isready -q -h 127.0.0.1 -p {POSTGRES_PORT} -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""
    );
    let container = Container {
        name: "postgres".into(),
        image: Some(m.image().to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: POSTGRES_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            stateful::secret_env("POSTGRES_USER", &secret, USERNAME_KEY),
            stateful::secret_env("POSTGRES_PASSWORD", &secret, PASSWORD_KEY),
            stateful::secret_env("POSTGRES_DB", &secret, DATABASE_KEY),
            plain_env("PGDATA", PGDATA),
            // Password (SCRAM) authentication for every TCP connection.
            plain_env("POSTGRES_INITDB_ARGS", "--auth-host=scram-sha-256"),
        ]),
        resources: Some(resources(m.resources.as_ref(), "100m", "256Mi", "512Mi")),
        readiness_probe: Some(exec_probe(&ready, 5, 3, 5)),
        liveness_probe: Some(exec_probe(&ready, 10, 6, 30)),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, "/var/lib/postgresql/data"),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    let claim = stateful::claim(
        cb,
        None,
        DATABASE,
        m.size.as_deref().unwrap_or(DEFAULT_SIZE),
        m.storage_class_name.as_ref(),
    );
    let mut annotations = BTreeMap::new();
    if let Some(major) = postgres_major(m.image()) {
        annotations.insert(MAJOR_ANNOTATION.to_owned(), major.to_string());
    }
    stateful::statefulset(
        cb,
        StatefulParts {
            name,
            component: DATABASE,
            container,
            volumes: vec![
                empty_dir("run", Some("1Mi")),
                empty_dir("tmp", Some("64Mi")),
            ],
            claim: Some(claim),
            when_deleted: if m.delete_claim_on_delete {
                "Delete"
            } else {
                "Retain"
            },
            hash,
            annotations,
        },
    )
}

pub fn service(cb: &ClawdBot) -> Service {
    stateful::service(
        cb,
        labels::db_name(&cb.name_any()),
        DATABASE,
        "postgres",
        POSTGRES_PORT,
    )
}

pub fn network_policy(cb: &ClawdBot) -> NetworkPolicy {
    stateful::network_policy(
        cb,
        labels::db_name(&cb.name_any()),
        DATABASE,
        POSTGRES_PORT,
        &[RUNTIME, DB_BACKUP],
    )
}

/// The credentials Secret. Unless deleteClaimOnDelete, it has no owner
/// reference: it stays with the retained data volume that needs it.
pub fn credentials_secret(cb: &ClawdBot, m: &ManagedPostgres, password: &str) -> Secret {
    let mut s = generated_secret(
        cb,
        credentials_name(cb),
        DATABASE,
        &[
            (USERNAME_KEY, DB_USER),
            (PASSWORD_KEY, password),
            (DATABASE_KEY, DB_NAME),
        ],
    );
    if !m.delete_claim_on_delete {
        s.metadata.owner_references = None;
    }
    s
}

/// The runtime's DATABASE_URL for a managed database.
pub fn url(cb: &ClawdBot, user: &str, password: &str, database: &str) -> String {
    let ns = cb.namespace().unwrap_or_else(|| "default".into());
    format!(
        "postgres://{}:{}@{}.{ns}.svc:{POSTGRES_PORT}/{}",
        super::url_escape(user),
        super::url_escape(password),
        labels::db_name(&cb.name_any()),
        super::url_escape(database),
    )
}

/// The backup volume. Created once and never owned by the ClawdBot unless
/// deleteClaimOnDelete: dumps outlive the bot like the data volume does.
pub fn backup_claim(cb: &ClawdBot, m: &ManagedPostgres, b: &BackupSpec) -> PersistentVolumeClaim {
    let (size, class) = match &b.volume {
        Some(v) => (v.size.as_str(), v.storage_class_name.as_ref()),
        None => (DEFAULT_BACKUP_SIZE, None),
    };
    let mut c = stateful::claim(
        cb,
        Some(labels::db_backup_name(&cb.name_any())),
        DB_BACKUP,
        size,
        class,
    );
    if !m.delete_claim_on_delete {
        c.metadata.owner_references = None;
    }
    c
}

pub fn backup_cronjob(cb: &ClawdBot, m: &ManagedPostgres, b: &BackupSpec) -> CronJob {
    let bot = cb.name_any();
    let name = labels::db_backup_name(&bot);
    let secret = credentials_name(cb);
    let keep = b.keep.unwrap_or(DEFAULT_BACKUP_KEEP);
    let container = Container {
        name: "pg-dump".into(),
        image: Some(m.image().to_owned()),
        command: Some(vec!["sh".into(), "-c".into(), BACKUP_SCRIPT.into()]),
        env: Some(vec![
            plain_env("PGHOST", &labels::db_name(&bot)),
            plain_env("PGPORT", &POSTGRES_PORT.to_string()),
            stateful::secret_env("PGUSER", &secret, USERNAME_KEY),
            stateful::secret_env("PGPASSWORD", &secret, PASSWORD_KEY),
            stateful::secret_env("PGDATABASE", &secret, DATABASE_KEY),
            plain_env("BACKUP_DIR", "/backup"),
            plain_env("KEEP", &keep.to_string()),
        ]),
        resources: Some(resources(None, "50m", "64Mi", "256Mi")),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![mount("backup", "/backup"), mount("tmp", "/tmp")]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "backup".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: name.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        empty_dir("tmp", Some("16Mi")),
    ];
    let mut pod = restricted_pod(vec![container], volumes);
    pod.restart_policy = Some("OnFailure".into());
    CronJob {
        metadata: child_meta(cb, name, DB_BACKUP),
        spec: Some(CronJobSpec {
            schedule: b
                .schedule
                .clone()
                .unwrap_or_else(|| DEFAULT_BACKUP_SCHEDULE.into()),
            time_zone: Some("Etc/UTC".into()),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels::labels(&bot, DB_BACKUP)),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    }
}

pub const CNPG_API_VERSION: &str = "postgresql.cnpg.io/v1";

/// A CloudNativePG Cluster with one application database owned by the
/// `clawdbot` role; CloudNativePG writes its URI to `<cluster>-app`.
pub fn cnpg_cluster(cb: &ClawdBot, c: &CloudNativePg) -> DynamicObject {
    let meta = child_meta(cb, labels::db_name(&cb.name_any()), DATABASE);
    let mut storage = json!({ "size": c.storage.size });
    if let Some(class) = &c.storage.storage_class {
        storage["storageClass"] = json!(class);
    }
    let mut spec = json!({
        "instances": c.instances.unwrap_or(DEFAULT_CNPG_INSTANCES),
        "storage": storage,
        "bootstrap": {"initdb": {"database": DB_NAME, "owner": DB_USER}},
    });
    if let Some(image) = &c.image_name {
        spec["imageName"] = json!(image);
    }
    let mut obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": CNPG_API_VERSION,
        "kind": "Cluster",
        "metadata": {},
        "spec": spec,
    }))
    .expect("a static object shape");
    obj.metadata = meta;
    obj
}
