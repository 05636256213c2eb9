//! Managed Redis and PostgreSQL, CloudNativePG and the cluster checks,
//! against the stateful fake API of common/fake_api.rs.

mod common;

use clawdbot_operator::controller::Apis;
use common::fake_api::{APPS, CORE, Run, condition, secret_value};
use serde_json::{Value, json};

fn managed() -> Value {
    json!({"replicas": 2, "redis": {"managed": {}}, "database": {"managed": {"backup": {"enabled": true}}}})
}

#[tokio::test]
async fn managed_redis_and_postgres_get_credentials_once_and_the_runtime_its_urls() {
    let run = Run::new();
    let status = run.reconcile(managed(), Apis::all(), &[]).await;

    let redis = run.get(&format!("{CORE}/secrets/hello-redis"));
    let db = run.get(&format!("{CORE}/secrets/hello-db"));
    let password = secret_value(&redis, "password");
    assert_eq!(password.len(), 48, "24 random bytes, hex");
    assert_eq!(secret_value(&db, "username"), "clawdbot");
    let db_password = secret_value(&db, "password");
    // Redis without a volume belongs to the bot; the database's credentials
    // outlive it with the retained volume.
    assert_eq!(redis["metadata"]["ownerReferences"][0]["uid"], "bot-uid");
    assert!(db["metadata"]["ownerReferences"].is_null(), "{db}");

    let conn = run.get(&format!("{CORE}/secrets/hello-connections"));
    assert_eq!(
        secret_value(&conn, "redis-url"),
        format!("redis://:{password}@hello-redis.default.svc:6379/0")
    );
    assert_eq!(
        secret_value(&conn, "database-url"),
        format!("postgres://clawdbot:{db_password}@hello-db.default.svc:5432/clawdbot")
    );
    for path in [
        format!("{APPS}/statefulsets/hello-redis"),
        format!("{APPS}/statefulsets/hello-db"),
        format!("{CORE}/services/hello-redis"),
        format!("{CORE}/services/hello-db"),
        "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/hello-redis".into(),
        "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/hello-db".into(),
        "/apis/batch/v1/namespaces/default/cronjobs/hello-db-backup".into(),
        format!("{CORE}/persistentvolumeclaims/hello-db-backup"),
    ] {
        assert!(!run.get(&path).is_null(), "{path} was created");
    }
    let sts = run.get(&format!("{APPS}/statefulsets/hello-db"));
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );
    assert_eq!(
        sts["metadata"]["annotations"]["clawdbot.io/postgres-major"],
        "17"
    );
    // The runtime reads both URLs from the connections Secret.
    let env =
        run.get(&format!("{APPS}/deployments/hello"))["spec"]["template"]["spec"]["containers"][0]
            ["env"]
            .clone();
    let from = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["secretKeyRef"]["name"].clone())
    };
    assert_eq!(from("REDIS_URL"), Some(json!("hello-connections")));
    assert_eq!(from("DATABASE_URL"), Some(json!("hello-connections")));
    assert!(!conn.to_string().contains("valueFrom"));
    // Not ready until the StatefulSets report ready pods.
    assert_eq!(condition(&status, "RedisReady")["status"], "False");
    assert_eq!(condition(&status, "DatabaseReady")["status"], "False");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert!(
        !status.to_string().contains(&password),
        "no password in status"
    );

    // Reconciled again (as after an operator restart: new context, empty
    // digest cache): the credentials are byte for byte the same.
    run.reconcile(managed(), Apis::all(), &[]).await;
    assert_eq!(run.get(&format!("{CORE}/secrets/hello-redis")), redis);
    assert_eq!(run.get(&format!("{CORE}/secrets/hello-db")), db);
    assert_eq!(
        secret_value(
            &run.get(&format!("{CORE}/secrets/hello-connections")),
            "redis-url"
        ),
        format!("redis://:{password}@hello-redis.default.svc:6379/0")
    );
}

#[tokio::test]
async fn a_deleted_credentials_secret_is_not_regenerated_over_existing_data() {
    let run = Run::new();
    run.reconcile(managed(), Apis::all(), &[]).await;
    let conn_before = run.get(&format!("{CORE}/secrets/hello-connections"));
    let sts_before = run.get(&format!("{APPS}/statefulsets/hello-db"));
    // The database pod wrote its volume; then someone deletes the Secret.
    run.seed(
        &format!("{CORE}/persistentvolumeclaims/data-hello-db-0"),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-hello-db-0", "namespace": "default"}}),
    );
    run.fake
        .lock()
        .unwrap()
        .objects
        .remove(&format!("{CORE}/secrets/hello-db"));
    run.clear_log();
    let status = run.reconcile(managed(), Apis::all(), &[]).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "CredentialsLost");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("data-hello-db-0")
    );
    assert_eq!(
        condition(&status, "DatabaseReady")["reason"],
        "CredentialsLost"
    );
    assert!(
        !run.wrote("POST", &format!("{CORE}/secrets")),
        "no new password"
    );
    assert!(run.get(&format!("{CORE}/secrets/hello-db")).is_null());
    assert_eq!(
        run.get(&format!("{CORE}/secrets/hello-connections")),
        conn_before
    );
    assert!(!run.wrote("PATCH", &format!("{APPS}/statefulsets/hello-db")));
    assert_eq!(
        run.get(&format!("{APPS}/statefulsets/hello-db")),
        sts_before
    );
    assert!(run.warnings().iter().any(|(r, _)| r == "CredentialsLost"));

    // Without data (a new volume), the Secret is simply made again.
    run.fake
        .lock()
        .unwrap()
        .objects
        .remove(&format!("{CORE}/persistentvolumeclaims/data-hello-db-0"));
    let status = run.reconcile(managed(), Apis::all(), &[]).await;
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert!(!run.get(&format!("{CORE}/secrets/hello-db")).is_null());
}

#[tokio::test]
async fn a_new_postgres_major_version_on_old_data_is_refused() {
    let run = Run::new();
    run.reconcile(managed(), Apis::all(), &[]).await;
    let sts = run.get(&format!("{APPS}/statefulsets/hello-db"));
    run.seed(
        &format!("{CORE}/persistentvolumeclaims/data-hello-db-0"),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-hello-db-0", "namespace": "default"}}),
    );
    let mut spec = managed();
    spec["database"]["managed"]["image"] = json!("postgres:18.1");
    let mut cached = sts.clone();
    cached["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "clawdbot-operator"});
    run.clear_log();
    let status = run.reconcile(spec.clone(), Apis::all(), &[cached]).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "MajorVersionChange");
    let m = degraded["message"].as_str().unwrap();
    assert!(
        m.contains("18") && m.contains("17") && m.contains("spec.database.managed.image"),
        "{m}"
    );
    assert!(!run.wrote("PATCH", &format!("{APPS}/statefulsets/hello-db")));
    assert_eq!(run.get(&format!("{APPS}/statefulsets/hello-db")), sts);
    // Redis and the runtime are still reconciled.
    assert!(run.wrote("PATCH", &format!("{APPS}/deployments/hello")));
    // A fresh volume may start on the new major.
    run.fake
        .lock()
        .unwrap()
        .objects
        .remove(&format!("{CORE}/persistentvolumeclaims/data-hello-db-0"));
    let status = run.reconcile(spec, Apis::all(), &[]).await;
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(
        run.get(&format!("{APPS}/statefulsets/hello-db"))["metadata"]["annotations"]["clawdbot.io/postgres-major"],
        "18"
    );
}

#[tokio::test]
async fn cloudnativepg_where_it_is_not_installed_is_degraded_and_touches_nothing_of_it() {
    let run = Run::new();
    let spec =
        json!({"database": {"cloudNativePG": {"instances": 3, "storage": {"size": "10Gi"}}}});
    let status = run.reconcile(spec.clone(), Apis::all(), &[]).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "CloudNativePGMissing");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("postgresql.cnpg.io/v1")
    );
    assert!(
        run.warnings()
            .iter()
            .any(|(r, n)| r == "CloudNativePGMissing" && n.contains("spec.database.cloudNativePG"))
    );
    // Installed: the Cluster appears, and the runtime reads CloudNativePG's URI.
    let apis = Apis {
        cnpg: true,
        ..Apis::all()
    };
    let status = run.reconcile(spec, apis, &[]).await;
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    let cluster = run.get("/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/hello-db");
    assert_eq!(cluster["spec"]["instances"], 3);
    assert_eq!(cluster["spec"]["storage"]["size"], "10Gi");
    assert_eq!(cluster["metadata"]["ownerReferences"][0]["uid"], "bot-uid");
    let env =
        run.get(&format!("{APPS}/deployments/hello"))["spec"]["template"]["spec"]["containers"][0]
            ["env"]
            .clone();
    let db = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DATABASE_URL")
        .unwrap()
        .clone();
    assert_eq!(
        db["valueFrom"]["secretKeyRef"],
        json!({"name": "hello-db-app", "key": "uri", "optional": false})
    );
    assert_eq!(
        condition(&status, "DatabaseReady")["reason"],
        "ClusterNotReady"
    );
}

#[tokio::test]
async fn a_storage_class_that_does_not_exist_is_named() {
    let run = Run::new();
    run.seed(
        "/apis/storage.k8s.io/v1/storageclasses/standard",
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "standard"}, "provisioner": "x"}),
    );
    let spec = json!({"database": {"managed": {"storageClassName": "fast-ssd"}}});
    let status = run.reconcile(spec, Apis::all(), &[]).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "StorageClassNotFound");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("spec.database.managed.storageClassName")
    );
    assert!(degraded["message"].as_str().unwrap().contains("fast-ssd"));
    let ok = json!({"database": {"managed": {"storageClassName": "standard"}}});
    let status = run.reconcile(ok, Apis::all(), &[]).await;
    assert_eq!(condition(&status, "Degraded")["status"], "False");
}

#[tokio::test]
async fn a_local_model_or_knowledge_claim_that_does_not_exist_is_degraded_not_a_crash_loop() {
    let run = Run::new();
    let spec = json!({
        "model": {"backend": "Local", "local": {"persistentVolumeClaim": "models", "path": "qwen.gguf"}},
        "knowledge": {"persistentVolumeClaim": "faq"},
    });
    let status = run.reconcile(spec.clone(), Apis::all(), &[]).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "PersistentVolumeClaimNotFound");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message
            .contains("spec.model.local.persistentVolumeClaim: PersistentVolumeClaim \"models\""),
        "{message}"
    );
    assert!(
        message.contains("spec.knowledge.persistentVolumeClaim: PersistentVolumeClaim \"faq\""),
        "{message}"
    );
    // Once both exist, the pod mounts them read-only and reads the file.
    for name in ["models", "faq"] {
        run.seed(
            &format!("/api/v1/namespaces/default/persistentvolumeclaims/{name}"),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"}, "spec": {}}),
        );
    }
    let status = run.reconcile(spec, Apis::all(), &[]).await;
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    let pod = run.get(&format!("{APPS}/deployments/hello"))["spec"]["template"]["spec"].clone();
    let claims: Vec<_> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .map(|c| (c.to_owned(), v["persistentVolumeClaim"]["readOnly"].clone()))
        })
        .collect();
    assert_eq!(
        claims,
        [
            ("faq".to_owned(), json!(true)),
            ("models".to_owned(), json!(true))
        ]
    );
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"],
        "512Mi"
    );
}

#[tokio::test]
async fn switching_away_from_managed_removes_its_children_but_keeps_retained_credentials() {
    let run = Run::new();
    run.reconcile(managed(), Apis::all(), &[]).await;
    // What the watch caches would hold after that reconcile.
    let cached = run.ours();
    let spec = json!({"replicas": 2, "redis": {"external": {"urlSecretRef": {"name": "r", "key": "url"}}}});
    run.reconcile(spec, Apis::all(), &cached).await;
    for gone in [
        format!("{APPS}/statefulsets/hello-redis"),
        format!("{APPS}/statefulsets/hello-db"),
        format!("{CORE}/services/hello-redis"),
        format!("{CORE}/services/hello-db"),
        format!("{CORE}/secrets/hello-redis"),
        format!("{CORE}/secrets/hello-connections"),
        "/apis/batch/v1/namespaces/default/cronjobs/hello-db-backup".into(),
    ] {
        assert!(run.get(&gone).is_null(), "{gone} deleted");
    }
    // Kept: the database credentials and the backup volume (not owned: the
    // retained data volume needs them).
    assert!(!run.get(&format!("{CORE}/secrets/hello-db")).is_null());
    assert!(
        !run.get(&format!("{CORE}/persistentvolumeclaims/hello-db-backup"))
            .is_null()
    );
}

#[tokio::test]
async fn several_pods_logging_to_their_own_files_get_one_warning() {
    let run = Run::new();
    let spec = json!({"replicas": 3, "redis": {"managed": {}}});
    let status = run.reconcile(spec.clone(), Apis::all(), &[]).await;
    assert_eq!(condition(&status, "StateShared")["reason"], "LogsPodLocal");
    assert_eq!(condition(&status, "Degraded")["status"], "False", "allowed");
    let count = |run: &Run| {
        run.warnings()
            .iter()
            .filter(|(r, n)| r == "StateNotShared" && n.contains("conversation logs"))
            .count()
    };
    assert_eq!(count(&run), 1);
    // Reconciled again with that status stored: no second Warning.
    run.reconcile(spec, Apis::all(), &[]).await;
    assert_eq!(count(&run), 1);
    // One pod: nothing to warn about.
    let single = Run::new();
    single
        .reconcile(json!({"redis": {"managed": {}}}), Apis::all(), &[])
        .await;
    assert_eq!(count(&single), 0);
}
