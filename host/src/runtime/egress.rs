//! Outbound HTTP for embedders: every request is checked against the
//! plugin's effective allow-list before a connection is made.
//!
//! | rule (in `allowed_outbound_hosts`) | matches                                         |
//! |------------------------------------|-------------------------------------------------|
//! | `https://api.example.com`          | that host, scheme https, port 443               |
//! | `http://10.0.0.5:11434`            | that address and port only                      |
//! | `https://*.example.com`            | any subdomain of example.com (not example.com)  |
//!
//! Empty list = every request denied. After a rule matches, the host name is
//! resolved and every address is checked: loopback, private, link-local
//! (which holds the cloud metadata address), carrier-grade NAT, unique-local,
//! site-local, multicast and unspecified addresses — and the IPv6 forms that
//! carry an IPv4 address to a translator or tunnel (IPv4-compatible
//! `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`,
//! Teredo `2001::/32`) — are refused unless the matching rule
//! names that address literally (`http://127.0.0.1:8080`), names
//! `localhost` for a loopback address, or the operator set
//! `allow_private_network` for the plugin. Denials are logged with target
//! `audit`. The connection goes to the addresses that were checked (see
//! [`super::outbound`]): a DNS answer that changes between check and
//! connect cannot redirect it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::PluginIdentity;

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutboundRule {
    /// `http` or `https`.
    pub scheme: String,
    /// Lowercase host name or IP literal (IPv6 without brackets); a leading
    /// `*.` matches subdomains.
    pub host: String,
    /// The port (defaulted from the scheme).
    pub port: u16,
}

impl OutboundRule {
    /// Parse `scheme://host[:port]`. A path, query, user info or any other
    /// scheme is an error naming the entry.
    pub fn parse(entry: &str) -> Result<OutboundRule, String> {
        let bad = |why: &str| format!("outbound host \"{entry}\" is not valid: {why}");
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port], e.g. https://api.openai.com"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "give only scheme://host[:port], without a path or credentials",
            ));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("the port is not a number"))?;
        let host = host.to_ascii_lowercase();
        let name_ok = host
            .trim_start_matches("*.")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':');
        if host.is_empty() || !name_ok || host[1..].contains('*') {
            return Err(bad("the host is not a valid name or address"));
        }
        Ok(OutboundRule {
            scheme,
            host,
            port: port.unwrap_or(default_port),
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        match self.host.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => self.host == host,
        }
    }

    /// Whether this rule allows everything `other` allows.
    fn covers(&self, other: &OutboundRule) -> bool {
        self.matches(
            &other.scheme,
            other.host.trim_start_matches("*."),
            other.port,
        ) && (self.host.starts_with("*.") || !other.host.starts_with("*."))
    }

    /// Whether this rule names `ip` explicitly (as a literal, or `localhost`
    /// for a loopback address).
    fn names(&self, ip: IpAddr) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(literal) => canonical(literal) == canonical(ip),
            Err(_) => self.host == "localhost" && canonical(ip).is_loopback(),
        }
    }
}

impl std::fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Some((host, Some(p.parse().ok()?))),
        _ => Some((authority, None)),
    }
}

/// The effective outbound policy of one plugin.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Rules in effect (the intersection of manifest and grant).
    pub rules: Vec<OutboundRule>,
    /// The operator allowed private and loopback addresses for any rule.
    pub allow_private_network: bool,
}

impl EgressPolicy {
    /// The rules both sides allow: a rule survives if the other side has a
    /// rule covering it.
    pub fn intersect(requested: &[OutboundRule], granted: &[OutboundRule]) -> Vec<OutboundRule> {
        let mut out: Vec<OutboundRule> = Vec::new();
        for r in requested {
            for g in granted {
                let keep = if g.covers(r) {
                    Some(r)
                } else if r.covers(g) {
                    Some(g)
                } else {
                    None
                };
                if let Some(rule) = keep
                    && !out.contains(rule)
                {
                    out.push(rule.clone());
                }
            }
        }
        out.sort();
        out
    }

    /// Decide whether `uri` may be fetched. On success returns the
    /// addresses to connect to, resolved and checked — the only ones the
    /// connection may use.
    pub async fn check(&self, uri: &http::Uri) -> Result<Vec<SocketAddr>, String> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri
            .host()
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(&scheme, &host, port))
            .ok_or_else(|| {
                format!("{scheme}://{host}:{port} is not in the plugin's allowed outbound hosts")
            })?;
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{host} resolved to no address"));
        }
        for addr in &addrs {
            let ip = canonical(addr.ip());
            if is_special(ip) && !self.allow_private_network && !rule.names(ip) {
                return Err(format!(
                    "{host} resolves to {ip}, a loopback/private/link-local address; grant it explicitly (e.g. \"{scheme}://{ip}:{port}\") to allow it"
                ));
            }
        }
        Ok(addrs)
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Addresses an embedder must not reach without an explicit grant.
pub fn is_special(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_special_v4(v4),
        IpAddr::V6(v6) => is_special_v6(v6),
    }
}

fn is_special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, including 169.254.169.254 (metadata)
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_special_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let first = s[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, including fd00:ec2::254 (metadata)
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside some sites)
        // Addresses that carry an IPv4 address and reach it through a
        // translator or tunnel: judged by no rule but a literal grant, since
        // the IPv4 inside may be private.
        || s[..6] == [0; 6] // IPv4-compatible ::a.b.c.d
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64 64:ff9b::/96
        || (s[0], s[1]) == (0x64, 0xff9b) // local-use NAT64 64:ff9b:1::/48 and the rest
        || first == 0x2002 // 6to4 2002::/16
        || (s[0], s[1]) == (0x2001, 0) // Teredo 2001::/32
}

/// The `wasi:http` hooks of one store: the allow-list check, then the
/// default client.
pub(crate) struct EgressHooks {
    identity: PluginIdentity,
    policy: Option<Arc<EgressPolicy>>,
    denied: Arc<Mutex<Option<String>>>,
    deadline: Option<Instant>,
}

impl EgressHooks {
    pub(crate) fn new(
        identity: PluginIdentity,
        policy: Option<Arc<EgressPolicy>>,
        denied: Arc<Mutex<Option<String>>>,
    ) -> Self {
        EgressHooks {
            identity,
            policy,
            denied,
            deadline: None,
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }
}

/// Cut every timeout of a request to the time the call has left: a slow
/// server must not keep a plugin past its deadline inside a host call.
fn bounded(options: Option<RequestOptions>, left: Duration) -> RequestOptions {
    let cut = |t: Option<Duration>| Some(t.map_or(left, |t| t.min(left)));
    let options = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: cut(options.connect_timeout),
        first_byte_timeout: cut(options.first_byte_timeout),
        between_bytes_timeout: cut(options.between_bytes_timeout),
    }
}

use super::outbound::ResponseIo;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<(http::Response<WasiBody>, ResponseIo), wasmtime_wasi_http::Error>,
            > + Send,
    > {
        let identity = self.identity.clone();
        let policy = self.policy.clone();
        let denied = self.denied.clone();
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(30));
        let options = bounded(options, left);
        Box::new(async move {
            let uri = request.uri().clone();
            let verdict = match &policy {
                Some(policy) => policy.check(&uri).await,
                None => Err("this plugin kind may not make outbound requests".to_string()),
            };
            let addr = match verdict {
                Ok(addr) => addr,
                Err(reason) => {
                    tracing::warn!(
                        target: "audit",
                        event = "plugin.egress_denied",
                        plugin = %identity.id,
                        version = %identity.version,
                        url = %redact_query(&uri),
                        %reason,
                        "outbound request denied"
                    );
                    if let Ok(mut slot) = denied.lock() {
                        slot.get_or_insert_with(|| format!("outbound request denied: {reason}"));
                    }
                    return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                }
            };
            tracing::debug!(plugin = %identity.id, url = %redact_query(&uri), "outbound request");
            let (response, io) = super::outbound::send(request, &addr, &options).await?;
            Ok((response, io))
        })
    }
}

/// URLs may carry keys in their query string; never log it.
fn redact_query(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> OutboundRule {
        OutboundRule::parse(s).unwrap()
    }

    #[test]
    fn parses_and_defaults_ports() {
        assert_eq!(rule("https://API.openai.com").port, 443);
        assert_eq!(rule("http://127.0.0.1:11434").port, 11434);
        assert_eq!(rule("http://[::1]:8080").host, "::1");
        for bad in [
            "api.openai.com",
            "ftp://x",
            "https://x/path",
            "https://u:p@x",
            "https://x:notaport",
            "https://a.*.com",
        ] {
            assert!(OutboundRule::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn intersection_keeps_only_what_both_allow() {
        let requested = [rule("https://api.openai.com"), rule("https://evil.example")];
        assert_eq!(
            EgressPolicy::intersect(&requested, &[rule("https://api.openai.com")]),
            [rule("https://api.openai.com")]
        );
        assert!(EgressPolicy::intersect(&requested, &[]).is_empty());
        assert!(EgressPolicy::intersect(&[], &[rule("https://api.openai.com")]).is_empty());
        // A wildcard on one side narrows to the other side's exact host.
        assert_eq!(
            EgressPolicy::intersect(
                &[rule("https://*.example.com")],
                &[rule("https://a.example.com")]
            ),
            [rule("https://a.example.com")]
        );
        // Port and scheme must agree.
        assert!(
            EgressPolicy::intersect(
                &[rule("http://api.openai.com")],
                &[rule("https://api.openai.com")]
            )
            .is_empty()
        );
    }

    #[test]
    fn special_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::1",
            "::169.254.169.254",
            "::127.0.0.1",
            "fec0::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(is_special(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn metadata_and_loopback_need_an_explicit_grant() {
        let by_name = EgressPolicy {
            rules: vec![rule("http://localhost:9")],
            allow_private_network: false,
        };
        assert!(
            by_name
                .check(&"http://localhost:9/x".parse().unwrap())
                .await
                .is_ok()
        );
        let wildcard = EgressPolicy {
            rules: vec![rule("http://*.nip.io")],
            allow_private_network: false,
        };
        assert!(
            wildcard
                .check(&"http://unlisted.example:80/".parse().unwrap())
                .await
                .is_err()
        );
        let literal = EgressPolicy {
            rules: vec![rule("http://169.254.169.254")],
            allow_private_network: false,
        };
        assert!(
            literal
                .check(&"http://169.254.169.254/latest".parse().unwrap())
                .await
                .is_ok()
        );
        assert!(
            literal
                .check(&"http://169.254.169.253/".parse().unwrap())
                .await
                .is_err()
        );
    }
}
