//! [`Response`]: the response head `on-response` looks at, and [`ResponseDecision`]: what to
//! do with it.

use crate::__bindings::{response as raw, types};
use crate::request::Header;
use std::cell::OnceCell;

/// Where a response comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The upstream answered this request; [`ResponseDecision::ttl`], [`cache_tag`] and
    /// [`no_store`] apply to storing it.
    ///
    /// [`cache_tag`]: ResponseDecision::cache_tag
    /// [`no_store`]: ResponseDecision::no_store
    Upstream,
    /// A stored response (a hit, a stale one, or one the upstream just revalidated).
    Cache,
}

/// The response head being served, lent to the function named by
/// `#[policy(on_response = ...)]` for one call. Accessors call into the host; the status is
/// fetched once.
pub struct Response {
    status: OnceCell<u16>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status.get())
            .finish_non_exhaustive()
    }
}

impl Response {
    pub(crate) fn current() -> Self {
        Response {
            status: OnceCell::new(),
        }
    }

    /// The status code, e.g. `200` or `503`.
    pub fn status(&self) -> u16 {
        *self.status.get_or_init(raw::status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        raw::header(name)
    }

    /// [`header`](Self::header) as text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| String::from_utf8(v).ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        raw::header_all(name)
    }

    /// All header fields, in order. Prefer [`header`](Self::header) when you know the name.
    pub fn headers(&self) -> Vec<Header> {
        raw::headers()
            .into_iter()
            .map(|h| Header {
                name: h.name,
                value: h.value,
            })
            .collect()
    }

    /// Where the response comes from.
    pub fn source(&self) -> Source {
        match raw::source() {
            raw::ResponseSource::Upstream => Source::Upstream,
            raw::ResponseSource::Cache => Source::Cache,
        }
    }

    /// The endpoint (`host:port`) that answered, for a response from the upstream.
    pub fn endpoint(&self) -> Option<String> {
        raw::endpoint()
    }
}

/// What to do with a response: serve it (with changes) or answer with something else.
///
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn on_response(_req: &Request, resp: &Response) -> ResponseDecision {
///     if resp.status() >= 500 {
///         return ResponseDecision::respond(503, "<h1>Back soon</h1>")
///             .header("content-type", "text/html");
///     }
///     ResponseDecision::serve().set_header("x-served-by", "sluice")
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ResponseDecision(types::ResponseDecision);

impl ResponseDecision {
    /// Serves the response as it is (add changes with the builder methods).
    pub fn serve() -> Self {
        ResponseDecision(types::ResponseDecision::Serve(types::Serve {
            edits: Vec::new(),
            ttl_secs: None,
            tags: Vec::new(),
            no_store: false,
        }))
    }

    /// Answers with `status` (200..=599) and `body` instead; the response is discarded.
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> Self {
        ResponseDecision(types::ResponseDecision::Respond(types::LocalResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }))
    }

    fn serving(&mut self) -> Option<&mut types::Serve> {
        match &mut self.0 {
            types::ResponseDecision::Serve(s) => Some(s),
            types::ResponseDecision::Respond(_) => None,
        }
    }

    fn edit(mut self, op: types::EditOp, name: &str, value: &[u8]) -> Self {
        if let Some(s) = self.serving() {
            s.edits.push(types::HeaderEdit {
                op,
                name: name.to_ascii_lowercase(),
                value: value.to_vec(),
            });
        }
        self
    }

    /// Replaces every value of response header `name` (when serving).
    pub fn set_header(self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.edit(types::EditOp::Set, name.as_ref(), value.as_ref())
    }

    /// Adds a value of response header `name` (when serving).
    pub fn append_header(self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.edit(types::EditOp::Append, name.as_ref(), value.as_ref())
    }

    /// Removes response header `name` (when serving).
    pub fn remove_header(self, name: impl AsRef<str>) -> Self {
        self.edit(types::EditOp::Remove, name.as_ref(), b"")
    }

    /// Stores the response for `secs` seconds, whatever the decision or the origin said
    /// (within RFC 9111's rules: it never makes a `no-store` or `private` response storable).
    /// Only for a response from the upstream.
    pub fn ttl(mut self, secs: u32) -> Self {
        if let Some(s) = self.serving() {
            s.ttl_secs = Some(secs);
        }
        self
    }

    /// Adds a purge tag to the stored response. Only for a response from the upstream.
    pub fn cache_tag(mut self, tag: impl Into<String>) -> Self {
        if let Some(s) = self.serving() {
            s.tags.push(tag.into());
        }
        self
    }

    /// Serves the response without storing it. Only for a response from the upstream.
    pub fn no_store(mut self) -> Self {
        if let Some(s) = self.serving() {
            s.no_store = true;
        }
        self
    }

    /// Adds a header to a local response ([`respond`](Self::respond)).
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        if let types::ResponseDecision::Respond(r) = &mut self.0 {
            r.headers.push(types::Header {
                name: name.as_ref().to_ascii_lowercase(),
                value: value.as_ref().to_vec(),
            });
        }
        self
    }

    pub(crate) fn into_raw(self) -> types::ResponseDecision {
        self.0
    }
}
