//! Raw -> typed validation. Every rule reports the dotted key it is about.

use super::raw::*;
use super::*;
use std::collections::HashSet;

/// hyper's HTTP/1 parser needs at least this much buffer for a request head.
const MIN_HEADER_SIZE: u64 = 8 * 1024;
const MAX_WEIGHT: i64 = 10_000;

struct Ctx<'a> {
    file: &'a str,
    base: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

pub(super) fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let cx = Ctx { file, base };
    let raw = deserialize(text, &cx)?;
    build(raw, &cx)
}

fn deserialize(text: &str, cx: &Ctx) -> Result<RawConfig, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| syntax_error(cx, text, &e))?;
    serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let problem = match inner.span() {
            Some(span) => format!("{} (line {})", inner.message(), line_of(text, span.start)),
            None => inner.message().to_string(),
        };
        cx.err(
            if key == "." {
                "(top level)".into()
            } else {
                key
            },
            problem,
        )
    })
}

fn syntax_error(cx: &Ctx, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    cx.err(format!("(syntax, line {line})"), e.message().to_string())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn build(raw: RawConfig, cx: &Ctx) -> Result<Config, ConfigError> {
    if raw.listener.is_empty() {
        return Err(cx.err("listener", "at least one [[listener]] is required"));
    }
    let mut listeners = Vec::with_capacity(raw.listener.len());
    let mut seen_addrs = HashSet::new();
    for (i, l) in raw.listener.into_iter().enumerate() {
        let key = format!("listener[{i}]");
        let address = socket_addr(&l.address, &format!("{key}.address"), cx)?;
        // Port 0 asks the OS for a free port, so two such listeners never collide.
        if address.port() != 0 && !seen_addrs.insert(address) {
            return Err(cx.err(
                format!("{key}.address"),
                format!("{address} is used by two listeners"),
            ));
        }
        let tls = l
            .tls
            .map(|t| listener_tls(t, &format!("{key}.tls"), cx))
            .transpose()?;
        listeners.push(ListenerConfig {
            name: l.name.unwrap_or_else(|| format!("listener{i}")),
            address,
            tls,
        });
    }

    if raw.pool.is_empty() {
        return Err(cx.err("pool", "at least one [[pool]] is required"));
    }
    let mut pools = Vec::with_capacity(raw.pool.len());
    let mut names = HashSet::new();
    for (i, p) in raw.pool.into_iter().enumerate() {
        let key = format!("pool[{i}]");
        let pool = pool(p, &key, cx)?;
        if !names.insert(pool.name.clone()) {
            return Err(cx.err(
                format!("{key}.name"),
                format!("pool \"{}\" is defined twice", pool.name),
            ));
        }
        pools.push(pool);
    }

    let default_pool = match raw.proxy.default_pool {
        Some(name) if names.contains(&name) => name,
        Some(name) => {
            return Err(cx.err("proxy.default_pool", format!("no pool named \"{name}\"")));
        }
        None if pools.len() == 1 => pools[0].name.clone(),
        None => {
            return Err(cx.err(
                "proxy.default_pool",
                "required when more than one pool is defined",
            ));
        }
    };
    let via_name = raw.proxy.via_name.unwrap_or_else(|| "sluice".into());
    if via_name.is_empty() || !via_name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(cx.err(
            "proxy.via_name",
            "must be a non-empty token without spaces or commas",
        ));
    }
    let proxy = ProxySettings {
        default_pool,
        preserve_host: raw.proxy.preserve_host.unwrap_or(true),
        via: raw.proxy.via.unwrap_or(true),
        forwarded_headers: raw.proxy.forwarded_headers.unwrap_or(true),
        via_name,
    };

    let d = Timeouts::default();
    let t = raw.timeouts;
    let timeouts = Timeouts {
        client_header: positive(
            t.client_header,
            d.client_header,
            "timeouts.client_header",
            cx,
        )?,
        client_idle: positive(t.client_idle, d.client_idle, "timeouts.client_idle", cx)?,
        upstream_connect: positive(
            t.upstream_connect,
            d.upstream_connect,
            "timeouts.upstream_connect",
            cx,
        )?,
        upstream_response: positive(
            t.upstream_response,
            d.upstream_response,
            "timeouts.upstream_response",
            cx,
        )?,
        shutdown_grace: t.shutdown_grace.unwrap_or(d.shutdown_grace),
    };

    let dl = Limits::default();
    let max_connections = match raw.limits.max_connections {
        None => dl.max_connections,
        Some(n) if (1..=1_000_000).contains(&n) => n as usize,
        Some(n) => {
            return Err(cx.err(
                "limits.max_connections",
                format!("{n} is out of range 1..=1000000"),
            ));
        }
    };
    let max_request_header_size = match raw.limits.max_request_header_size {
        None => dl.max_request_header_size,
        Some(s) if (MIN_HEADER_SIZE..=1 << 20).contains(&s.as_u64()) => s.as_u64() as usize,
        Some(s) => {
            return Err(cx.err(
                "limits.max_request_header_size",
                format!("{s} is out of range 8KiB..=1MiB"),
            ));
        }
    };
    let max_request_body = match raw.limits.max_request_body {
        None => dl.max_request_body,
        Some(s) => s.as_u64(),
    };
    let limits = Limits {
        max_connections,
        max_request_header_size,
        max_request_body,
    };

    let admin = raw.admin.map(|a| admin(a, cx)).transpose()?;
    if let Some(admin) = &admin {
        if seen_addrs.contains(&admin.address) {
            return Err(cx.err(
                "admin.address",
                "must not be the address of a proxy listener",
            ));
        }
    }

    let level = raw.log.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(cx.err(
            "log.level",
            format!("\"{level}\" is not a valid filter (try \"info\" or \"sluice=debug\")"),
        ));
    }
    let format = match raw.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(cx.err(
                "log.format",
                format!("\"{other}\" is not one of \"text\", \"json\""),
            ));
        }
    };
    let log = LogConfig {
        level,
        format,
        access_log: raw.log.access_log.unwrap_or(true),
    };

    let policy = match raw.policy {
        None => PolicyConfig::default(),
        Some(p) => policy(p, cx)?,
    };

    Ok(Config {
        listeners,
        pools,
        proxy,
        timeouts,
        limits,
        admin,
        log,
        policy,
    })
}

fn policy(p: RawPolicy, cx: &Ctx) -> Result<PolicyConfig, ConfigError> {
    let d = PolicyConfig::default();
    let module = p.module.map(|m| cx.path(&m));
    let name = match (p.name, &module) {
        (Some(n), _) => n,
        (None, Some(m)) => m
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.name.clone()),
        (None, None) => d.name.clone(),
    };
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(cx.err(
            "policy.name",
            "must be 1 to 64 printable characters without spaces",
        ));
    }
    let fail = match p.fail.as_deref() {
        None => d.fail,
        Some("open") => FailMode::Open,
        Some("closed") => FailMode::Closed,
        Some(other) => {
            return Err(cx.err(
                "policy.fail",
                format!("\"{other}\" is not one of \"open\", \"closed\""),
            ));
        }
    };
    let deadline = p.deadline.unwrap_or(d.deadline);
    if deadline < Duration::from_millis(1) || deadline > Duration::from_secs(10) {
        return Err(cx.err(
            "policy.deadline",
            format!("{deadline:?} is out of range 1ms..=10s"),
        ));
    }
    let memory = match p.memory {
        None => d.memory,
        Some(m) if (1 << 20..=MAX_POLICY_MEMORY).contains(&m.as_u64()) => m.as_u64() as usize,
        Some(m) => {
            return Err(cx.err("policy.memory", format!("{m} is out of range 1MiB..=1GiB")));
        }
    };
    let instances = match p.instances.and_then(|i| i.reuse) {
        None => d.instances,
        Some(1) => InstanceMode::Fresh,
        Some(n) if (2..=1_000_000).contains(&n) => InstanceMode::Reuse(n as u32),
        Some(n) => {
            return Err(cx.err(
                "policy.instances.reuse",
                format!("{n} is out of range 1..=1000000"),
            ));
        }
    };
    let allow_imports = p.allow_imports.unwrap_or_default();
    for (i, a) in allow_imports.iter().enumerate() {
        if !REFUSED_IMPORTS.contains(&a.as_str()) {
            return Err(cx.err(
                format!("policy.allow_imports[{i}]"),
                format!("\"{a}\" is not one of {REFUSED_IMPORTS:?}"),
            ));
        }
    }
    let mut settings = std::collections::BTreeMap::new();
    for (k, v) in p.settings.unwrap_or_default() {
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(cx.err(
                    format!("policy.settings.{k}"),
                    format!(
                        "a {} is not allowed: settings are strings, numbers or booleans",
                        other.type_str()
                    ),
                ));
            }
        };
        settings.insert(k, text);
    }
    Ok(PolicyConfig {
        module,
        name,
        fail,
        deadline,
        memory,
        instances,
        watch: p.watch.unwrap_or(d.watch),
        allow_imports,
        settings,
        native: p.native.unwrap_or(false),
    })
}

fn listener_tls(t: RawListenerTls, key: &str, cx: &Ctx) -> Result<ListenerTls, ConfigError> {
    if t.certificates.is_empty() {
        return Err(cx.err(
            format!("{key}.certificates"),
            "at least one certificate is required",
        ));
    }
    let default_certificate = t.default_certificate.unwrap_or(0);
    if default_certificate >= t.certificates.len() {
        return Err(cx.err(
            format!("{key}.default_certificate"),
            format!(
                "index {default_certificate} but only {} certificates",
                t.certificates.len()
            ),
        ));
    }
    let mut certificates = Vec::with_capacity(t.certificates.len());
    for (i, c) in t.certificates.into_iter().enumerate() {
        let ckey = format!("{key}.certificates[{i}]");
        let server_names = c.server_names.unwrap_or_default();
        for n in &server_names {
            if !valid_server_name(n) {
                return Err(cx.err(
                    format!("{ckey}.server_names"),
                    format!("\"{n}\" is not a DNS name or *.wildcard"),
                ));
            }
        }
        certificates.push(CertificateConfig {
            cert: cx.path(&c.cert),
            key: cx.path(&c.key),
            server_names: server_names
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            key_path: ckey,
        });
    }
    Ok(ListenerTls {
        certificates,
        default_certificate,
    })
}

fn valid_server_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty()
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn pool(p: RawPool, key: &str, cx: &Ctx) -> Result<PoolConfig, ConfigError> {
    if p.name.is_empty()
        || !p
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(cx.err(
            format!("{key}.name"),
            format!(
                "\"{}\" must be non-empty and use only A-Z a-z 0-9 - _ .",
                p.name
            ),
        ));
    }
    if p.endpoints.is_empty() {
        return Err(cx.err(
            format!("{key}.endpoints"),
            "at least one endpoint is required",
        ));
    }
    let mut endpoints = Vec::with_capacity(p.endpoints.len());
    for (i, e) in p.endpoints.into_iter().enumerate() {
        let ekey = format!("{key}.endpoints[{i}]");
        let (address, weight) = match e {
            RawEndpoint::Address(a) => (a, None),
            RawEndpoint::Full(t) => (t.address, t.weight),
        };
        host_port(&address).map_err(|why| cx.err(format!("{ekey}.address"), why))?;
        let weight = match weight {
            None => 1,
            Some(w) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
            Some(w) => {
                return Err(cx.err(
                    format!("{ekey}.weight"),
                    format!("{w} is out of range 1..={MAX_WEIGHT}"),
                ));
            }
        };
        endpoints.push(EndpointConfig { address, weight });
    }
    let protocol = match p.protocol.as_deref() {
        None | Some("h1") | Some("http1") => UpstreamProtocol::Http1,
        Some("h2") | Some("http2") => UpstreamProtocol::Http2,
        Some(other) => {
            return Err(cx.err(
                format!("{key}.protocol"),
                format!("\"{other}\" is not one of \"h1\", \"h2\""),
            ));
        }
    };
    let tls = match p.tls {
        None => None,
        Some(t) => {
            let server_name = match t.server_name {
                Some(n) => n,
                None => host_port(&endpoints[0].address)
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_default(),
            };
            if rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err() {
                return Err(cx.err(
                    format!("{key}.tls.server_name"),
                    format!("\"{server_name}\" is not a valid server name"),
                ));
            }
            Some(UpstreamTls {
                server_name,
                ca: t.ca.map(|c| cx.path(&c)),
            })
        }
    };
    Ok(PoolConfig {
        name: p.name,
        endpoints,
        protocol,
        tls,
        max_idle_per_endpoint: p.max_idle_per_endpoint.unwrap_or(1024),
        idle_timeout: p.idle_timeout.unwrap_or(Duration::from_secs(60)),
    })
}

fn admin(a: RawAdmin, cx: &Ctx) -> Result<AdminConfig, ConfigError> {
    let address = match a.address {
        Some(s) => socket_addr(&s, "admin.address", cx)?,
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
    };
    if let Some(t) = &a.token {
        if t.len() < 16 {
            return Err(cx.err("admin.token", "must be at least 16 characters"));
        }
    }
    if !address.ip().is_loopback() && !a.allow_non_loopback.unwrap_or(false) {
        return Err(cx.err(
            "admin.address",
            format!("{address} is not loopback; set admin.allow_non_loopback = true (and a token) to expose it"),
        ));
    }
    if !address.ip().is_loopback() && a.token.is_none() {
        return Err(cx.err(
            "admin.token",
            "required when the admin listener is not on loopback",
        ));
    }
    Ok(AdminConfig {
        address,
        token: a.token,
    })
}

fn socket_addr(s: &str, key: &str, cx: &Ctx) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| cx.err(key, format!("\"{s}\" is not an IP:port address")))
}

fn positive(
    v: Option<Duration>,
    default: Duration,
    key: &str,
    cx: &Ctx,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(cx.err(key, "must be greater than zero")),
        Some(d) => Ok(d),
    }
}

/// Splits `host:port` (IPv6 in brackets). Returns why not, for the error message.
pub(crate) fn host_port(s: &str) -> Result<(&str, u16), String> {
    let bad = || format!("\"{s}\" is not host:port");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok((host, port))
}
