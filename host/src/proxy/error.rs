//! Proxy errors: what went wrong, on which side, whether a retry is safe, and — in exactly one
//! place, [`ProxyError::status`] — which HTTP status the client sees.

use super::body::ResponseBody;
use http::{HeaderValue, Response, StatusCode, header};

/// Which party caused the error. Client errors are the client's fault (4xx); upstream errors
/// are the origin's (502/504); internal ones are ours (500/503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Request is syntactically fine for hyper but not acceptable for a proxy.
    BadRequest,
    /// HTTP/1.1 without exactly one valid `Host` (RFC 9112 §3.2).
    MissingHost,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3: smuggling risk).
    ConflictingFraming,
    /// A method a reverse proxy does not forward (CONNECT). 501, not 405: a 405 must list
    /// allowed methods, and we forward every other method.
    MethodNotSupported,
    /// Body larger than `limits.max_request_body`.
    BodyTooLarge,
    /// Request head larger than `limits.max_request_header_size`.
    HeadersTooLarge,
    /// TCP/TLS connect to the upstream failed or was refused.
    UpstreamUnreachable,
    /// Upstream closed or reset the connection, or spoke broken HTTP.
    UpstreamReset,
    /// Connect or response-header timeout.
    UpstreamTimeout,
    /// A connection or concurrency limit is reached.
    Overloaded,
    /// The client went away or its body stream failed while we were forwarding it.
    ClientAborted,
    /// The policy trapped, overran a limit or returned an invalid decision, with
    /// `fail = "closed"`.
    PolicyFailed,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind:?} ({side:?}): {detail}")]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    /// True when the upstream cannot have seen the request, so another endpoint may be tried.
    pub retryable: bool,
    /// For logs only; never sent to the client.
    pub detail: String,
    /// A short, fixed explanation sent to the client in `x-sluice-error` (circuit breaker,
    /// retry budget), where knowing why helps a client back off.
    pub reason: Option<&'static str>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        let (side, retryable) = match kind {
            ErrorKind::BadRequest
            | ErrorKind::MissingHost
            | ErrorKind::ConflictingFraming
            | ErrorKind::MethodNotSupported
            | ErrorKind::BodyTooLarge
            | ErrorKind::HeadersTooLarge
            | ErrorKind::ClientAborted => (Side::Client, false),
            ErrorKind::UpstreamUnreachable => (Side::Upstream, true),
            ErrorKind::UpstreamReset | ErrorKind::UpstreamTimeout => (Side::Upstream, false),
            ErrorKind::Overloaded => (Side::Internal, true),
            ErrorKind::PolicyFailed => (Side::Internal, false),
        };
        ProxyError {
            kind,
            side,
            retryable,
            detail: detail.into(),
            reason: None,
        }
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// The one mapping from error kind to HTTP status.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest | ErrorKind::MissingHost | ErrorKind::ConflictingFraming => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::MethodNotSupported => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::UpstreamUnreachable | ErrorKind::UpstreamReset => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Overloaded | ErrorKind::PolicyFailed => StatusCode::SERVICE_UNAVAILABLE,
            // Nobody may be listening; 400 is what nginx logs as 499's nearest standard code.
            ErrorKind::ClientAborted => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the client connection must close after the response (its framing is suspect or
    /// an unread body would follow).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConflictingFraming | ErrorKind::BodyTooLarge | ErrorKind::ClientAborted
        )
    }

    /// A short plain-text response with no internal details.
    pub fn to_response(&self) -> Response<ResponseBody> {
        let mut resp = status_response(self.status(), self.closes_connection());
        if let Some(r) = self.reason {
            resp.headers_mut().insert(
                header::HeaderName::from_static("x-sluice-error"),
                HeaderValue::from_static(r),
            );
        }
        resp
    }
}

/// A local response for `status`: `"<code> <reason>\n"` as text/plain.
pub fn status_response(status: StatusCode, close: bool) -> Response<ResponseBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ResponseBody::full(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
