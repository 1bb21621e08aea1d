//! The host configuration file (`memhost serve --config memhost.toml`).
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7077"
//! mcp_allowed_origins = ["https://app.example.com:443"]   # browsers allowed at /mcp
//! metrics_listen = "10.0.0.5:9477"  # GET /metrics without a key, private addresses only
//!
//! public_url = "https://memory.example.com"  # how browsers reach it (behind a proxy)
//! trusted_proxies = ["10.0.0.2"]   # believe X-Forwarded-For from these
//!
//! [console]                        # the web console at /console
//! idle_minutes = 30                # a session with no request this long ends
//! absolute_hours = 12              # ... and every session after this long
//! link_minutes = 15                # one-time sign-in links work this long
//!
//! [oauth]                          # MCP clients sign in (see auth::oauth)
//! access_minutes = 60              # access tokens last this long
//! refresh_days = 30                # a refresh token this long (each refresh starts anew)
//! redirect_uris = ["cursor://anysphere.cursor-mcp/oauth/callback"]  # besides loopback, Claude, ChatGPT
//!
//! [server.connections]             # see api::listener
//! max_connections = 1024
//! header_timeout_seconds = 10
//!
//! [store]
//! map_size_mb = 1024               # grows when full ...
//! max_map_size_mb = 1048576        # ... up to this
//!
//! [plugins]
//! dir = "/etc/memhost/plugins"     # one sub-directory per plugin
//! watch = true                     # reload when files there change
//! max_timeout_ms = 30000           # ceilings on what any plugin gets
//! max_memory_mb = 1024
//!
//! [limits]                         # see auth::limits
//! requests_per_second = 50
//! burst = 100
//!
//! [plugins.grants.embed-openai]    # what one plugin is granted
//! allowed_outbound_hosts = ["https://api.openai.com"]
//! config = { model = "text-embedding-3-small" }
//! ```
//!
//! Unknown keys are errors, so a typo never silently drops a setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plugins::PluginSettings;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[plugins]`.
    pub plugins: PluginSettings,
    /// `[store]`.
    pub store: StoreSettings,
    /// `[limits]`: request rates per key, failed authentications per address.
    pub limits: crate::auth::limits::LimitSettings,
    /// `[console]`: sessions and sign-in links of the web console.
    pub console: crate::auth::sessions::SessionSettings,
    /// `[oauth]`: the authorization server MCP clients sign in with.
    pub oauth: crate::auth::oauth::OAuthSettings,
}

/// `[store]`: the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Initial map size in MiB (virtual; the file grows as used).
    pub map_size_mb: u64,
    /// The map grows when full, up to this many MiB; then writes fail with
    /// a message naming this setting.
    pub max_map_size_mb: u64,
    /// PostgreSQL (a data directory made with `memhost init --store`):
    /// connections this host keeps at most.
    pub pool: usize,
    /// PostgreSQL: how long a write waits for the database to come back —
    /// a standby being promoted — before it fails.
    pub failover_seconds: u64,
    /// PostgreSQL: a PEM file of certificate authorities to trust for TLS
    /// to the database besides Mozilla's roots (a managed database's own).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            map_size_mb: 1024,
            max_map_size_mb: 1 << 20,
            pool: 16,
            failover_seconds: 60,
            ca_file: None,
        }
    }
}

impl StoreSettings {
    /// As store options.
    pub fn options(&self) -> crate::store::StoreOptions {
        let mb = |v: u64| usize::try_from(v.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        crate::store::StoreOptions {
            map_size: mb(self.map_size_mb.max(1)),
            max_map_size: mb(self.max_map_size_mb.max(self.map_size_mb).max(1)),
            postgres: None,
            pool: self.pool.max(1),
            failover: std::time::Duration::from_secs(self.failover_seconds),
            ca_file: self.ca_file.clone(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; the command line and `MEMHOST_LISTEN` win.
    pub listen: Option<String>,
    /// Browser origins (`scheme://host:port`, `:*` for any port) whose
    /// pages may call `/mcp`. A request with any other `Origin` gets 403;
    /// MCP clients that are not browsers send none.
    pub mcp_allowed_origins: Vec<String>,
    /// `[server.connections]`: how many at once, how long each may take.
    pub connections: crate::api::listener::ConnectionSettings,
    /// A second address serving only `GET /metrics`, without a key, for a
    /// scraper inside a private network (loopback, 10/8, 172.16/12,
    /// 192.168/16, fc00::/7); off by default. A public or wildcard address
    /// is refused.
    pub metrics_listen: Option<String>,
    /// The URL browsers reach this server at (`https://memory.example.com`),
    /// when it is not the listen address: behind a TLS proxy. Sign-in links
    /// are printed with it; with `https` the console's cookies are `Secure`.
    pub public_url: Option<String>,
    /// Addresses of the proxies in front (`["10.0.0.2"]`): a request from
    /// one of them counts as coming from the address it forwarded
    /// (`X-Forwarded-For`), for rate limits and the audit log. Empty (the
    /// default): the TCP peer, and no header is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl ServerSettings {
    /// `public_url` without a trailing slash, checked: `http` or `https`,
    /// a host, no query or fragment.
    pub fn public_url(&self) -> Result<Option<String>, String> {
        let Some(url) = &self.public_url else {
            return Ok(None);
        };
        let url = url.trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                format!("[server] public_url \"{url}\" must start with https:// or http://")
            })?;
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() || rest.contains(['?', '#', ' ']) || rest.contains('@') {
            return Err(format!(
                "[server] public_url \"{url}\" must be a plain URL like https://memory.example.com"
            ));
        }
        Ok(Some(url.to_string()))
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config {}: {reason}", .path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl HostConfig {
    /// Read `path`. Relative paths inside (the plugin directory, granted
    /// directories) are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut config: HostConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        config.limits.validate().map_err(err)?;
        config.server.connections.validate().map_err(err)?;
        config.server.public_url().map_err(err)?;
        config.console.validate().map_err(err)?;
        config.oauth.validate().map_err(err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(dir) = &config.plugins.dir {
            config.plugins.dir = Some(base.join(dir));
        }
        for grant in config.plugins.grants.values_mut() {
            for host in grant.read_only_dirs.values_mut() {
                *host = base.join(&*host);
            }
        }
        Ok(config)
    }
}
