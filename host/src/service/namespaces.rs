//! Namespace use cases: create, read, list, change settings (governed),
//! delete (governed). Reindex lives with the index it rebuilds
//! (`indexing.rs`).

use std::sync::Arc;

use uuid::Uuid;

use super::approvals::{self, Execution, Payload, Proposal};
use super::{
    DEFAULT_EMBEDDER, DEFAULT_EXTRACTOR, NO_EMBEDDER, NO_EXTRACTOR, Namespace, NamespaceSettings,
    RedactionMode, Service, ServiceError, indexing, invalid, model, ns_key_id, open_json,
    seal_json,
};
use crate::audit::Record;
use crate::auth::{Principal, Role};
use crate::index::vector;
use crate::store::keyring::Keyring;
use crate::store::{StoreError, WriteFlags, del_in, get_in};

impl Service {
    /// Create a namespace with its own data key. Needs admin over the name.
    pub fn create_namespace(
        &self,
        who: &Principal,
        name: &str,
        settings: NamespaceSettings,
    ) -> Result<Namespace, ServiceError> {
        super::access::check_namespace_name("name", name)?;
        if !who.admin_over(name) {
            return Err(self.deny(
                Record::by(who, "namespace.create")
                    .ns(name)
                    .outcome("denied", None),
                format!(
                    "key {} may create only namespaces it administers, not \"{name}\"",
                    who.key_id
                ),
            ));
        }
        let held = self.all_namespaces()?.len();
        if held >= self.limits.namespaces {
            return Err(ServiceError::Conflict(format!(
                "this server holds its most namespaces ({held}); delete one, or raise [limits] max_namespaces"
            )));
        }
        let mut settings = settings;
        let snapshot = self.plugins.snapshot();
        match settings.embedder.as_deref() {
            Some(NO_EMBEDDER) => settings.embedder = None,
            None if snapshot.embedder(DEFAULT_EMBEDDER).is_some() => {
                settings.embedder = Some(DEFAULT_EMBEDDER.into());
            }
            _ => {}
        }
        match settings.extractor.as_deref() {
            Some(NO_EXTRACTOR) => settings.extractor = None,
            None if snapshot.extractor(DEFAULT_EXTRACTOR).is_some() => {
                settings.extractor = Some(DEFAULT_EXTRACTOR.into());
            }
            Some(id) if snapshot.extractor(id).is_none() => {
                return Err(invalid(
                    "extractor",
                    format!("\"{id}\" is not a loaded extractor plugin"),
                ));
            }
            _ => {}
        }
        validate_settings(&settings)?;
        self.check_policy(name, &settings)?;
        self.check_redactor(&settings)?;
        settings.dimensions = match &settings.embedder {
            None => None,
            Some(id) => Some(
                snapshot
                    .embedder(id)
                    .ok_or_else(|| {
                        invalid(
                            "embedder",
                            format!("\"{id}\" is not a loaded embedder plugin"),
                        )
                    })?
                    .model()
                    .dimensions,
            ),
        };
        let ns = Namespace {
            id: Uuid::now_v7(),
            name: name.to_string(),
            created_at: model::now_ms(),
            settings,
            index_generation: 0,
        };
        let row = self.namespace_row(name)?;
        let sealed = seal_json(&*self.system_key()?, "namespaces", &row, &ns)?;
        let (data_key, wrapped) = self.keyring.new_key()?;
        let key_id = ns_key_id(&ns.id);
        let conflict = format!("namespace \"{name}\" already exists");
        let kid = key_id.clone();
        let record = Record::by(who, "namespace.create").ns(name);
        let audit = self.audit.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            if get_in(txn, t.namespaces, &row)?.is_some() {
                return Err(StoreError::Rejected(conflict.clone()));
            }
            txn.put(t.namespaces, &row, &sealed, WriteFlags::empty())?;
            namespaces_changed(txn, t)?;
            Keyring::put_wrapped(txn, t, &kid, &wrapped)?;
            audit.append(txn, t, &record)
        })?;
        crate::audit::emit(&entry);
        self.keyring.remember(&key_id, data_key);
        Ok(ns)
    }

    /// The namespace called `name`, for a caller with any role on it.
    pub fn namespace(&self, who: &Principal, name: &str) -> Result<Namespace, ServiceError> {
        self.authorize(who, name, Role::Reader, "namespace.get", None)?;
        self.find_namespace(name)
    }

    pub(super) fn find_namespace(&self, name: &str) -> Result<Namespace, ServiceError> {
        if !model::valid_namespace_name(name) {
            return Err(ServiceError::NoNamespace(name.to_string()));
        }
        let row = self.namespace_row(name)?;
        let sealed = self
            .store
            .get(|t| t.namespaces, &row)?
            .ok_or_else(|| ServiceError::NoNamespace(name.to_string()))?;
        open_json(&*self.system_key()?, "namespaces", &row, &sealed)
    }

    /// The ids of the loaded embedders a new namespace may be bound to.
    pub fn embedder_ids(&self) -> Vec<String> {
        self.plugins
            .snapshot()
            .entries()
            .filter(|e| e.info.manifest.kind == crate::plugins::PluginKind::Embedder)
            .map(|e| e.info.manifest.id.clone())
            .collect()
    }

    /// Every namespace `who` holds a role on, by name.
    pub fn namespaces(&self, who: &Principal) -> Result<Vec<Namespace>, ServiceError> {
        let mut all = self.all_namespaces()?;
        all.retain(|ns| who.role_in(&ns.name).is_some());
        Ok(all)
    }

    /// Every namespace, by name. Kept in memory while the namespaces table
    /// is unchanged (one small read tells, whichever process wrote it):
    /// listing, cross-namespace recall, the sweeper and every indexing
    /// round use it, and must not unseal every row each time.
    pub(super) fn all_namespaces(&self) -> Result<Vec<Namespace>, ServiceError> {
        let version = self.store.read(|txn, t| namespaces_version(txn, t))?;
        if let Ok(cache) = self.namespace_cache.lock()
            && let Some((at, all)) = cache.as_ref()
            && *at == version
        {
            return Ok(all.as_ref().clone());
        }
        let (version, rows) = self.store.read(|txn, t| {
            Ok((
                namespaces_version(txn, t)?,
                crate::store::rows_in(txn, t.namespaces, &[])?,
            ))
        })?;
        let key = self.system_key()?;
        let mut all = rows
            .iter()
            .map(|(k, v)| open_json::<Namespace>(&key, "namespaces", k, v))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        if let Ok(mut cache) = self.namespace_cache.lock() {
            *cache = Some((version, Arc::new(all.clone())));
        }
        Ok(all)
    }

    /// Change a namespace's settings (`change` gets the current ones).
    /// Needs admin on the namespace; governed by its current policy. A
    /// change of the policy supersedes the namespace's open approvals.
    pub fn update_namespace(
        &self,
        who: &Principal,
        name: &str,
        change: impl FnOnce(NamespaceSettings) -> NamespaceSettings,
    ) -> Result<Namespace, ServiceError> {
        self.authorize(who, name, Role::Admin, "namespace.update", None)?;
        let ns = self.find_namespace(name)?;
        let settings = change(ns.settings.clone());
        self.check_settings_change(&ns, &settings)?;
        self.govern(
            who,
            Proposal::namespace(
                &ns,
                Payload::Configure {
                    settings: settings.clone(),
                },
                "namespace.update",
            ),
        )?;
        self.commit_namespace_update(who, ns, settings, None)
    }

    /// A namespace that redacts needs its redactor loaded: found now, not
    /// by the first write (which it would refuse).
    fn check_redactor(&self, settings: &NamespaceSettings) -> Result<(), ServiceError> {
        if settings.redaction == RedactionMode::Off
            || self
                .plugins
                .snapshot()
                .redactor(&settings.redactor)
                .is_some()
        {
            return Ok(());
        }
        Err(invalid(
            "redactor",
            format!(
                "\"{}\" is not a loaded redactor plugin (load it, or set \"redaction\": \"off\")",
                settings.redactor
            ),
        ))
    }

    /// Can `ns` take `settings`?
    pub(super) fn check_settings_change(
        &self,
        ns: &Namespace,
        settings: &NamespaceSettings,
    ) -> Result<(), ServiceError> {
        let name = &ns.name;
        validate_settings(settings)?;
        if settings.redactor != ns.settings.redactor || settings.redaction != ns.settings.redaction
        {
            self.check_redactor(settings)?;
        }
        let redaction_changed = (settings.redaction, &settings.redactor)
            != (ns.settings.redaction, &ns.settings.redactor);
        let prefix = *ns.id.as_bytes();
        if redaction_changed
            && !self
                .store
                .rows_max(|t| t.memories, &prefix, |k| k.starts_with(&prefix), 1)?
                .is_empty()
        {
            // Redaction applies when a memory is written, and the word and
            // meaning indexes hold the text as it was then shown: changing
            // the rules would leave both under the old ones.
            return Err(invalid(
                "redaction",
                format!(
                    "namespace \"{name}\" already holds memories written and indexed under its current redaction settings; create a new namespace for different ones"
                ),
            ));
        }
        if (&settings.embedder, settings.dimensions)
            != (&ns.settings.embedder, ns.settings.dimensions)
        {
            return Err(invalid(
                "embedder",
                "a namespace keeps the embedder it was created with: vectors of different models never mix",
            ));
        }
        if settings.extractor != ns.settings.extractor {
            return Err(invalid(
                "extractor",
                "a namespace keeps the extractor it was created with",
            ));
        }
        if (&settings.policy, &settings.policy_plugin)
            != (&ns.settings.policy, &ns.settings.policy_plugin)
        {
            self.check_policy(name, settings)?;
        }
        Ok(())
    }

    /// Write new settings for `ns` (governed already), with `exec` when an
    /// approval runs it.
    pub(super) fn commit_namespace_update(
        &self,
        who: &Principal,
        mut ns: Namespace,
        settings: NamespaceSettings,
        exec: Option<Execution>,
    ) -> Result<Namespace, ServiceError> {
        if exec.is_some() {
            // Approved later: what was valid then must still be.
            self.check_settings_change(&ns, &settings)?;
        }
        let name = ns.name.clone();
        let policy_changed = (&settings.policy, &settings.policy_plugin)
            != (&ns.settings.policy, &ns.settings.policy_plugin);
        let read = ns.clone();
        ns.settings = settings;
        let row = self.namespace_row(&name)?;
        let system = self.system_key()?;
        let sealed = seal_json(&system, "namespaces", &row, &ns)?;
        let record = Record::by(who, "namespace.update").ns(&name);
        let audit = self.audit.clone();
        let ledger = self.ledger()?;
        let generation = ns.index_generation;
        let ns_id = ns.id;
        let raced = format!("namespace \"{name}\" was reindexed meanwhile; retry");
        let exec_in = exec.clone();
        let entries = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            // A reindex since it was read would be undone by this write.
            if indexing::generation_in(txn, t, &system, &row)? != Some(generation) {
                return Err(StoreError::Raced(raced.clone()));
            }
            // So would any other change of the settings (a policy change
            // above all).
            indexing::unchanged_in(txn, t, &system, &row, &read)?;
            txn.put(t.namespaces, &row, &sealed, WriteFlags::empty())?;
            namespaces_changed(txn, t)?;
            let mut entries = vec![audit.append(txn, t, &record)?];
            if policy_changed {
                entries.extend(ledger.supersede_in(
                    txn,
                    t,
                    &ns_id,
                    |_| true,
                    "its namespace's policy changed",
                    false,
                )?);
            }
            Ok(entries)
        })?;
        approvals::emit(&exec);
        entries.iter().for_each(crate::audit::emit);
        Ok(ns)
    }

    /// Delete a namespace and everything in it. Its data key goes first, in
    /// one transaction with the namespace row and the audit entry: from that
    /// commit on nothing left of it can be read, even from a copy of the
    /// file taken later. The sealed rows are then removed in batches.
    /// Needs admin on the namespace; governed (the policy sees `purge`).
    /// Its open approvals are superseded. Returns how many memories it held.
    pub fn delete_namespace(&self, who: &Principal, name: &str) -> Result<usize, ServiceError> {
        self.authorize(who, name, Role::Admin, "namespace.delete", None)?;
        let ns = self.find_namespace(name)?;
        self.govern(
            who,
            Proposal::namespace(&ns, Payload::DeleteNamespace, "namespace.delete"),
        )?;
        self.commit_delete_namespace(who, &ns, None)
    }

    pub(super) fn commit_delete_namespace(
        &self,
        who: &Principal,
        ns: &Namespace,
        exec: Option<Execution>,
    ) -> Result<usize, ServiceError> {
        let name = ns.name.as_str();
        let row = self.namespace_row(name)?;
        let key_id = ns_key_id(&ns.id);
        let record = Record::by(who, "namespace.delete").ns(name);
        let audit = self.audit.clone();
        let ledger = self.ledger()?;
        let kid = key_id.clone();
        let ns_id = ns.id;
        let gone = format!("namespace \"{name}\" no longer exists");
        let system = self.system_key()?;
        let read = ns.clone();
        let exec_in = exec.clone();
        let entries = self.store.write_blocking(move |txn, t| {
            approvals::apply(&exec_in, txn, t)?;
            if get_in(txn, t.namespaces, &row)?.is_none() {
                return Err(StoreError::Rejected(gone.clone()));
            }
            indexing::unchanged_in(txn, t, &system, &row, &read)?;
            txn.del(t.namespaces, &row)?;
            namespaces_changed(txn, t)?;
            del_in(txn, t.keys, &kid)?;
            // A reindex under way has nothing left to do.
            del_in(txn, t.jobs, &indexing::pass_key(&ns_id))?;
            let mut entries = vec![audit.append(txn, t, &record)?];
            entries.extend(ledger.supersede_in(
                txn,
                t,
                &ns_id,
                |_| true,
                "its namespace was deleted",
                true,
            )?);
            Ok(entries)
        })?;
        approvals::emit(&exec);
        entries.iter().for_each(crate::audit::emit);
        self.keyring.forget(&key_id);
        crate::index::lexical::drop_namespace(&self.store, &ns.id)?;
        self.vectors.drop_namespace(&ns.id);
        self.forget_aliases(&ns.id);
        let jobs = [vector::JOB_PREFIX, ns.id.as_bytes()].concat();
        self.store.delete_prefix(|t| t.jobs, &jobs, |_| false)?;
        let extractions = [super::extraction::EXT_PREFIX, ns.id.as_bytes()].concat();
        self.store
            .delete_prefix(|t| t.jobs, &extractions, |_| false)?;
        let prefix = ns.id.as_bytes();
        self.store.delete_prefix(|t| t.dedup, prefix, |_| false)?;
        self.store.delete_prefix(|t| t.vectors, prefix, |_| false)?;
        self.store
            .delete_prefix(|t| t.entities, prefix, |_| false)?;
        self.store
            .delete_prefix(|t| t.segments, prefix, |_| false)?;
        // Heads are namespace id + memory id; history rows add a version.
        let memories = self
            .store
            .delete_prefix(|t| t.memories, prefix, |k| k.len() == 32)?;
        Ok(memories)
    }
}

/// Longest namespace description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;

pub(super) fn validate_settings(s: &NamespaceSettings) -> Result<(), ServiceError> {
    if !crate::plugins::manifest::valid_id(&s.redactor) {
        return Err(invalid(
            "redactor",
            format!("\"{}\" is not a plugin id", s.redactor),
        ));
    }
    if let Some(e) = &s.embedder
        && !crate::plugins::manifest::valid_id(e)
    {
        return Err(invalid("embedder", format!("\"{e}\" is not a plugin id")));
    }
    if let Some(e) = &s.extractor
        && !crate::plugins::manifest::valid_id(e)
    {
        return Err(invalid("extractor", format!("\"{e}\" is not a plugin id")));
    }
    if let Some(ttl) = s.approval_ttl_seconds
        && !(1..=model::MAX_APPROVAL_TTL).contains(&ttl)
    {
        return Err(invalid(
            "approval_ttl_seconds",
            format!(
                "must be 1-{} (30 days); held changes must not wait forever",
                model::MAX_APPROVAL_TTL
            ),
        ));
    }
    if !crate::plugins::manifest::valid_id(&s.policy_plugin) {
        return Err(invalid(
            "policy_plugin",
            format!("\"{}\" is not a plugin id", s.policy_plugin),
        ));
    }
    if let Some(d) = &s.description
        && (d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\n'))
    {
        return Err(invalid(
            "description",
            format!(
                "must be at most {MAX_DESCRIPTION} characters, without control characters but newlines"
            ),
        ));
    }
    if s.policy.trim().is_empty() || s.policy.len() > 256 {
        return Err(invalid(
            "policy",
            "must be 1-256 characters, e.g. allow, single:reviewer, consensus:2, or store=allow; forget=single:human",
        ));
    }
    Ok(())
}

/// The `meta` row counting writes to the `namespaces` table.
const NAMESPACES_VERSION: &[u8] = b"namespaces_version";

fn namespaces_version<T: crate::store::Transaction>(
    txn: &T,
    t: &crate::store::Tables,
) -> Result<u64, StoreError> {
    Ok(get_in(txn, t.meta, NAMESPACES_VERSION)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Note a write to the `namespaces` table, inside its transaction: every
/// put or delete there calls this, or cached lists go stale.
pub(super) fn namespaces_changed(
    txn: &mut crate::store::RwTransaction<'_>,
    t: &crate::store::Tables,
) -> Result<(), StoreError> {
    let next = namespaces_version(txn, t)?.wrapping_add(1);
    txn.put(
        t.meta,
        &NAMESPACES_VERSION,
        &next.to_be_bytes(),
        WriteFlags::empty(),
    )?;
    Ok(())
}
