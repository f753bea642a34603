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
//!
//! One catch: wasmtime-wasi's synchronous bindings run their blocking functions (and the
//! destructors of streams) through `Handle::block_on` when called on a tokio thread, which
//! panics on a runtime worker, where policies run. [`link`] therefore replaces those functions
//! of `wasi:io` with synchronous ones (our streams never block: the log takes every write,
//! stdin is empty), and leaves `wasi:sockets` to the trap stubs (`revision.rs`): a policy that
//! opens a socket fails its call instead of panicking a worker.

use super::store::{GuestState, Shared};
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::io::streams::StreamError;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, OutputStream, Pollable, StreamResult,
};
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
        .build()
}

impl wasmtime_wasi::WasiView for GuestState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let shared = &self.shared;
        let ctx = self.wasi.get_or_insert_with(|| context(shared));
        wasmtime_wasi::WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// Whether the host links this import to WASI (so the stubs leave it alone): the 0.2
/// interfaces wasmtime-wasi implements, sockets aside. wasmtime's linker matches a guest's
/// `@0.2.x` with the implemented version by semver.
pub(super) fn provides(import: &str) -> bool {
    const PACKAGES: [&str; 5] = [
        "wasi:cli/",
        "wasi:clocks/",
        "wasi:io/",
        "wasi:random/",
        "wasi:filesystem/",
    ];
    PACKAGES.iter().any(|p| import.starts_with(p)) && import.contains("@0.2.")
}

/// The `wasi:io` version wasmtime-wasi 48 defines (its instances are named for it).
const IO_VERSION: &str = "0.2.12";

/// Links WASI into `linker` as described above.
pub(super) fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut streams = linker.instance(&format!("wasi:io/streams@{IO_VERSION}"))?;
    streams.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut cx, rep| {
            let s = Resource::<DynOutputStream>::new_own(rep);
            cx.data_mut().table.delete(s)?;
            Ok(())
        },
    )?;
    streams.resource(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut cx, rep| {
            let s = Resource::<DynInputStream>::new_own(rep);
            cx.data_mut().table.delete(s)?;
            Ok(())
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut cx, (s, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let stream = cx.data_mut().table.get_mut(&s)?;
            Ok((wit_result(
                stream
                    .write(Bytes::from(bytes))
                    .and_then(|()| stream.flush()),
            ),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut cx, (s, len): (Resource<DynOutputStream>, u64)| {
            let stream = cx.data_mut().table.get_mut(&s)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(64 * 1024);
            Ok((wit_result(
                stream
                    .write(Bytes::from(vec![0; len]))
                    .and_then(|()| stream.flush()),
            ),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut cx, (s,): (Resource<DynOutputStream>,)| {
            let stream = cx.data_mut().table.get_mut(&s)?;
            Ok((wit_result(stream.flush()),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |_, (_, _, _): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            Ok((Err::<u64, _>(StreamError::Closed),))
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut cx, (s, len): (Resource<DynInputStream>, u64)| {
            let stream = cx.data_mut().table.get_mut(&s)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            Ok((wit_result(stream.read(len).map(|b| b.to_vec())),))
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut cx, (s, len): (Resource<DynInputStream>, u64)| {
            let stream = cx.data_mut().table.get_mut(&s)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            Ok((wit_result(stream.skip(len).map(|n| n as u64)),))
        },
    )?;
    // Everything a policy can wait on is ready at once (its streams never block); a guest
    // that sleeps on a clock pollable returns immediately instead of holding a worker.
    let mut poll = linker.instance(&format!("wasi:io/poll@{IO_VERSION}"))?;
    poll.func_wrap("poll", |_, (list,): (Vec<Resource<DynPollable>>,)| {
        Ok(((0..list.len() as u32).collect::<Vec<u32>>(),))
    })?;
    poll.func_wrap(
        "[method]pollable.ready",
        |_, (_,): (Resource<DynPollable>,)| Ok((true,)),
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_,): (Resource<DynPollable>,)| Ok(()),
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The host type of a `wasi:io` resource another interface `use`s, by name.
pub(super) fn io_resource(name: &str) -> Option<ResourceType> {
    Some(match name {
        "pollable" => ResourceType::host::<DynPollable>(),
        "input-stream" => ResourceType::host::<DynInputStream>(),
        "output-stream" => ResourceType::host::<DynOutputStream>(),
        _ => return None,
    })
}

/// A stream outcome as the WIT's `result<T, stream-error>`.
fn wit_result<T>(r: StreamResult<T>) -> Result<T, StreamError> {
    // The log and empty stdin fail only by being closed; no error resource is needed.
    r.map_err(|_| StreamError::Closed)
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
        if text.is_empty() {
            // StarlingMonkey writes `console.log`'s newline on its own.
            self.line.clear();
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The replacements above must shadow wasmtime-wasi's own definitions: defining one of
    /// them again without shadowing fails only if the instance name is right.
    #[test]
    fn io_version_names_wasmtime_wasis_instances() {
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        let mut streams = linker
            .instance(&format!("wasi:io/streams@{IO_VERSION}"))
            .unwrap();
        let again = streams.func_wrap(
            "[method]output-stream.blocking-flush",
            |_, (_,): (Resource<DynOutputStream>,)| Ok((Ok::<(), StreamError>(()),)),
        );
        assert!(
            again.is_err(),
            "wasi:io@{IO_VERSION} is not what wasmtime-wasi defines"
        );
    }
}
