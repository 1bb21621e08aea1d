//! Access use cases: API keys (create, list, revoke, authenticate) and the
//! audit log (read, verify, record refusals).

use serde::Deserialize;

use super::{Service, ServiceError, invalid, model};
use crate::audit::{Broken, Entry, Record};
use crate::auth::keys::{self, ApiKey, KeyFields, KeyInfo, KeyState, Rate, Revocation};
use crate::auth::limits::Audited;
use crate::auth::{Grant, Principal, Role};
use crate::store::{StoreError, WriteFlags, del_in, get_in, rows_in};

/// A key to create, as an admin sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The agent the key identifies.
    pub agent_id: String,
    /// Its type (policies name it, e.g. `single:reviewer`).
    pub agent_type: String,
    /// Roles, e.g. `[{"pattern": "team-*", "role": "writer"}]`.
    pub grants: Vec<Grant>,
    /// Unix ms after which the key stops working.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Own rate limit instead of the configured one.
    #[serde(default)]
    pub rate: Option<Rate>,
}

/// Why a presented key was not accepted. The caller only ever learns
/// "unauthorized"; the reason goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization` header.
    #[error("no API key: send Authorization: Bearer <key>")]
    Missing,
    /// Not `Bearer mhk_…`.
    #[error("the Authorization header is not Bearer with a memhost key")]
    Malformed,
    /// No key with that id, or the secret does not match (or no such
    /// access token).
    #[error("unknown API key or token")]
    Unknown(Option<String>),
    /// Revoked.
    #[error("the API key or token was revoked")]
    Revoked(String),
    /// Expired.
    #[error("the API key or token has expired")]
    Expired(String),
    /// An access token issued for another resource (RFC 8707): another
    /// `public_url`.
    #[error("the access token was issued for another resource")]
    WrongResource(String),
    /// An OAuth access token where only keys are taken (`/v1`).
    #[error("an OAuth access token is for /mcp only; /v1 takes API keys")]
    NotHere,
    /// The store failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// The store cannot be reached now (a shared store's failover).
    #[error("{0}")]
    Unavailable(String),
}

impl AuthFailure {
    /// The store failed while deciding: unavailable for now, or internal.
    pub fn from_store(e: ServiceError) -> AuthFailure {
        match e {
            ServiceError::Unavailable(m) => AuthFailure::Unavailable(m),
            other => AuthFailure::Internal(other.to_string()),
        }
    }

    /// The key id the attempt named, if it named one.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            AuthFailure::Unknown(id) => id.as_deref(),
            AuthFailure::Revoked(id)
            | AuthFailure::Expired(id)
            | AuthFailure::WrongResource(id) => Some(id),
            _ => None,
        }
    }
}

/// The sealed `principals` row `row` as it is inside `txn`, opened.
pub(super) fn sealed_in<T: serde::de::DeserializeOwned>(
    txn: &impl crate::store::Transaction,
    t: &crate::store::Tables,
    system: &crate::crypto::DataKey,
    row: &[u8],
) -> Result<Option<T>, StoreError> {
    get_in(txn, t.principals, row)?
        .map(|s| super::open_json(system, "principals", row, &s))
        .transpose()
        .map_err(|e| StoreError::Storage(e.to_string()))
}

impl Service {
    /// The sealed `principals` row `row` (a key, a user, a session, a
    /// link), opened.
    pub(super) fn principal_row<T: serde::de::DeserializeOwned>(
        &self,
        row: &[u8],
    ) -> Result<Option<T>, ServiceError> {
        match self.store.get(|t| t.principals, row)? {
            None => Ok(None),
            Some(sealed) => Ok(Some(super::open_json(
                &*self.system_key()?,
                "principals",
                row,
                &sealed,
            )?)),
        }
    }

    /// Put a sealed `principals` row with its audit entry, in one write;
    /// `only_new`: leave an existing row alone and answer false.
    pub(super) fn put_principal_row<T: serde::Serialize>(
        &self,
        row: Vec<u8>,
        value: &T,
        record: Record,
        only_new: bool,
    ) -> Result<bool, ServiceError> {
        let sealed = super::seal_json(&*self.system_key()?, "principals", &row, value)?;
        let audit = self.audit.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            if only_new && get_in(txn, t.principals, &row)?.is_some() {
                return Ok(None);
            }
            txn.put(t.principals, &row, &sealed, WriteFlags::empty())?;
            audit.append(txn, t, &record).map(Some)
        })?;
        let Some(entry) = entry else {
            return Ok(false);
        };
        crate::audit::emit(&entry);
        Ok(true)
    }

    /// The sealed `principals` rows under `prefix` that `over` says can
    /// no longer be used.
    pub(super) fn dead_rows<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &'static [u8],
        over: impl Fn(&T) -> bool,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        Ok(self
            .principal_rows(prefix)?
            .into_iter()
            .filter(|(_, value)| over(value))
            .map(|(row, _)| row)
            .collect())
    }

    /// Every sealed `principals` row under `prefix` (keys, users,
    /// sessions, OAuth rows), opened, with its row key.
    pub(super) fn principal_rows<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &'static [u8],
    ) -> Result<Vec<(Vec<u8>, T)>, ServiceError> {
        let key = self.system_key()?;
        self.store
            .rows(|t| t.principals, prefix, |k| k.starts_with(prefix))?
            .into_iter()
            .map(|(row, sealed)| {
                let value = super::open_json(&key, "principals", &row, &sealed)?;
                Ok((row, value))
            })
            .collect()
    }

    /// Delete `rows` of `principals` in one write; how many.
    pub(super) fn delete_principal_rows(&self, rows: Vec<Vec<u8>>) -> Result<usize, ServiceError> {
        let n = rows.len();
        if n > 0 {
            self.store.write_blocking(move |txn, t| {
                for row in &rows {
                    del_in(txn, t.principals, row)?;
                }
                Ok(())
            })?;
        }
        Ok(n)
    }

    fn load_key(&self, id: &str) -> Result<Option<ApiKey>, ServiceError> {
        self.principal_row(&keys::row(id))
    }

    /// Does key `id` exist and work now (not revoked, not expired)?
    pub(super) fn key_usable(&self, id: &str) -> Result<bool, ServiceError> {
        Ok(self
            .load_key(id)?
            .is_some_and(|k| k.state(model::now_ms()).is_ok()))
    }

    /// The key a bearer token stands for, if it is valid now. Reads the
    /// store on every call, so a key created or revoked by another process
    /// (`memhost keys …`) counts at once.
    pub fn authenticate(&self, token: &str) -> Result<ApiKey, AuthFailure> {
        let (id, secret) = keys::parse(token).ok_or(AuthFailure::Malformed)?;
        let key = self
            .load_key(id)
            .map_err(AuthFailure::from_store)?
            .ok_or_else(|| AuthFailure::Unknown(Some(id.to_string())))?;
        if !key.verify(secret) {
            return Err(AuthFailure::Unknown(Some(id.to_string())));
        }
        match key.state(model::now_ms()) {
            Ok(()) => Ok(key),
            Err(KeyState::Revoked) => Err(AuthFailure::Revoked(key.fields.id)),
            Err(KeyState::Expired) => Err(AuthFailure::Expired(key.fields.id)),
        }
    }

    /// Create a key; returns the token (shown once) and the key's public view.
    /// Only an admin over every pattern granted may create it.
    pub fn create_key(
        &self,
        who: &Principal,
        new: NewKey,
    ) -> Result<(String, KeyInfo), ServiceError> {
        if !keys::valid_agent_id(&new.agent_id) {
            return Err(invalid(
                "agent_id",
                "must be 1-128 characters without control characters",
            ));
        }
        if !keys::valid_agent_type(&new.agent_type) {
            return Err(invalid(
                "agent_type",
                "must be 1-64 letters, digits, '.', '_' or '-'",
            ));
        }
        if new.grants.is_empty() || new.grants.len() > keys::MAX_GRANTS {
            return Err(invalid(
                "grants",
                format!("give 1-{} roles, e.g. team-a=writer", keys::MAX_GRANTS),
            ));
        }
        for g in &new.grants {
            if !crate::auth::valid_pattern(&g.pattern) {
                return Err(invalid(
                    "grants",
                    format!(
                        "\"{}\" is not a namespace pattern: a name, a prefix ending in '*', or *",
                        g.pattern
                    ),
                ));
            }
        }
        let now = model::now_ms();
        if new.expires_at.is_some_and(|t| t <= now) {
            return Err(invalid("expires_at", "must be in the future"));
        }
        if let Some(r) = new.rate
            && (!(r.per_second > 0.0 && r.per_second.is_finite()) || r.burst == 0)
        {
            return Err(invalid(
                "rate",
                "per_second must be above 0 and burst at least 1",
            ));
        }
        let wanted = crate::auth::describe(&new.grants);
        // A key never outlives, nor out-rates, the key that made it: a
        // temporary or leaked admin key cannot mint a permanent one.
        let expires_at = match (new.expires_at, who.expires_at) {
            (Some(asked), Some(own)) => Some(asked.min(own)),
            (None, own) => own,
            (asked, None) => asked,
        };
        if new.rate.is_some() && !who.is_global_admin() {
            return Err(self.deny(
                Record::by(who, "key.create")
                    .outcome("denied", Some("only a global admin sets a key's own rate".into())),
                format!(
                    "key {} may not set a rate: only a global admin (*=admin) can give a key its own rate limit",
                    who.key_id
                ),
            ));
        }
        if !who.may_grant(&new.grants) {
            return Err(self.deny(
                Record::by(who, "key.create")
                    .outcome("denied", Some(format!("may not grant {}", wanted))),
                format!(
                    "key {} may only grant roles on namespaces it administers; it asked for {}",
                    who.key_id, wanted
                ),
            ));
        }
        let (id, secret, token) = keys::generate();
        let key = ApiKey {
            fields: KeyFields {
                id: id.clone(),
                agent_id: new.agent_id,
                agent_type: new.agent_type,
                grants: new.grants,
                created_at: now,
                created_by: who.agent_id.clone(),
                created_by_key: Some(who.key_id.clone()),
                // The command line's operator holds the master key: keys it
                // mints start a chain of their own.
                minted_by: if who.key_id == "cli" {
                    Vec::new()
                } else {
                    who.minted_by
                        .iter()
                        .cloned()
                        .chain(std::iter::once(who.agent_id.clone()))
                        .collect()
                },
                expires_at,
                revoked_at: None,
                rate: new.rate,
            },
            secret_sha256: keys::hash(&secret),
        };
        let row = keys::row(&id);
        let sealed = super::seal_json(&*self.system_key()?, "principals", &row, &key)?;
        let record = Record::by(who, "key.create").target(&id).outcome(
            "ok",
            Some(format!(
                "for agent {} ({}): {}",
                key.fields.agent_id, key.fields.agent_type, wanted
            )),
        );
        let audit = self.audit.clone();
        // The minting key is checked again inside the write: revoking it
        // (which revokes what it minted, in one write) cannot miss a key
        // it is minting at that moment.
        let minter = keys::parse_id(&who.key_id).map(keys::row);
        let system = self.system_key()?;
        let entry = self.store.write_blocking(move |txn, t| {
            if let Some(minter) = &minter {
                let usable = get_in(txn, t.principals, minter)?
                    .and_then(|sealed| {
                        super::open_json::<ApiKey>(&system, "principals", minter, &sealed).ok()
                    })
                    .is_some_and(|k| k.state(now).is_ok());
                if !usable {
                    return Ok(None);
                }
            }
            txn.put(t.principals, &row, &sealed, WriteFlags::NO_OVERWRITE)?;
            audit.append(txn, t, &record).map(Some)
        })?;
        let Some(entry) = entry else {
            return Err(ServiceError::Forbidden(format!(
                "key {} was revoked or expired: it mints no more keys",
                who.key_id
            )));
        };
        crate::audit::emit(&entry);
        Ok((token, key.info(now)))
    }

    pub(super) fn all_keys(&self) -> Result<Vec<ApiKey>, ServiceError> {
        Ok(self
            .principal_rows(b"key/")?
            .into_iter()
            .map(|(_, k)| k)
            .collect())
    }

    /// Is there any API key at all?
    pub fn has_keys(&self) -> Result<bool, ServiceError> {
        Ok(!self
            .store
            .rows_max(|t| t.principals, b"key/", |k| k.starts_with(b"key/"), 1)?
            .is_empty())
    }

    /// The keys `who` administers (all of them for a global admin), newest
    /// last. Never a secret.
    pub fn list_keys(&self, who: &Principal) -> Result<Vec<KeyInfo>, ServiceError> {
        if !who.grants.iter().any(|g| g.role == Role::Admin) {
            return Err(self.deny(
                Record::by(who, "key.list").outcome("denied", None),
                format!("key {} is not an admin of any namespace", who.key_id),
            ));
        }
        let now = model::now_ms();
        let mut out: Vec<KeyInfo> = self
            .all_keys()?
            .into_iter()
            .filter(|k| who.may_grant(&k.fields.grants))
            .map(|k| k.info(now))
            .collect();
        out.sort_by_key(|k| k.key.created_at);
        Ok(out)
    }

    /// Revoke key `id` at once, and with it every key minted with it or
    /// under one of those: a leaked key's children are as leaked as it is.
    /// Only an admin over all of its grants may (its children hold no more
    /// than it did). Revoking a revoked key revokes what is still active
    /// under it, and succeeds.
    pub fn revoke_key(&self, who: &Principal, id: &str) -> Result<Revocation, ServiceError> {
        let missing = || ServiceError::NoKey(id.to_string());
        let key = match keys::parse_id(id) {
            Some(id) => self.load_key(id)?,
            None => None,
        };
        if key.filter(|k| who.may_grant(&k.fields.grants)).is_none() {
            // Not found and not yours look the same: ids are not an oracle.
            if !who.is_global_admin() {
                return Err(self.deny(
                    Record::by(who, "key.revoke")
                        .target(id)
                        .outcome("denied", None),
                    format!("key {} may not revoke key {id}", who.key_id),
                ));
            }
            return Err(missing());
        }
        let now = model::now_ms();
        let system = self.system_key()?;
        let audit = self.audit.clone();
        let by = Record::by(who, "key.revoke");
        let root = id.to_string();
        let internal = |e: ServiceError| StoreError::Storage(e.to_string());
        // Read and revoke in one write: a key minted by the root while it
        // is being revoked is either seen here or refused by create_key.
        let (entries, revocation) = self.store.write_blocking(move |txn, t| {
            let mut all = Vec::new();
            for (row, sealed) in rows_in(txn, t.principals, b"key/")? {
                all.push(
                    super::open_json::<ApiKey>(&system, "principals", &row, &sealed)
                        .map_err(internal)?,
                );
            }
            let Some(target) = all.iter().find(|k| k.fields.id == root) else {
                return Err(StoreError::Raced("the key disappeared; retry".into()));
            };
            let under: Vec<ApiKey> = keys::minted_under(&all, &root)
                .into_iter()
                .filter(|k| k.fields.revoked_at.is_none())
                .cloned()
                .collect();
            let mut revoked_root = target.clone();
            let mut entries = Vec::new();
            if revoked_root.fields.revoked_at.is_none() {
                revoked_root.fields.revoked_at = Some(now);
                let row = keys::row(&root);
                let sealed = super::seal_json(&system, "principals", &row, &revoked_root)
                    .map_err(internal)?;
                txn.put(t.principals, &row, &sealed, WriteFlags::empty())?;
                let detail = (!under.is_empty())
                    .then(|| format!("and {} keys minted under it", under.len()));
                entries.push(audit.append(
                    txn,
                    t,
                    &by.clone().target(&root).outcome("ok", detail),
                )?);
            }
            for mut k in under.clone() {
                k.fields.revoked_at = Some(now);
                let row = keys::row(&k.fields.id);
                let sealed = super::seal_json(&system, "principals", &row, &k).map_err(internal)?;
                txn.put(t.principals, &row, &sealed, WriteFlags::empty())?;
                entries.push(
                    audit.append(
                        txn,
                        t,
                        &by.clone()
                            .target(&k.fields.id)
                            .outcome("ok", Some(format!("minted under revoked key {root}"))),
                    )?,
                );
            }
            Ok((
                entries,
                Revocation {
                    key: revoked_root.info(now),
                    also_revoked: under.into_iter().map(|k| k.fields.id).collect(),
                },
            ))
        })?;
        for entry in &entries {
            crate::audit::emit(entry);
        }
        Ok(revocation)
    }

    /// Audit entries after sequence number `after`, oldest first. Global
    /// admins only.
    pub fn audit_entries(
        &self,
        who: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, ServiceError> {
        if !who.is_global_admin() {
            return Err(self.deny(
                Record::by(who, "audit.read").outcome("denied", None),
                format!("key {} is not a global admin (*=admin)", who.key_id),
            ));
        }
        self.audit
            .after(&self.store, after, limit.clamp(1, 1000))
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// Audit entries before sequence number `before` (default: the end),
    /// newest first, that `keep` accepts: at most `limit`, looking at no
    /// more than 20,000 entries. Also the `before` of the next (older)
    /// page, if there is more to look at. Global admins only.
    pub fn audit_page(
        &self,
        who: &Principal,
        before: Option<u64>,
        limit: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Result<(Vec<Entry>, Option<u64>), ServiceError> {
        if !who.is_global_admin() {
            return Err(self.deny(
                Record::by(who, "audit.read").outcome("denied", None),
                format!("{} is not a global admin (*=admin)", who.key_id),
            ));
        }
        const CHUNK: u64 = 1000;
        const BUDGET: u64 = 20_000;
        let internal = |e: crate::audit::Broken| ServiceError::Internal(e.to_string());
        let length = self.audit.length(&self.store)?;
        let mut end = before.unwrap_or(length + 1).min(length + 1);
        let mut found = Vec::new();
        let mut looked = 0;
        while end > 1 && found.len() < limit && looked < BUDGET {
            let from = end.saturating_sub(CHUNK + 1);
            let chunk = self
                .audit
                .after(&self.store, from, (end - 1 - from) as usize)
                .map_err(internal)?;
            looked += end - 1 - from;
            // Entries below `end` not yet looked at: all of the chunk's, or
            // those below the one that filled the page.
            end = from + 1;
            for e in chunk.into_iter().rev() {
                if keep(&e) {
                    found.push(e);
                    if found.len() == limit {
                        end = found.last().map_or(end, |e| e.seq);
                        break;
                    }
                }
            }
        }
        Ok((found, (end > 1).then_some(end)))
    }

    /// How many entries the audit chain holds.
    pub fn audit_length(&self) -> Result<u64, ServiceError> {
        Ok(self.audit.length(&self.store)?)
    }

    /// The last `n` audit entries (the operator's `memhost audit tail`).
    pub fn audit_tail(&self, n: usize) -> Result<Vec<Entry>, ServiceError> {
        self.audit
            .tail(&self.store, n)
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// Walk the audit chain (the operator's `memhost audit verify`).
    pub fn verify_audit(&self) -> Result<u64, Broken> {
        self.audit.verify(&self.store)
    }

    /// Record an event that is not a use case of its own: a refusal before
    /// any use case ran (a failed authentication, a rate limit), a plugin
    /// reload. Failures to write are logged, never shown to a caller.
    pub fn record_event(&self, record: Record) {
        if let Err(e) = self.audit.record(&self.store, record) {
            tracing::error!(error = %e, "cannot write an audit entry");
        }
    }

    /// Refuse: write the audit entry and return the error for the caller.
    pub(super) fn deny(&self, record: Record, detail: String) -> ServiceError {
        self.record_refusal(record);
        ServiceError::Forbidden(detail)
    }

    /// Write a refusal to the audit log, within the key's budget: past it
    /// refusals are counted, and the count goes with the next one written.
    pub(super) fn record_refusal(&self, mut record: Record) {
        let key = record.key_id.clone().unwrap_or_default();
        match self.refusals.admit(&key) {
            Audited::Write { unwritten: 0 } => {}
            Audited::Write { unwritten } => {
                let said = record.detail.take().unwrap_or_default();
                record.detail = Some(format!(
                    "{said} (and {unwritten} earlier refusals of this key not written: over its audit budget)"
                ));
            }
            Audited::Skip { first } => {
                if first {
                    tracing::warn!(
                        target: "audit",
                        key_id = %crate::logging::untrusted(&key, 64),
                        action = %record.action,
                        "refusals of this key are over its audit budget: counted, not written, until it recovers"
                    );
                }
                return;
            }
        }
        self.record_event(record);
    }

    /// Check that `who` holds at least `needed` on `ns`; refuse (audited)
    /// otherwise. Checked before the namespace is looked up, so a caller
    /// without a role cannot learn which namespaces exist.
    pub(super) fn authorize(
        &self,
        who: &Principal,
        ns: &str,
        needed: Role,
        action: &str,
        target: Option<String>,
    ) -> Result<(), ServiceError> {
        // Before anything is recorded: a name that cannot exist is the
        // caller's mistake, not a refusal worth a place in the audit log.
        check_namespace_name("namespace", ns)?;
        match who.role_in(ns) {
            Some(role) if role >= needed => Ok(()),
            held => {
                let mut record = Record::by(who, action).ns(ns);
                record.target = target;
                let detail = match held {
                    Some(role) => format!(
                        "key {} is {} on namespace \"{ns}\"; {action} needs {}",
                        who.key_id,
                        role.as_str(),
                        needed.as_str()
                    ),
                    None => format!("key {} has no role on namespace \"{ns}\"", who.key_id),
                };
                Err(self.deny(record.outcome("denied", Some(detail.clone())), detail))
            }
        }
    }
}

/// Refuse a namespace name that cannot exist (field `field`), quoting at
/// most a bounded part of it.
pub(super) fn check_namespace_name(field: &str, name: &str) -> Result<(), ServiceError> {
    if model::valid_namespace_name(name) {
        return Ok(());
    }
    Err(invalid(
        field,
        format!(
            "\"{}\" is not a valid namespace name: 1-63 characters, lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            crate::logging::untrusted(name, 80)
        ),
    ))
}
