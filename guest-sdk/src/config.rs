//! The policy's settings: the `[policy.settings]` table of the host's config.
//!
//! Values arrive as text: strings as written, numbers and booleans as TOML writes them
//! (`5`, `0.5`, `true`). Settings are fixed for the life of a policy revision.
//!
//! A setting with an unusable value is best treated as a bug: panicking with the
//! [`SettingError`] (`.unwrap_or_else(|e| panic!("{e}"))`) puts `setting `k` = `v`: expected
//! ...` in the host's log and makes the host apply its `fail` setting, and a host that
//! test-runs a new revision before publishing it rejects it.

use std::fmt;
use std::str::FromStr;

use crate::__bindings::config as raw;

/// A setting whose value could not be read as the type asked for.
///
/// # Example
/// ```no_run
/// let percent: u32 = match sluice_sdk::config::get_parsed("percent") {
///     Ok(value) => value.unwrap_or(5),
///     Err(e) => panic!("{e}"), // "setting `percent` = `lots`: expected u32"
/// };
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    /// The setting's key.
    ///
    /// ```
    /// # let e = sluice_sdk::config::SettingError { key: "percent".into(), value: "x".into(), expected: "u32" };
    /// assert_eq!(e.key, "percent");
    /// ```
    pub key: String,
    /// The value found.
    ///
    /// ```
    /// # let e = sluice_sdk::config::SettingError { key: "percent".into(), value: "x".into(), expected: "u32" };
    /// assert_eq!(e.value, "x");
    /// ```
    pub value: String,
    /// What was expected, e.g. `u32` or `a boolean (true/false/on/off/yes/no/1/0)`.
    ///
    /// ```
    /// # let e = sluice_sdk::config::SettingError { key: "percent".into(), value: "x".into(), expected: "u32" };
    /// assert_eq!(e.to_string(), "setting `percent` = `x`: expected u32");
    /// ```
    pub expected: &'static str,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "setting `{}` = `{}`: expected {}",
            self.key, self.value, self.expected
        )
    }
}

impl std::error::Error for SettingError {}

/// The value of setting `key` as text, or `None` when it is not set.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(_req: &Request) -> Decision {
///     match config::get("pool") {
///         Some(pool) => Decision::forward(pool),
///         None => Decision::forward_default(),
///     }
/// }
/// ```
pub fn get(key: &str) -> Option<String> {
    raw::get(key)
}

/// The value of setting `key`, or `default` when it is not set.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(_req: &Request) -> Decision {
///     Decision::forward(config::get_or("api_pool", "api"))
/// }
/// ```
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// Setting `key` as a boolean: `true`/`on`/`yes`/`1` or `false`/`off`/`no`/`0`, any case.
/// `Ok(None)` when it is not set.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(_req: &Request) -> Decision {
///     let down = config::get_bool("maintenance")
///         .unwrap_or_else(|e| panic!("{e}"))
///         .unwrap_or(false);
///     if down {
///         return Decision::respond(503, "down for maintenance\n");
///     }
///     Decision::forward_default()
/// }
/// ```
pub fn get_bool(key: &str) -> Result<Option<bool>, SettingError> {
    get(key).map(|value| parse_bool(key, value)).transpose()
}

/// Setting `key` parsed with [`FromStr`] (after trimming surrounding whitespace).
/// `Ok(None)` when it is not set.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(_req: &Request) -> Decision {
///     let ttl: u32 = config::get_parsed("ttl")
///         .unwrap_or_else(|e| panic!("{e}"))
///         .unwrap_or(60);
///     Decision::forward_default().ttl(ttl)
/// }
/// ```
pub fn get_parsed<T: FromStr>(key: &str) -> Result<Option<T>, SettingError> {
    let Some(value) = get(key) else {
        return Ok(None);
    };
    match value.trim().parse() {
        Ok(parsed) => Ok(Some(parsed)),
        Err(_) => Err(SettingError {
            key: key.to_owned(),
            value,
            expected: std::any::type_name::<T>(),
        }),
    }
}

fn parse_bool(key: &str, value: String) -> Result<bool, SettingError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(SettingError {
            key: key.to_owned(),
            value,
            expected: "a boolean (true/false/on/off/yes/no/1/0)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for on in ["true", "ON", " yes ", "1"] {
            assert_eq!(parse_bool("k", on.into()), Ok(true));
        }
        for off in ["false", "Off", "no", "0"] {
            assert_eq!(parse_bool("k", off.into()), Ok(false));
        }
        let e = parse_bool("k", "maybe".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "setting `k` = `maybe`: expected a boolean (true/false/on/off/yes/no/1/0)"
        );
    }
}
