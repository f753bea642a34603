//! Lines for the host's log, tagged by the host with the policy's name and revision.
//!
//! The host truncates messages to 4 KiB and drops lines below its configured level. A policy
//! that panics has its panic message logged at error level by the SDK before it traps.

use crate::__bindings::log as raw;

/// The level of a log line.
///
/// # Example
/// ```no_run
/// sluice_sdk::log::log(sluice_sdk::log::Level::Info, "hello");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    ///
    /// ```no_run
    /// sluice_sdk::log::log(sluice_sdk::log::Level::Trace, "entering decide");
    /// ```
    Trace,
    /// Debugging detail.
    ///
    /// ```no_run
    /// sluice_sdk::log::log(sluice_sdk::log::Level::Debug, "chose pool web");
    /// ```
    Debug,
    /// Normal events.
    ///
    /// ```no_run
    /// sluice_sdk::log::log(sluice_sdk::log::Level::Info, "maintenance mode is on");
    /// ```
    Info,
    /// Something unexpected that the policy handled.
    ///
    /// ```no_run
    /// sluice_sdk::log::log(sluice_sdk::log::Level::Warn, "bad setting, using the default");
    /// ```
    Warn,
    /// Something the policy could not handle.
    ///
    /// ```no_run
    /// sluice_sdk::log::log(sluice_sdk::log::Level::Error, "no pool configured");
    /// ```
    Error,
}

/// Writes `message` to the host's log at `level`.
///
/// # Example
/// ```no_run
/// use sluice_sdk::log::{self, Level};
/// let slow = true;
/// log::log(if slow { Level::Warn } else { Level::Debug }, "upstream is slow");
/// ```
pub fn log(level: Level, message: impl AsRef<str>) {
    let level = match level {
        Level::Trace => raw::Level::Trace,
        Level::Debug => raw::Level::Debug,
        Level::Info => raw::Level::Info,
        Level::Warn => raw::Level::Warn,
        Level::Error => raw::Level::Error,
    };
    raw::log(level, message.as_ref());
}

/// Writes `message` at trace level.
///
/// ```no_run
/// sluice_sdk::log::trace("decide called");
/// ```
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Writes `message` at debug level.
///
/// ```no_run
/// # fn f(req: &sluice_sdk::Request) {
/// sluice_sdk::log::debug(format!("path {}", req.path()));
/// # }
/// ```
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes `message` at info level.
///
/// ```no_run
/// sluice_sdk::log::info("canary enabled");
/// ```
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes `message` at warn level.
///
/// ```no_run
/// sluice_sdk::log::warn("unknown api key");
/// ```
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes `message` at error level.
///
/// ```no_run
/// sluice_sdk::log::error("setting `keys` is missing");
/// ```
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
