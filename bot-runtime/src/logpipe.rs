//! Log output off the request path: each event is formatted on the thread
//! that logs it, then handed whole to one writer thread, which writes
//! whatever has queued up with one buffered write, flushes when the queue
//! runs dry and pauses briefly so the next lines gather. A request's log
//! line then costs a queue push instead of a write system call on a
//! runtime worker.
//!
//! Nothing is dropped: when the queue is full the logging thread waits, as
//! it would on a slow stdout. [`Flush`] writes out everything logged before
//! it is dropped (at the end of `serve`).

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds before a logging thread waits.
const CAPACITY: usize = 16 * 1024;
/// The writer's pause after each write: how late a line can be, at most.
const GATHER: Duration = Duration::from_millis(2);
/// How long [`Flush`] waits for the writer at exit.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The [`MakeWriter`] for the fmt layer.
#[derive(Clone)]
pub struct LogPipe {
    tx: SyncSender<Msg>,
}

/// One event's bytes, sent when the formatter is done with it.
pub struct EventWriter {
    buf: Vec<u8>,
    tx: SyncSender<Msg>,
}

/// Dropped last: waits until every line logged before it is written.
pub struct Flush {
    tx: SyncSender<Msg>,
}

impl LogPipe {
    /// Starts the writer thread over `out`. `None` when the thread cannot
    /// start (the caller logs synchronously instead).
    pub fn start<W: Write + Send + 'static>(out: W) -> Option<(Self, Flush)> {
        let (tx, rx) = sync_channel(CAPACITY);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_lines(rx, out))
            .ok()?;
        Some((Self { tx: tx.clone() }, Flush { tx }))
    }
}

fn write_lines<W: Write>(rx: Receiver<Msg>, out: W) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    // Write errors (a closed stdout) are ignored: there is nowhere to report them.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Msg::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        // Let lines gather: under load the writer then wakes a few hundred
        // times a second instead of once per line.
        std::thread::sleep(GATHER);
    }
    let _ = out.flush();
}

impl<'a> MakeWriter<'a> for LogPipe {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            buf: Vec::with_capacity(512),
            tx: self.tx.clone(),
        }
    }
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.tx.send(Msg::Line(std::mem::take(&mut self.buf)));
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        let (done, written) = sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = written.recv_timeout(FLUSH_WAIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_per_thread_by_the_flush() {
        let out = Shared::default();
        let (pipe, flush) = LogPipe::start(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let pipe = pipe.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let mut w = pipe.make_writer();
                        // Written in pieces, as a formatter does.
                        write!(w, "thread {t} ").unwrap();
                        writeln!(w, "line {i}").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flush);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 4, "a torn line: {line:?}");
            let (t, i): (usize, usize) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
            assert_eq!(i, next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
    }
}
