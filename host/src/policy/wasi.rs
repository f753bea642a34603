//! The WASI a policy gets: what language runtimes need to start and run (JavaScript's
//! StarlingMonkey, CPython, wasi-libc), and nothing that reaches outside the sandbox.
//!
//! - clocks and random: real (an interpreter seeds its hash tables and reads the time);
//! - stdout and stderr: the policy log (target `sluice::guest`, info and warn), line by line,
//!   lines cut at 4 KiB; stdin is empty;
//! - environment and arguments: empty;
//! - filesystem: linked, with no preopened directory, so there is no path to open;
//! - sockets: linked, every address and name lookup denied.
//!
//! wasmtime-wasi implements the interfaces (a crate does it well; we only choose what is
//! granted). The context is built on a store's first WASI call, so a guest that never calls
//! WASI (a Rust policy's usual case) pays nothing for it.

use super::host::Shared;
use bytes::Bytes;
use std::sync::Arc;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Longest line kept; longer ones are cut.
const MAX_LINE: usize = 4096;

/// The sandbox's WASI context for one store.
pub(super) fn context(shared: &Arc<Shared>) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(LogSink {
            shared: shared.clone(),
            stderr: false,
        })
        .stderr(LogSink {
            shared: shared.clone(),
            stderr: true,
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Whether the host links this import to WASI (so the stubs leave it alone): the 0.2
/// interfaces wasmtime-wasi implements. wasmtime's linker matches a guest's `@0.2.x` with the
/// implemented version by semver.
pub(super) fn provides(import: &str) -> bool {
    const PACKAGES: [&str; 6] = [
        "wasi:cli/",
        "wasi:clocks/",
        "wasi:io/",
        "wasi:random/",
        "wasi:filesystem/",
        "wasi:sockets/",
    ];
    PACKAGES.iter().any(|p| import.starts_with(p)) && import.contains("@0.2.")
}

/// stdout or stderr of a guest.
struct LogSink {
    shared: Arc<Shared>,
    stderr: bool,
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LogStream {
            shared: self.shared.clone(),
            stderr: self.stderr,
            line: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the WASIp2 interfaces are linked; nothing asks for this.
        Box::new(tokio::io::sink())
    }
}

/// One open stdout/stderr stream: bytes are collected into lines for the log.
struct LogStream {
    shared: Arc<Shared>,
    stderr: bool,
    line: Vec<u8>,
}

impl LogStream {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (policy, revision) = (&*self.shared.name, self.shared.revision);
        if self.stderr {
            tracing::warn!(target: "sluice::guest", policy, revision, stream = "stderr", "{text}");
        } else {
            tracing::info!(target: "sluice::guest", policy, revision, stream = "stdout", "{text}");
        }
        self.line.clear();
    }
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") {
                self.emit();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.emit();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.emit();
    }
}
