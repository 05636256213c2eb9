//! Encryption-at-rest throughput on one core, for docs/benchmarks.md:
//! sealing and opening stored values with SM4-GCM and AES-256-GCM side by
//! side, through `Keyring` (base64 envelope included). Prints one JSON
//! object.
//!
//!   cargo run --release -p bot-runtime --example crypto_bench

use std::time::{Duration, Instant};

use bot_runtime::crypto::Keyring;
use clawdbot_config::encryption::{Algorithm, KeySpec};

/// MB/s (10^6 bytes) of plaintext for `f` over `size`-byte messages,
/// running for about `budget`.
fn throughput(size: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget {
        f();
        n += 1;
    }
    (n as f64 * size as f64) / started.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let budget = Duration::from_millis(700);
    let mut out = serde_json::Map::new();
    for (alg, key_len) in [(Algorithm::Sm4Gcm, 16), (Algorithm::Aes256Gcm, 32)] {
        let ring = Keyring::new(
            &[KeySpec {
                id: "bench".into(),
                algorithm: alg,
                key: vec![0x5a; key_len],
            }],
            Some("bench".into()),
        );
        for size in [200usize, 4096, 65536] {
            let text = "会".repeat(size / 3) + &"x".repeat(size % 3);
            let aad = b"conversations.user_input:123456";
            let stored = ring.seal(&text, aad);
            let seal = throughput(size, budget, || {
                std::hint::black_box(ring.seal(std::hint::black_box(&text), aad));
            });
            let open = throughput(size, budget, || {
                std::hint::black_box(ring.open(std::hint::black_box(&stored), aad).unwrap());
            });
            out.insert(
                format!("{}_{size}", alg.name()),
                serde_json::json!({"seal_mb_s": seal, "open_mb_s": open}),
            );
        }
    }
    println!("{}", serde_json::Value::Object(out));
}
