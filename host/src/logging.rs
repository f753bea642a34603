//! Process-wide `tracing` subscriber: text or JSON, filter from the config (overridable with
//! `RUST_LOG`). Access-log lines are events with target `sluice::access`.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from a binary; tests leave it alone.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Logs go to stderr (stdout stays for program output such as `sluice policy test`'s JSON),
    // coloured only on a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The access log's writer. Lines go through a bounded queue to a thread of their own, so a
/// slow disk or a blocked stderr never holds a request up: when the queue is full the line
/// is dropped and counted (`sluice_access_log_dropped_total`).
pub struct AccessLog {
    tx: std::sync::mpsc::SyncSender<String>,
    pub format: LogFormat,
    written: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
}

/// Lines the queue holds before it drops.
const QUEUE: usize = 16 * 1024;

impl AccessLog {
    /// Starts the writer for `cfg`'s access log (`None` when it is off): appending to
    /// `access_log_path`, or to stderr.
    pub fn start(cfg: &LogConfig) -> std::io::Result<Option<std::sync::Arc<AccessLog>>> {
        if !cfg.access_log {
            return Ok(None);
        }
        let out: Box<dyn std::io::Write + Send> = match &cfg.access_log_path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stderr()),
        };
        Self::with_writer(out, cfg.format, QUEUE).map(|l| Some(std::sync::Arc::new(l)))
    }

    /// A writer thread for `out`, queueing up to `queue` lines.
    fn with_writer(
        out: Box<dyn std::io::Write + Send>,
        format: LogFormat,
        queue: usize,
    ) -> std::io::Result<AccessLog> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(queue);
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || write_lines(rx, out))?;
        Ok(AccessLog {
            tx,
            format,
            written: Default::default(),
            dropped: Default::default(),
        })
    }

    /// Queues one line (without its newline); never blocks.
    pub fn write(&self, line: String) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.tx.try_send(line) {
            Ok(()) => self.written.fetch_add(1, Relaxed),
            Err(_) => self.dropped.fetch_add(1, Relaxed),
        };
    }

    /// `(queued, dropped)` lines so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.written.load(Relaxed), self.dropped.load(Relaxed))
    }
}

/// The writer thread: writes lines as they come, flushing whenever the queue is empty; ends
/// when the last sender is gone.
fn write_lines(rx: std::sync::mpsc::Receiver<String>, out: Box<dyn std::io::Write + Send>) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
    while let Ok(first) = rx.recv() {
        let mut line = Some(first);
        while let Some(l) = line {
            if out
                .write_all(l.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .is_err()
            {
                return;
            }
            line = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex, mpsc};

    /// A writer that says when a write starts, holds it until the test lets it go, and
    /// keeps what it got.
    struct Stuck {
        entered: mpsc::Sender<()>,
        gate: mpsc::Receiver<()>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.gate.recv();
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_writer_never_blocks_the_caller_lines_are_dropped_and_counted() {
        let (release, gate) = mpsc::channel();
        let (entered, in_write) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let out = Box::new(Stuck {
            entered,
            gate,
            got: got.clone(),
        });
        let log = AccessLog::with_writer(out, LogFormat::Json, 4).unwrap();
        // The first line reaches the writer, which blocks in its write (the queue is then
        // empty, so it flushes). The queue takes 4 more; the rest are dropped at once.
        log.write("line 0".into());
        in_write.recv().unwrap();
        for i in 1..100 {
            log.write(format!("line {i}"));
        }
        assert_eq!(log.counts(), (5, 95));
        drop(release);
        drop(log);
        // With the gate gone every write goes through; the thread ends with the sender.
        for _ in 0..1000 {
            let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
            if text.lines().count() == 5 {
                assert_eq!(text, "line 0\nline 1\nline 2\nline 3\nline 4\n");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("the queued lines were not written");
    }
}
