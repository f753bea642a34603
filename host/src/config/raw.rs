//! Raw configuration: the TOML file as serde sees it.
//!
//! Every struct rejects unknown keys so a typo is an error, not a silently ignored setting.
//! Nothing here is validated beyond its TOML type; `validate.rs` turns these into the typed
//! [`super::Config`].

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listener: Vec<RawListener>,
    #[serde(default)]
    pub pool: Vec<RawPool>,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub log: RawLog,
    pub policy: Option<RawPolicy>,
    pub cache: Option<RawCache>,
    #[serde(default)]
    pub runtime: RawRuntime,
    pub otlp: Option<RawOtlp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    pub endpoint: String,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
    #[serde(default, deserialize_with = "duration")]
    pub flush_interval: Option<std::time::Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub mode: Option<String>,
    pub workers: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub capacity: Option<bytesize::ByteSize>,
    pub max_object_size: Option<bytesize::ByteSize>,
    #[serde(default, deserialize_with = "duration")]
    pub coalesce_timeout: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub hit_for_miss: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub stale_on_error: Option<std::time::Duration>,
    pub stale_on_5xx: Option<bool>,
    pub convert_head: Option<bool>,
    /// Field name -> comparison mode.
    pub vary: Option<std::collections::BTreeMap<String, String>>,
    pub targeted: Option<Vec<String>>,
    pub forward_targeted: Option<bool>,
    pub x_cache: Option<bool>,
    pub name: Option<String>,
    pub shared: Option<RawShared>,
}

/// `[cache.shared]`: the fleet's Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    pub url: String,
    pub namespace: Option<String>,
    pub node: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub lock_lease: Option<std::time::Duration>,
    pub breaker_failures: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub breaker_open: Option<std::time::Duration>,
    pub chunk_size: Option<bytesize::ByteSize>,
    pub connections: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub heartbeat: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub canary_window: Option<std::time::Duration>,
    pub rollback_failure_ratio: Option<f64>,
    pub rollback_5xx_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub address: String,
    pub tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<RawCertificate>,
    /// Index into `certificates` of the certificate served when SNI matches nothing.
    pub default_certificate: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
    /// Names this certificate answers for; taken from the certificate's SANs when absent.
    pub server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: String,
    pub endpoints: Vec<RawEndpoint>,
    pub protocol: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub max_idle_per_endpoint: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<std::time::Duration>,
    pub algorithm: Option<String>,
    /// Percent of endpoints that must be healthy to avoid panic mode.
    pub panic_threshold: Option<f64>,
    #[serde(default, deserialize_with = "duration")]
    pub slow_start: Option<std::time::Duration>,
    pub retries: Option<i64>,
    pub retry_budget: Option<RawRetryBudget>,
    /// Largest request body buffered so a retry can replay it.
    pub retry_buffer: Option<bytesize::ByteSize>,
    pub max_in_flight: Option<i64>,
    pub max_in_flight_per_endpoint: Option<i64>,
    pub ring_hash: Option<RawRingHash>,
    pub maglev: Option<RawMaglev>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier_detection: Option<RawOutlier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    pub percent: Option<f64>,
    pub min_concurrent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRingHash {
    pub points_per_weight: Option<i64>,
    pub bounded_load: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaglev {
    pub table_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub jitter: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<std::time::Duration>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub initial: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    /// Status codes and ranges: `[200, "300-399"]`.
    pub expect_status: Option<Vec<toml::Value>>,
    pub expect_body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub enabled: Option<bool>,
    pub consecutive_5xx: Option<i64>,
    pub consecutive_gateway_errors: Option<i64>,
    pub consecutive_connect_failures: Option<i64>,
    #[serde(default, deserialize_with = "duration")]
    pub base_ejection_time: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub max_ejection_time: Option<std::time::Duration>,
    pub max_ejection_percent: Option<f64>,
}

/// An endpoint is either `"host:port"` or `{ address = "host:port", weight = 3 }`.
#[derive(Debug)]
pub enum RawEndpoint {
    Address(String),
    Full(RawEndpointTable),
}

// Hand-written instead of `#[serde(untagged)]`: untagged enums replace the inner error (say,
// an unknown key in the table) with "data did not match any variant".
impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawEndpoint;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"host:port\" or { address = \"host:port\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint::Address(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawEndpoint, A::Error> {
                RawEndpointTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawEndpoint::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// `"500ms"`, `"10s"`, `"1m 30s"` (humantime syntax), with the parser's reason on error.
fn duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration \"{s}\": {e} (try \"500ms\", \"10s\", \"2m\")"
        ))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpointTable {
    pub address: String,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// SNI and the name the upstream certificate is verified against.
    pub server_name: Option<String>,
    /// PEM bundle of trusted roots; the public web PKI (webpki-roots) when absent.
    pub ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub default_pool: Option<String>,
    pub preserve_host: Option<bool>,
    pub via: Option<bool>,
    pub forwarded_headers: Option<bool>,
    pub via_name: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub client_ip: Option<String>,
    pub request_id: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, deserialize_with = "duration")]
    pub client_header: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub client_idle: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub upstream_connect: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub upstream_response: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_grace: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub lingering: Option<std::time::Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<i64>,
    pub max_request_header_size: Option<bytesize::ByteSize>,
    pub max_request_body: Option<bytesize::ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
    pub token: Option<String>,
    pub allow_non_loopback: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
    pub access_log: Option<bool>,
    pub access_log_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub module: Option<String>,
    pub name: Option<String>,
    pub fail: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub deadline: Option<std::time::Duration>,
    pub memory: Option<bytesize::ByteSize>,
    pub instances: Option<RawInstances>,
    pub watch: Option<bool>,
    pub allow_imports: Option<Vec<String>>,
    pub settings: Option<toml::Table>,
    pub native: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstances {
    /// Serve this many requests from one instance before replacing it; 1 = a fresh instance
    /// per request.
    pub reuse: Option<i64>,
}
