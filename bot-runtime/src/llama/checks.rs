//! What is checked before llama.cpp is touched: the CPU can run this build's
//! llama.cpp, and the model file is a readable GGUF (with the configured
//! checksum). Each failure is a sentence naming the file or the feature.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The x86-64 features llama.cpp is compiled for (.cargo/config.toml).
/// On a CPU without them llama.cpp would die with SIGILL, so the caller
/// picks the next backend instead.
pub fn cpu_problem() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let missing: Vec<&str> = [
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("bmi2", std::arch::is_x86_feature_detected!("bmi2")),
        ]
        .into_iter()
        .filter(|(_, has)| !has)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Some(format!(
                "this CPU lacks {}, which this build's llama.cpp needs (x86-64 with AVX2, FMA, F16C and BMI2)",
                missing.join(", ")
            ));
        }
    }
    None
}

/// Checks `path` is a GGUF file, and when `sha256` is given that it hashes
/// to it. Truncated or corrupt tensor data is llama.cpp's to find on load.
pub fn model_file_problem(path: &Path, sha256: Option<&str>) -> Option<String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("model file {shown} not found"));
        }
        Err(e) => return Some(format!("model file {shown}: {e}")),
    };
    if !meta.is_file() {
        return Some(format!("model file {shown} is not a regular file"));
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("model file {shown}: cannot open: {e}")),
    };
    let mut head = [0u8; 8];
    if file.read_exact(&mut head).is_err() {
        return Some(format!(
            "model file {shown} is truncated ({} bytes)",
            meta.len()
        ));
    }
    if &head[..4] != b"GGUF" {
        return Some(format!("model file {shown} is not a GGUF file (bad magic)"));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(2..=3).contains(&version) {
        return Some(format!(
            "model file {shown} has GGUF version {version}; llama.cpp reads 2 and 3"
        ));
    }
    let want = sha256?;
    match sha256_of(path) {
        Ok(got) if got.eq_ignore_ascii_case(want) => None,
        Ok(got) => Some(format!(
            "model file {shown} has SHA-256 {got}, but model.local.sha256 is {want}"
        )),
        Err(e) => Some(format!("model file {shown}: cannot read: {e}")),
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_and_the_problem() {
        let dir = std::env::temp_dir().join(format!("clawdbot-checks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("none.gguf");
        assert!(
            model_file_problem(&missing, None)
                .unwrap()
                .contains("none.gguf not found")
        );
        assert!(
            model_file_problem(&dir, None)
                .unwrap()
                .contains("not a regular file")
        );

        let short = dir.join("short.gguf");
        std::fs::write(&short, b"GGU").unwrap();
        assert!(
            model_file_problem(&short, None)
                .unwrap()
                .contains("truncated (3 bytes)")
        );

        let text = dir.join("text.gguf");
        std::fs::write(&text, b"<html>not a model</html>").unwrap();
        assert!(
            model_file_problem(&text, None)
                .unwrap()
                .contains("bad magic")
        );

        let good = dir.join("good.gguf");
        std::fs::write(&good, b"GGUF\x03\x00\x00\x00rest").unwrap();
        assert_eq!(model_file_problem(&good, None), None);
        let sum = sha256_of(&good).unwrap();
        assert_eq!(model_file_problem(&good, Some(&sum.to_uppercase())), None);
        let wrong = "0".repeat(64);
        let msg = model_file_problem(&good, Some(&wrong)).unwrap();
        assert!(
            msg.contains(&sum) && msg.contains("model.local.sha256"),
            "{msg}"
        );

        std::fs::write(&good, b"GGUF\x09\x00\x00\x00").unwrap();
        assert!(
            model_file_problem(&good, None)
                .unwrap()
                .contains("version 9")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
