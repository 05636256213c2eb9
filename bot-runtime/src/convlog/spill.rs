//! The spill file: exchanges the database could not take yet, one JSON
//! object per line, appended and fsynced per batch. Replay renames the file
//! aside first, so appends during a replay land in a fresh file and nothing
//! is read twice or lost; a replay cut short is finished at the next one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncBufReadExt;

use super::Exchange;

pub struct Spill {
    path: PathBuf,
    /// Serializes appends and the rename that starts a replay.
    lock: Mutex<()>,
    /// Something was appended since the last replay started.
    pending: AtomicBool,
}

impl Spill {
    pub fn new(path: PathBuf) -> Self {
        let pending = path.exists() || replaying_path(&path).exists();
        Self {
            path,
            lock: Mutex::new(()),
            pending: AtomicBool::new(pending),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Appends the batch and fsyncs before returning (blocking IO: call it
    /// from `spawn_blocking`), so a spilled exchange survives a crash.
    pub fn append(&self, batch: &[Exchange]) -> std::io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(batch.len() * 256);
        for e in batch {
            serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let created = !self.path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&buf)?;
        f.sync_data()?;
        // A new file's name lives in the directory: sync that too, or a
        // crash could keep the data but lose the file.
        if created
            && let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            let _ = d.sync_all();
        }
        self.pending.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The file to replay: one left from an unfinished replay, else the
    /// spill file renamed aside. `None` when there is nothing to replay.
    pub fn take_for_replay(&self) -> std::io::Result<Option<PathBuf>> {
        let replaying = replaying_path(&self.path);
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if replaying.exists() {
            return Ok(Some(replaying));
        }
        self.pending.store(false, Ordering::SeqCst);
        match std::fs::rename(&self.path, &replaying) {
            Ok(()) => Ok(Some(replaying)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A replayed file is fully in the database: remove it.
    pub fn finish_replay(&self, file: &Path) -> std::io::Result<()> {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A replay failed part way: keep the file for the next attempt.
    pub fn replay_failed(&self) {
        self.pending.store(true, Ordering::SeqCst);
    }
}

fn replaying_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".replaying");
    path.with_file_name(name)
}

/// Reads a spill file in batches. A line that is not an exchange (a torn
/// last write, a stray edit, bad bytes) is logged and skipped: losing one
/// unreadable line beats refusing to start.
pub struct SpillReader {
    reader: tokio::io::BufReader<tokio::fs::File>,
    line_no: u64,
    pub skipped: u64,
}

impl SpillReader {
    pub async fn open(file: &Path) -> std::io::Result<Self> {
        let f = tokio::fs::File::open(file).await?;
        Ok(Self {
            reader: tokio::io::BufReader::new(f),
            line_no: 0,
            skipped: 0,
        })
    }

    /// The next batch; empty at the end of the file.
    pub async fn next_batch(&mut self, batch_size: usize) -> std::io::Result<Vec<Exchange>> {
        let mut out = Vec::new();
        let mut line = Vec::new();
        while out.len() < batch_size {
            line.clear();
            if self.reader.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            self.line_no += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Exchange>(&line) {
                Ok(e) if super::is_valid_exchange_id(&e.id) => out.push(e),
                Ok(_) => self.skip("the exchange id is not 32 hex digits"),
                Err(e) => self.skip(&e.to_string()),
            }
        }
        Ok(out)
    }

    fn skip(&mut self, why: &str) {
        self.skipped += 1;
        tracing::error!(
            line = self.line_no,
            error = why,
            "spill file: corrupt line skipped"
        );
    }
}
