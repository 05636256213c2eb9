//! Log output: text or one JSON object per line, through
//! tracing-appender's non-blocking writer, to stdout or (with
//! `logging.file.path`) to a file rotated by size.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use clawdbot_config::{LogFileConfig, LogFormat, RuntimeConfig};
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines a logging thread may have queued before it waits for the writer.
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Logs go through tracing-appender's writer thread, so a request's log
/// line is a queue push, not a write system call on a runtime worker.
/// Nothing is dropped (not lossy): with the queue full the logging thread
/// waits, as on a slow disk. The guard writes out what is left when
/// `serve` returns. Err names the log file and why it cannot be written.
pub fn init(cfg: &RuntimeConfig) -> Result<WorkerGuard, String> {
    // llama.cpp narrates every model load at info level (dozens of lines):
    // only its warnings, unless RUST_LOG asks for more.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},llama-cpp-2=warn", cfg.logging.level)))
        .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn"));
    let sink: Box<dyn Write + Send> = match &cfg.logging.file.path {
        Some(path) => Box::new(rotating_file(Path::new(path), &cfg.logging.file)?),
        None => Box::new(std::io::stdout()),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(sink);
    let to_file = cfg.logging.file.path.is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!to_file)
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
    Ok(guard)
}

/// The log file, rotated once it passes `max_size_mb`: `NAME.1` is the
/// newest rotated file, at most `max_files` are kept. Each write from the
/// writer thread is one whole log line, so `BytesSurpassed` never splits
/// a line across files.
fn rotating_file(path: &Path, file: &LogFileConfig) -> Result<FileRotate<AppendCount>, String> {
    // file-rotate panics when it cannot create or open the file: check
    // first, so a bad path is a start-up error naming it.
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!(
            "logging.file.path: folder {} of {shown} does not exist",
            parent.display()
        ));
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("logging.file.path: cannot write {shown}: {e}"))?;
    let bytes = usize::try_from(file.max_size_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let mut options = OpenOptions::new();
    options.read(true).create(true).append(true);
    Ok(FileRotate::new(
        path,
        AppendCount::new(file.max_files),
        ContentLimit::BytesSurpassed(bytes),
        Compression::None,
        Some(options),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("clawdbot-log-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(max_files: usize) -> LogFileConfig {
        LogFileConfig {
            path: None,
            max_size_mb: 1,
            max_files,
        }
    }

    #[test]
    fn the_file_rotates_by_size_keeping_whole_lines_and_max_files() {
        let dir = TempDir::new("rotate");
        let path = dir.path().join("bot-runtime.log");
        let mut log = rotating_file(&path, &config(2)).unwrap();
        // 4 MiB of 100-byte lines, one write per line as the writer thread does.
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..(4 * 1024 * 1024 / line.len()) {
            log.write_all(line.as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["bot-runtime.log", "bot-runtime.log.1", "bot-runtime.log.2"]
        );
        for name in &names[1..] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() >= 1024 * 1024 && text.len() < 1024 * 1024 + line.len());
            assert!(
                text.lines().all(|l| l.len() == 99),
                "{name} holds a split line"
            );
        }
    }

    #[test]
    fn a_missing_folder_or_unwritable_file_is_an_error_naming_it() {
        let dir = TempDir::new("missing");
        let missing = dir.path().join("nope").join("bot-runtime.log");
        let err = rotating_file(&missing, &config(3)).err().unwrap();
        assert!(
            err.starts_with("logging.file.path:") && err.contains("nope"),
            "{err}"
        );
        let err = rotating_file(dir.path(), &config(3)).err().unwrap();
        assert!(err.contains("cannot write"), "{err}");
    }
}
