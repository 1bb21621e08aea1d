//! Pending actions and their approvals: the bookkeeping of governance. The
//! namespace's policy plugin decides (allow, deny, require approval; and
//! after each vote, approved, rejected or still pending); this module only
//! records what was decided, who voted, and moves an item through its
//! states. It never decides policy itself.
//!
//! | table     | row key                               | value                                   |
//! |-----------|---------------------------------------|-----------------------------------------|
//! | `pending` | `a/` + approval id                    | sealed [`PendingAction`] (system key)   |
//! | `pending` | `p/` + approval id                    | sealed payload (the namespace's key), while open |
//! | `pending` | `n/` + namespace id + approval id     | empty: the namespace's open items       |
//! | `pending` | `i/` + namespace id + blind(requester, idempotency key) | approval id   |
//!
//! The item's bookkeeping (state, votes, requirement) is sealed under the
//! system key so it outlives its namespace: deleting a namespace destroys
//! its key, and its open items must still be marked superseded. What was
//! asked for (the payload: content, settings) is sealed under the
//! namespace's key and removed when the item closes.
//!
//! | state        | means                                                         | terminal |
//! |--------------|---------------------------------------------------------------|----------|
//! | `pending`    | waiting for votes                                             | no       |
//! | `executed`   | approved; the action ran in the same transaction as this state | yes      |
//! | `failed`     | approved, but its precondition no longer held; nothing changed | yes      |
//! | `rejected`   | the policy's tally rejected it                                | yes      |
//! | `expired`    | nobody decided in time; not run                               | yes      |
//! | `cancelled`  | withdrawn by its requester or a namespace admin               | yes      |
//! | `superseded` | its namespace's policy changed, or the namespace or target went | yes    |
//!
//! Every transition is one write transaction holding the new state and its
//! audit entry; each checks the item's `revision` so two concurrent
//! transitions cannot both apply.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::{AuditLog, Entry, Record};
use crate::auth::Principal;
use crate::crypto::DataKey;
use crate::store::{RwTransaction, StoreError, Tables, WriteFlags, del_in, get_in};

/// Terminal items are kept this long after they close, then purged (the
/// audit log keeps their story).
pub const RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// The error message a transition returns when the item changed since it
/// was read: the caller reads it again and retries.
pub const RACED: &str = "the approval changed meanwhile";

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for votes.
    Pending,
    /// Approved and run.
    Executed,
    /// Approved, but could not run (see `reason`); nothing changed.
    Failed,
    /// Rejected.
    Rejected,
    /// Expired before it was decided; not run.
    Expired,
    /// Withdrawn.
    Cancelled,
    /// Overtaken by a policy change or the removal of its namespace or target.
    Superseded,
}

impl State {
    /// `pending`, `executed`, …
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Executed => "executed",
            State::Failed => "failed",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Superseded => "superseded",
        }
    }

    /// Every state.
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Executed,
        State::Failed,
        State::Rejected,
        State::Expired,
        State::Cancelled,
        State::Superseded,
    ];

    /// Parse `pending`, `executed`, …
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What kind of change an item holds. Finer than the contract's action
/// kinds: a namespace delete is shown to the policy as `purge`, a reindex as
/// `configure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Store a memory.
    Store,
    /// Change a memory.
    Update,
    /// Forget a memory.
    Forget,
    /// Change the namespace's settings (its policy included).
    Configure,
    /// Delete the namespace.
    DeleteNamespace,
    /// Reindex the namespace.
    Reindex,
}

impl Kind {
    /// `store`, `update`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Store => "store",
            Kind::Update => "update",
            Kind::Forget => "forget",
            Kind::Configure => "configure",
            Kind::DeleteNamespace => "delete_namespace",
            Kind::Reindex => "reindex",
        }
    }
}

/// Who asked, from the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Requester {
    /// The key it used.
    pub key_id: String,
    /// Its agent.
    pub agent_id: String,
    /// Its agent type.
    pub agent_type: String,
}

/// What must happen before the item can run, as the policy said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Requirement {
    /// In words, e.g. `one approval from an agent of type reviewer`.
    pub summary: String,
    /// Distinct approvals needed.
    pub approvals_needed: u32,
    /// Agent types whose votes count; empty: any.
    pub approver_types: Vec<String>,
}

/// The policy that decided, as it was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicySnapshot {
    /// The plugin's id.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The namespace's policy configuration.
    pub config: String,
}

/// One vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vote {
    /// The voting agent (its credential's agent: two keys of one agent are
    /// one voter).
    pub agent_id: String,
    /// Its type.
    pub agent_type: String,
    /// The key it voted with.
    pub key_id: String,
    /// Approve (true) or reject.
    pub approve: bool,
    /// Its words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When, Unix ms.
    pub at: i64,
}

/// A held action: everything but its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingAction {
    /// Its id (UUIDv7: ids sort by time).
    pub id: Uuid,
    /// What it does.
    pub kind: Kind,
    /// The namespace's name.
    pub namespace: String,
    /// The namespace's id (a namespace deleted and created again under the
    /// same name is another namespace).
    #[serde(skip)]
    pub namespace_id: Uuid,
    /// The memory it changes (update, forget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<Uuid>,
    /// That memory's version when the action was submitted: the action runs
    /// only against that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<u32>,
    /// Who asked.
    pub requester: Requester,
    /// The tags the policy saw.
    pub tags: Vec<String>,
    /// The redactor labels the policy saw.
    pub labels: Vec<String>,
    /// What it needs.
    pub requirement: Requirement,
    /// The policy that held it.
    pub policy: PolicySnapshot,
    /// sha256 (hex) of what will run: a voter sends the hash it saw.
    pub payload_hash: String,
    /// Where it stands.
    pub state: State,
    /// Why it failed, was rejected, superseded, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Votes so far, in order.
    pub votes: Vec<Vote>,
    /// When it was submitted, Unix ms.
    pub created_at: i64,
    /// When it expires if undecided, Unix ms.
    pub expires_at: i64,
    /// When it closed, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<i64>,
    /// Bumped by every transition.
    pub revision: u32,
    /// For a change of the namespace itself: sha256 (hex) of its settings
    /// and index generation when it was asked for. It runs only against
    /// those: two held changes of one namespace never undo each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_hash: Option<String>,
    /// The kind the policy was asked about when it is not `kind`'s own (an
    /// update that sets a TTL answers to the forget rule when stricter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_kind: Option<Kind>,
    /// Its `i/` row when it was submitted with an `Idempotency-Key`.
    #[serde(skip)]
    pub idempotency_row: Option<Vec<u8>>,
}

/// The sealed, stored form: `namespace_id` is kept (it is skipped when
/// shown).
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    item: PendingAction,
    namespace_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_row: Option<Vec<u8>>,
}

impl PendingAction {
    /// Is it open, at `now`? An item past its expiry is not, whatever its
    /// stored state says until the sweeper or the next access writes it.
    pub fn open_at(&self, now: i64) -> bool {
        self.state == State::Pending && now < self.expires_at
    }

    /// The state to show at `now`: a pending item past its expiry shows as
    /// expired.
    pub fn state_at(&self, now: i64) -> State {
        if self.state == State::Pending && now >= self.expires_at {
            State::Expired
        } else {
            self.state
        }
    }

    /// Has agent `agent_id` voted?
    pub fn voted(&self, agent_id: &str) -> Option<&Vote> {
        self.votes.iter().find(|v| v.agent_id == agent_id)
    }

    /// Does the requirement accept votes from agents of `agent_type`?
    pub fn accepts(&self, agent_type: &str) -> bool {
        self.requirement.approver_types.is_empty()
            || self
                .requirement
                .approver_types
                .iter()
                .any(|t| t == agent_type)
    }

    /// This item closed as `state` at `now`, with `reason`.
    pub fn closed(&self, state: State, reason: Option<String>, now: i64) -> PendingAction {
        PendingAction {
            state,
            reason,
            closed_at: Some(now),
            revision: self.revision + 1,
            ..self.clone()
        }
    }
}

/// `a/` + id.
pub fn item_row(id: &Uuid) -> Vec<u8> {
    [b"a/".as_slice(), id.as_bytes()].concat()
}

/// `p/` + id.
pub fn payload_row(id: &Uuid) -> Vec<u8> {
    [b"p/".as_slice(), id.as_bytes()].concat()
}

/// `n/` + namespace id + id.
pub fn open_row(ns: &Uuid, id: &Uuid) -> Vec<u8> {
    [b"n/".as_slice(), ns.as_bytes(), id.as_bytes()].concat()
}

/// The prefix of a namespace's open items.
pub fn open_prefix(ns: &Uuid) -> Vec<u8> {
    [b"n/".as_slice(), ns.as_bytes()].concat()
}

/// `i/` + namespace id + blind token of (requester agent, idempotency key).
pub fn idempotency_row(ns: &Uuid, token: &[u8; 32]) -> Vec<u8> {
    [b"i/".as_slice(), ns.as_bytes(), token].concat()
}

/// The prefix of every item row.
pub const ITEM_PREFIX: &[u8] = b"a/";

/// The bookkeeping of held actions, sealed under the system key, and the
/// audit entries of their transitions (the log is chained under the same
/// key).
#[derive(Clone)]
pub struct Ledger {
    system: std::sync::Arc<DataKey>,
    audit: AuditLog,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("pending: {e}"))
}

impl Ledger {
    /// A ledger sealed under the system data key.
    pub fn new(system: std::sync::Arc<DataKey>) -> Ledger {
        Ledger {
            audit: AuditLog::new(system.clone()),
            system,
        }
    }

    /// Seal `item` for its row.
    pub fn seal(&self, item: &PendingAction) -> Result<Vec<u8>, StoreError> {
        let row = item_row(&item.id);
        let stored = Stored {
            item: item.clone(),
            namespace_id: item.namespace_id,
            idempotency_row: item.idempotency_row.clone(),
        };
        let plain = serde_json::to_vec(&stored).map_err(corrupt)?;
        Ok(self.system.seal_packed("pending", &row, &plain))
    }

    /// Open an item row.
    pub fn open(&self, row: &[u8], sealed: &[u8]) -> Result<PendingAction, StoreError> {
        let plain = self.system.open("pending", row, sealed).map_err(corrupt)?;
        let stored: Stored = serde_json::from_slice(&plain).map_err(corrupt)?;
        let mut item = stored.item;
        item.namespace_id = stored.namespace_id;
        item.idempotency_row = stored.idempotency_row;
        Ok(item)
    }

    /// The item `id` inside a transaction.
    pub fn get_in(
        &self,
        txn: &impl crate::store::Transaction,
        t: &Tables,
        id: &Uuid,
    ) -> Result<Option<PendingAction>, StoreError> {
        let row = item_row(id);
        get_in(txn, t.pending, &row)?
            .map(|sealed| self.open(&row, &sealed))
            .transpose()
    }

    /// Write a new open item with its sealed payload (and its idempotency
    /// row, if any) — unless its idempotency row already names an item:
    /// then that item's id, and nothing is written.
    pub fn insert(
        &self,
        txn: &mut RwTransaction<'_>,
        t: &Tables,
        item: &PendingAction,
        sealed_payload: &[u8],
    ) -> Result<Option<Uuid>, StoreError> {
        if let Some(row) = &item.idempotency_row
            && let Some(earlier) = get_in(txn, t.pending, row)?
            && let Ok(id) = Uuid::from_slice(&earlier)
            && get_in(txn, t.pending, &item_row(&id))?.is_some()
        {
            return Ok(Some(id));
        }
        txn.put(
            t.pending,
            &item_row(&item.id),
            &self.seal(item)?,
            WriteFlags::NO_OVERWRITE,
        )?;
        txn.put(
            t.pending,
            &payload_row(&item.id),
            &sealed_payload,
            WriteFlags::empty(),
        )?;
        txn.put(
            t.pending,
            &open_row(&item.namespace_id, &item.id),
            &[],
            WriteFlags::empty(),
        )?;
        if let Some(row) = &item.idempotency_row {
            txn.put(t.pending, row, item.id.as_bytes(), WriteFlags::empty())?;
        }
        Ok(None)
    }

    /// Remove a closed item and its idempotency row.
    pub fn purge(
        &self,
        txn: &mut RwTransaction<'_>,
        t: &Tables,
        item: &PendingAction,
    ) -> Result<(), StoreError> {
        let rows = [Some(item_row(&item.id)), item.idempotency_row.clone()];
        for row in rows.into_iter().flatten() {
            del_in(txn, t.pending, &row)?;
        }
        Ok(())
    }

    /// Replace item `next.id`, which must still be at revision
    /// `next.revision - 1` (else [`RACED`]), and append `records` to the
    /// audit log in the same transaction; returns their entries, to emit
    /// after commit. A terminal `next` drops its payload and its open-index
    /// row.
    pub fn transition(
        &self,
        txn: &mut RwTransaction<'_>,
        t: &Tables,
        next: &PendingAction,
        records: &[Record],
    ) -> Result<Vec<Entry>, StoreError> {
        let current = self
            .get_in(txn, t, &next.id)?
            .ok_or_else(|| StoreError::Raced(RACED.into()))?;
        if current.revision + 1 != next.revision || current.state != State::Pending {
            return Err(StoreError::Raced(RACED.into()));
        }
        // Past its expiry an item can only expire (or be superseded): a
        // vote that began in time and commits late runs nothing.
        if crate::clock::now_ms() >= current.expires_at
            && !matches!(next.state, State::Expired | State::Superseded)
        {
            return Err(StoreError::Raced(RACED.into()));
        }
        txn.put(
            t.pending,
            &item_row(&next.id),
            &self.seal(next)?,
            WriteFlags::empty(),
        )?;
        if next.state != State::Pending {
            for row in [
                payload_row(&next.id),
                open_row(&next.namespace_id, &next.id),
            ] {
                del_in(txn, t.pending, &row)?;
            }
        }
        records
            .iter()
            .map(|r| self.audit.append(txn, t, r))
            .collect()
    }

    /// The open items of namespace `ns` inside a transaction.
    pub fn open_in(
        &self,
        txn: &impl crate::store::Transaction,
        t: &Tables,
        ns: &Uuid,
    ) -> Result<Vec<PendingAction>, StoreError> {
        let prefix = open_prefix(ns);
        let mut ids: Vec<Uuid> = Vec::new();
        crate::store::visit_in(txn, t.pending, &prefix, usize::MAX, |k, _| {
            if !k.starts_with(&prefix) {
                return false;
            }
            ids.extend(k.get(18..34).and_then(|b| Uuid::from_slice(b).ok()));
            true
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(item) = self.get_in(txn, t, &id)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// Mark every open item of namespace `ns` that `which` selects
    /// superseded, with `reason`, inside the caller's transaction, each with
    /// its audit entry (returned, to emit after commit). `scrub` (a deleted
    /// namespace) also drops the tags and labels they recorded: nothing of
    /// its memories stays behind.
    pub fn supersede_in(
        &self,
        txn: &mut RwTransaction<'_>,
        t: &Tables,
        ns: &Uuid,
        which: impl Fn(&PendingAction) -> bool,
        reason: &str,
        scrub: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let now = crate::clock::now_ms();
        let mut entries = Vec::new();
        for item in self.open_in(txn, t, ns)? {
            if item.state == State::Pending && which(&item) {
                let mut next = item.closed(State::Superseded, Some(reason.to_string()), now);
                if scrub {
                    next.tags.clear();
                    next.labels.clear();
                }
                let record = Record::by(&Principal::system(), "approval.superseded")
                    .ns(&item.namespace)
                    .target(item.id)
                    .outcome("superseded", Some(reason.into()));
                entries.extend(self.transition(txn, t, &next, &[record])?);
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};
    use std::sync::Arc;

    fn item(ns: Uuid, expires_at: i64) -> PendingAction {
        PendingAction {
            id: Uuid::now_v7(),
            kind: Kind::Store,
            namespace: "team".into(),
            namespace_id: ns,
            target_id: None,
            target_version: None,
            requester: Requester {
                key_id: "k".into(),
                agent_id: "bot".into(),
                agent_type: "assistant".into(),
            },
            tags: vec!["t".into()],
            labels: vec!["email".into()],
            requirement: Requirement {
                summary: "one".into(),
                approvals_needed: 1,
                approver_types: vec![],
            },
            policy: PolicySnapshot {
                plugin: "policy-standard".into(),
                version: "0.1.0".into(),
                config: "consensus:1".into(),
            },
            payload_hash: "h".into(),
            state: State::Pending,
            reason: None,
            votes: vec![],
            created_at: 0,
            expires_at,
            closed_at: None,
            revision: 0,
            namespace_hash: None,
            policy_kind: None,
            idempotency_row: None,
        }
    }

    fn open() -> (tempfile::TempDir, Store, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        (dir, store, Ledger::new(Arc::new(DataKey::generate())))
    }

    fn insert(store: &Store, ledger: &Ledger, it: &PendingAction) {
        let (l, i) = (ledger.clone(), it.clone());
        store
            .write_blocking(move |txn, t| l.insert(txn, t, &i, b"sealed payload"))
            .unwrap();
    }

    fn transition(store: &Store, ledger: &Ledger, next: &PendingAction) -> Result<(), StoreError> {
        let (l, n) = (ledger.clone(), next.clone());
        store.write_blocking(move |txn, t| l.transition(txn, t, &n, &[]).map(|_| ()))
    }

    #[test]
    fn a_transition_applies_once_and_a_closed_item_drops_its_payload() {
        let (_d, store, ledger) = open();
        let ns = Uuid::now_v7();
        let it = item(ns, i64::MAX);
        insert(&store, &ledger, &it);
        let executed = it.closed(State::Executed, None, 1);
        transition(&store, &ledger, &executed).unwrap();
        // The same transition again, or any other from the old revision: raced.
        assert!(matches!(
            transition(&store, &ledger, &executed),
            Err(StoreError::Raced(_))
        ));
        let cancelled = it.closed(State::Cancelled, None, 2);
        assert!(transition(&store, &ledger, &cancelled).is_err());
        let stored = store
            .read(|txn, t| ledger.get_in(txn, t, &it.id))
            .unwrap()
            .unwrap();
        assert_eq!(stored.state, State::Executed);
        assert_eq!(stored.namespace_id, ns);
        assert!(
            store
                .get(|t| t.pending, &payload_row(&it.id))
                .unwrap()
                .is_none()
        );
        let open = store.read(|txn, t| ledger.open_in(txn, t, &ns)).unwrap();
        assert!(open.is_empty());
    }

    #[test]
    fn past_its_expiry_an_item_can_only_expire() {
        let (_d, store, ledger) = open();
        let it = item(Uuid::now_v7(), 1);
        insert(&store, &ledger, &it);
        assert!(transition(&store, &ledger, &it.closed(State::Executed, None, 2)).is_err());
        transition(&store, &ledger, &it.closed(State::Expired, None, 2)).unwrap();
    }

    #[test]
    fn a_repeated_idempotency_key_names_the_first_item_and_writes_nothing() {
        let (_d, store, ledger) = open();
        let ns = Uuid::now_v7();
        let row = idempotency_row(&ns, &[7; 32]);
        let mut first = item(ns, i64::MAX);
        first.idempotency_row = Some(row.clone());
        insert(&store, &ledger, &first);
        let mut retry = item(ns, i64::MAX);
        retry.idempotency_row = Some(row);
        let (l, r) = (ledger.clone(), retry.clone());
        let earlier = store
            .write_blocking(move |txn, t| l.insert(txn, t, &r, b"p"))
            .unwrap();
        assert_eq!(earlier, Some(first.id));
        assert!(
            store
                .read(|txn, t| ledger.get_in(txn, t, &retry.id))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn superseding_a_deleted_namespace_scrubs_what_it_recorded() {
        let (_d, store, ledger) = open();
        let ns = Uuid::now_v7();
        let it = item(ns, i64::MAX);
        insert(&store, &ledger, &it);
        let l = ledger.clone();
        let entries = store
            .write_blocking(move |txn, t| l.supersede_in(txn, t, &ns, |_| true, "gone", true))
            .unwrap();
        assert_eq!(entries.len(), 1, "one audit entry per superseded item");
        let stored = store
            .read(|txn, t| ledger.get_in(txn, t, &it.id))
            .unwrap()
            .unwrap();
        assert_eq!(stored.state, State::Superseded);
        assert!(stored.tags.is_empty() && stored.labels.is_empty());
    }
}
