//! The governance funnel and the approval use cases.
//!
//! Every change (store, update, forget, configure, namespace delete,
//! reindex) passes [`Service::govern`] after its access and validity
//! checks and before it writes: the namespace's policy plugin allows it,
//! denies it (`PolicyDenied`, audited, nothing written) or holds it
//! (`Held`: a pending item with its payload sealed). A policy that is not
//! loaded, traps, times out or answers nonsense denies (`PolicyFailed`).
//!
//! A vote runs the policy's `tally` with the new vote; when the answer is
//! `approved`, the action is rebuilt from its sealed payload and written in
//! one transaction with the vote, the `executed` state and their audit
//! entries — after re-checking its precondition (namespace, policy and
//! target version unchanged). Concurrent votes each check the item's
//! revision in their transaction, so an action runs once or not at all.
//!
//! | who | may |
//! |---|---|
//! | any role on the namespace | see its items, vote when the requirement accepts its agent type |
//! | the requester (its agent, while a member) | cancel; never vote on its own item, nor through a key minted through it |
//! | a namespace admin | cancel |
//! | anyone else | nothing: its items answer 404 |

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Memory, MemoryPatch, Namespace, NamespaceSettings, NewMemory, Service, ServiceError, model,
};
use crate::audit::{Entry, Record};
use crate::auth::{Principal, Role};
use crate::governance::{
    ITEM_PREFIX, Kind, Ledger, PendingAction, PolicySnapshot, RACED, RETENTION_MS, Requester,
    Requirement, State, Vote, item_row, payload_row,
};
use crate::plugins::facade::{self, ActionKind, Decision, Outcome};
use crate::store::{RwTransaction, StoreError, Tables};

/// What running an approved item came to.
enum Ran {
    /// It ran, in the transaction that closed the item.
    Executed,
    /// It can no longer run as submitted (why, prefixed `stale_target:`,
    /// `namespace_gone:` or `requester_revoked:`); nothing changed.
    Failed(String),
}

/// The most approvals a requirement may ask for.
pub const MAX_APPROVALS: u32 = 100;
/// The most agent types a requirement may name.
pub const MAX_APPROVER_TYPES: usize = 32;
/// The longest vote comment, in bytes.
pub const MAX_COMMENT: usize = 2000;

/// What a held action will do, sealed under the namespace's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// Store this memory.
    Store {
        /// As submitted.
        memory: NewMemory,
        /// For an import: the id, times and provenance it keeps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        import: Option<super::transfer::Origin>,
    },
    /// Apply this patch.
    Update {
        /// As submitted.
        patch: MemoryPatch,
    },
    /// Forget the target.
    Forget,
    /// Replace the namespace's settings with these.
    Configure {
        /// The whole new settings.
        settings: NamespaceSettings,
    },
    /// Delete the namespace.
    DeleteNamespace,
    /// Reindex, binding this embedder (`None`: its own).
    Reindex {
        /// As submitted.
        embedder: Option<String>,
    },
}

impl Payload {
    fn kind(&self) -> Kind {
        match self {
            Payload::Store { .. } => Kind::Store,
            Payload::Update { .. } => Kind::Update,
            Payload::Forget => Kind::Forget,
            Payload::Configure { .. } => Kind::Configure,
            Payload::DeleteNamespace => Kind::DeleteNamespace,
            Payload::Reindex { .. } => Kind::Reindex,
        }
    }
}

/// An action submitted to the namespace's policy.
pub(super) struct Proposal<'a> {
    /// Where.
    pub ns: &'a Namespace,
    /// The memory it changes and its version now.
    pub target: Option<(Uuid, u32)>,
    /// Tags of the memory stored, changed or forgotten.
    pub tags: Vec<String>,
    /// Labels the redactor found.
    pub labels: Vec<String>,
    /// What would run.
    pub payload: Payload,
    /// The audit action name of the change (`memory.store`, …).
    pub audit_action: &'static str,
    /// Also ask the policy about the change as this kind, and hold to the
    /// stricter answer: an update that sets a TTL schedules a forget.
    pub also_as: Option<Kind>,
}

impl<'a> Proposal<'a> {
    /// A new memory (`memory`, as prepared) of `ns`: the policy sees its
    /// tags and redaction labels; the payload runs if it is approved.
    pub fn store(
        ns: &'a Namespace,
        memory: &Memory,
        payload: Payload,
        audit_action: &'static str,
    ) -> Self {
        Proposal {
            ns,
            target: None,
            tags: memory.tags.clone(),
            labels: memory.redactions.keys().cloned().collect(),
            payload,
            audit_action,
            also_as: None,
        }
    }

    /// A change of namespace `ns` itself: no target, tags or labels.
    pub fn namespace(ns: &'a Namespace, payload: Payload, audit_action: &'static str) -> Self {
        Proposal {
            ns,
            target: None,
            tags: Vec::new(),
            labels: Vec::new(),
            payload,
            audit_action,
            also_as: None,
        }
    }
}

/// A vote as a caller sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVote {
    /// `approve` or `reject`.
    pub decision: VoteDecision,
    /// Optional words (at most 2000 bytes).
    #[serde(default)]
    pub comment: Option<String>,
    /// The `payload_hash` of the item as the voter saw it: a vote on
    /// anything else is refused.
    pub payload_hash: String,
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VoteDecision {
    /// Approve.
    Approve,
    /// Reject.
    Reject,
}

/// Which items a list shows.
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only items in this state (as of now: overdue pending ones are expired).
    pub state: Option<State>,
    /// `Requester`: what the caller asked for; `Approver`: open items the
    /// caller may vote on.
    pub role: Option<Perspective>,
    /// Continue after this id.
    pub cursor: Option<Uuid>,
    /// Page size (1–200, default 50).
    pub limit: Option<usize>,
}

/// Whose view a list takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perspective {
    /// Items the caller's agent asked for.
    Requester,
    /// Open items the caller's agent may vote on.
    Approver,
}

/// An item as shown: its state as of now, and, for callers with a role on
/// its namespace while it is open, what it would do.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApprovalView {
    /// The item.
    #[serde(flatten)]
    pub item: PendingAction,
    /// What it would do, as the namespace shows content (redacted as a
    /// read would be); absent once closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
}

/// One page of approvals, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalPage {
    /// The items.
    pub approvals: Vec<ApprovalView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<Uuid>,
}

/// The transition an approved action commits with: applied inside the
/// action's own write transaction.
#[derive(Clone)]
pub(crate) struct Execution {
    ledger: Ledger,
    next: PendingAction,
    records: Vec<Record>,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Execution {
    /// Flip the item to its next state and append its audit entries, in the
    /// caller's transaction; fails with [`RACED`] if the item moved.
    pub(crate) fn apply(&self, txn: &mut RwTransaction<'_>, t: &Tables) -> Result<(), StoreError> {
        let out = self.ledger.transition(txn, t, &self.next, &self.records)?;
        if let Ok(mut e) = self.entries.lock() {
            *e = out;
        }
        Ok(())
    }

    /// After commit: emit the entries.
    pub(crate) fn emit(&self) {
        if let Ok(entries) = self.entries.lock() {
            entries.iter().for_each(crate::audit::emit);
        }
    }
}

/// [`Execution::apply`] for an optional execution.
pub(crate) fn apply(
    exec: &Option<Execution>,
    txn: &mut RwTransaction<'_>,
    t: &Tables,
) -> Result<(), StoreError> {
    match exec {
        Some(x) => x.apply(txn, t),
        None => Ok(()),
    }
}

/// [`Execution::emit`] for an optional execution.
pub(crate) fn emit(exec: &Option<Execution>) {
    if let Some(x) = exec {
        x.emit();
    }
}

fn action_kind(kind: Kind) -> ActionKind {
    match kind {
        Kind::Store => ActionKind::Store,
        Kind::Update => ActionKind::Update,
        Kind::Forget => ActionKind::Forget,
        Kind::Configure | Kind::Reindex => ActionKind::Configure,
        Kind::DeleteNamespace => ActionKind::Purge,
    }
}

/// The record the policy sees: never content.
fn wit_action(item: &PendingAction) -> facade::Action {
    facade::Action {
        kind: action_kind(item.policy_kind.unwrap_or(item.kind)),
        actor: facade::Actor {
            agent_id: item.requester.agent_id.clone(),
            agent_type: item.requester.agent_type.clone(),
        },
        namespace: item.namespace.clone(),
        target_id: item.target_id.map(|id| id.to_string()),
        tags: item.tags.clone(),
        labels: item.labels.clone(),
        policy_config: item.policy.config.clone(),
    }
}

/// Is this a failure of the action's precondition (it would never run as
/// submitted) rather than a passing fault (storage, a missing plugin)?
fn precondition_failed(e: &ServiceError) -> bool {
    match e {
        ServiceError::Conflict(_) => true,
        // A policy plugin missing for a moment (a reload) is a passing
        // fault: the vote is not counted and can be cast again.
        ServiceError::Invalid { field, .. } if field == "policy_plugin" => false,
        ServiceError::NoMemory { .. }
        | ServiceError::NoNamespace(_)
        | ServiceError::Invalid { .. }
        | ServiceError::TooLarge { .. } => true,
        _ => false,
    }
}

/// Did the item, or what it acts on, move under this attempt? Read again
/// and retry: a lost race is not a verdict.
fn raced(e: &ServiceError) -> bool {
    matches!(e, ServiceError::Raced(_))
}

impl Service {
    pub(super) fn ledger(&self) -> Result<Ledger, ServiceError> {
        Ok(Ledger::new(self.system_key()?))
    }

    /// Ask the namespace's policy about `p`: `Ok(())` to go ahead now;
    /// `Err(PolicyDenied | PolicyFailed)` refused (audited); `Err(Held)`
    /// held for approval (the item is stored, audited).
    pub(super) fn govern(&self, who: &Principal, p: Proposal<'_>) -> Result<(), ServiceError> {
        let ns = p.ns;
        let plugin_id = ns.settings.policy_plugin.clone();
        let snapshot = self.plugins.snapshot();
        let version = snapshot
            .get(&plugin_id)
            .map(|e| e.info.manifest.version.clone())
            .unwrap_or_default();
        let labels: BTreeSet<String> = p.labels.into_iter().collect();
        let now = model::now_ms();
        let mut item = PendingAction {
            id: Uuid::now_v7(),
            kind: p.payload.kind(),
            namespace: ns.name.clone(),
            namespace_id: ns.id,
            target_id: p.target.map(|(id, _)| id),
            target_version: p.target.map(|(_, v)| v),
            requester: Requester {
                key_id: who.key_id.clone(),
                agent_id: who.agent_id.clone(),
                agent_type: who.agent_type.clone(),
            },
            tags: p.tags,
            labels: labels.into_iter().collect(),
            requirement: Requirement {
                summary: String::new(),
                approvals_needed: 0,
                approver_types: Vec::new(),
            },
            policy: PolicySnapshot {
                plugin: plugin_id.clone(),
                version,
                config: ns.settings.policy.clone(),
            },
            payload_hash: String::new(),
            state: State::Pending,
            reason: None,
            votes: Vec::new(),
            created_at: now,
            expires_at: now.saturating_add(ns.settings.approval_ttl_ms()),
            closed_at: None,
            revision: 0,
            idempotency_row: None,
            policy_kind: None,
            namespace_hash: matches!(
                p.payload.kind(),
                Kind::Configure | Kind::DeleteNamespace | Kind::Reindex
            )
            .then(|| namespace_hash(ns)),
        };
        let refused = |outcome: &str, detail: String| {
            let mut r = Record::by(who, p.audit_action)
                .ns(&ns.name)
                .outcome(outcome, Some(detail));
            r.target = item.target_id.map(|id| id.to_string());
            r
        };
        let Some(policy) = snapshot.policy(&plugin_id) else {
            let detail = format!("policy plugin \"{plugin_id}\" is not loaded");
            self.record_refusal(refused("denied", format!("policy failed closed: {detail}")));
            return Err(ServiceError::PolicyFailed {
                plugin: plugin_id,
                detail: "it is not loaded".into(),
            });
        };
        let mut asked = vec![None];
        asked.extend(p.also_as.map(Some));
        let mut decision = Decision::Allow;
        for kind in asked {
            let mut probe = item.clone();
            probe.policy_kind = kind;
            let answer = match policy.evaluate(&wit_action(&probe)) {
                Ok(d) => d,
                Err(e) => {
                    self.record_refusal(refused("denied", format!("policy failed closed: {e}")));
                    return Err(ServiceError::PolicyFailed {
                        plugin: plugin_id,
                        detail: e.kind.to_string(),
                    });
                }
            };
            // The stricter answer holds: deny over approval over allow, and
            // of two requirements the one needing more approvals; the
            // tally is asked as the kind whose requirement holds.
            let stricter = match (&decision, &answer) {
                (Decision::Deny(_), _) => false,
                (_, Decision::Deny(_)) => true,
                (Decision::Allow, Decision::RequireApproval(_)) => true,
                (Decision::RequireApproval(a), Decision::RequireApproval(b)) => {
                    b.approvals_needed >= a.approvals_needed
                }
                _ => false,
            };
            if stricter {
                decision = answer;
                item.policy_kind = kind;
            }
        }
        let requirement = match decision {
            Decision::Allow => return Ok(()),
            Decision::Deny(reason) => {
                let reason: String = reason.chars().take(500).collect();
                self.record_refusal(refused("denied", format!("policy: {reason}")));
                return Err(ServiceError::PolicyDenied(reason));
            }
            Decision::RequireApproval(r) => r,
        };
        if let Err(why) = check_requirement(&requirement) {
            self.record_refusal(refused(
                "denied",
                format!("policy failed closed: it asked for {why}"),
            ));
            return Err(ServiceError::PolicyFailed {
                plugin: plugin_id,
                detail: format!("it asked for {why}"),
            });
        }
        item.requirement = Requirement {
            summary: requirement.summary.chars().take(500).collect(),
            approvals_needed: requirement.approvals_needed,
            approver_types: requirement.approver_types,
        };
        item.payload_hash = payload_hash(&item, &p.payload)?;
        let key = self.data_key(ns)?;
        let sealed_payload = super::seal_json(&key, "pending", &payload_row(&item.id), &p.payload)?;
        let ledger = self.ledger()?;
        let audit = self.audit.clone();
        let record = Record::by(who, "approval.request")
            .ns(&ns.name)
            .target(item.id)
            .outcome(
                "pending",
                Some(format!(
                    "{} held: {}",
                    item.kind.as_str(),
                    item.requirement.summary
                )),
            );
        if let Some(k) = &who.idempotency_key {
            // Per requester and namespace: another agent's key, or the same
            // key on another namespace, is another change.
            let token = key.blind("idempotency", format!("{}\n{k}", who.agent_id).as_bytes());
            item.idempotency_row = Some(crate::governance::idempotency_row(&ns.id, &token));
        }
        let stored = item.clone();
        let (earlier, entry) = self.store.write_blocking(move |txn, t| {
            if let Some(id) = ledger.insert(txn, t, &stored, &sealed_payload)? {
                return Ok((Some(id), None));
            }
            Ok((None, Some(audit.append(txn, t, &record)?)))
        })?;
        if let Some(entry) = entry {
            crate::audit::emit(&entry);
        }
        if let Some(id) = earlier {
            let ledger = self.ledger()?;
            let first = self
                .store
                .read(|txn, t| ledger.get_in(txn, t, &id))?
                .ok_or_else(|| ServiceError::NoApproval(id.to_string()))?;
            return Err(ServiceError::Held(Box::new(first)));
        }
        Err(ServiceError::Held(Box::new(item)))
    }

    /// Check a namespace's policy settings by asking the plugin about each
    /// kind of action: a configuration it cannot read is refused now, not
    /// discovered when every write is denied.
    pub(super) fn check_policy(
        &self,
        ns_name: &str,
        s: &NamespaceSettings,
    ) -> Result<(), ServiceError> {
        let plugin = self
            .plugins
            .snapshot()
            .policy(&s.policy_plugin)
            .ok_or_else(|| {
                super::invalid(
                    "policy_plugin",
                    format!("\"{}\" is not a loaded policy plugin", s.policy_plugin),
                )
            })?;
        for kind in [
            ActionKind::Store,
            ActionKind::Update,
            ActionKind::Forget,
            ActionKind::Purge,
            ActionKind::Configure,
        ] {
            let probe = facade::Action {
                kind,
                actor: facade::Actor {
                    agent_id: "memhost-check".into(),
                    agent_type: "memhost-check".into(),
                },
                namespace: ns_name.to_string(),
                target_id: None,
                tags: Vec::new(),
                labels: Vec::new(),
                policy_config: s.policy.clone(),
            };
            match plugin.evaluate(&probe) {
                Ok(Decision::RequireApproval(r)) => {
                    if let Err(why) = check_requirement(&r) {
                        return Err(super::invalid(
                            "policy",
                            format!("\"{}\" makes {} ask for {why}", s.policy, s.policy_plugin),
                        ));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(super::invalid(
                        "policy",
                        format!("{} refuses \"{}\": {}", s.policy_plugin, s.policy, e.kind),
                    ));
                }
            }
        }
        Ok(())
    }

    fn find_item(&self, who: &Principal, id: &Uuid) -> Result<PendingAction, ServiceError> {
        let ledger = self.ledger()?;
        let item = self
            .store
            .read(|txn, t| ledger.get_in(txn, t, id))?
            .ok_or_else(|| ServiceError::NoApproval(id.to_string()))?;
        // Only members of its namespace see an item (its requester was one
        // when it asked); not found and not yours look the same.
        if who.role_in(&item.namespace).is_none() {
            return Err(ServiceError::NoApproval(id.to_string()));
        }
        Ok(item)
    }

    /// One approval, with what it would do while it is open.
    pub fn approval(&self, who: &Principal, id: &Uuid) -> Result<ApprovalView, ServiceError> {
        let item = self.find_item(who, id)?;
        let item = self.expire_if_due(item)?;
        self.view(who, item)
    }

    fn view(&self, who: &Principal, mut item: PendingAction) -> Result<ApprovalView, ServiceError> {
        let now = model::now_ms();
        item.state = item.state_at(now);
        let payload = if item.state == State::Pending && who.role_in(&item.namespace).is_some() {
            self.shown_payload(&item)?
        } else {
            None
        };
        Ok(ApprovalView { item, payload })
    }

    /// The payload as a reader of the namespace may see it.
    fn shown_payload(
        &self,
        item: &PendingAction,
    ) -> Result<Option<serde_json::Value>, ServiceError> {
        let Ok(ns) = self.find_namespace(&item.namespace) else {
            return Ok(None);
        };
        if ns.id != item.namespace_id {
            return Ok(None);
        }
        let Some(mut payload) = self.load_payload(&ns, &item.id)? else {
            return Ok(None);
        };
        if let Payload::Store { memory, .. } = &mut payload {
            memory.content = self.shown_text(&ns, &memory.content)?;
            if let Some(t) = &memory.title {
                memory.title = Some(self.shown_text(&ns, t)?);
            }
        }
        if let Payload::Update { patch } = &mut payload {
            if let Some(c) = &patch.content {
                patch.content = Some(self.shown_text(&ns, c)?);
            }
            if let Some(t) = &patch.title {
                patch.title = Some(self.shown_text(&ns, t)?);
            }
        }
        Ok(serde_json::to_value(&payload).ok())
    }

    /// Text as a read in `ns` would show it once written.
    fn shown_text(&self, ns: &Namespace, text: &str) -> Result<String, ServiceError> {
        if ns.settings.redaction == super::RedactionMode::Off {
            return Ok(text.to_string());
        }
        // Shown only as redacted; without a working redactor, not at all.
        Ok(match self.redact(ns, text) {
            Ok((shown, _)) => shown,
            Err(_) => "[not shown: the namespace's redactor is not available here]".into(),
        })
    }

    fn load_payload(&self, ns: &Namespace, id: &Uuid) -> Result<Option<Payload>, ServiceError> {
        let row = payload_row(id);
        match self.store.get(|t| t.pending, &row)? {
            None => Ok(None),
            Some(sealed) => Ok(Some(super::open_json(
                &*self.data_key(ns)?,
                "pending",
                &row,
                &sealed,
            )?)),
        }
    }

    /// A pending item past its expiry is written as expired (audited);
    /// returns the item as it now stands.
    fn expire_if_due(&self, item: PendingAction) -> Result<PendingAction, ServiceError> {
        let now = model::now_ms();
        if item.state != State::Pending || now < item.expires_at {
            return Ok(item);
        }
        let next = item.closed(
            State::Expired,
            Some("nobody decided before it expired; it was not run".into()),
            now,
        );
        let record = Record::by(&Principal::system(), "approval.expired")
            .ns(&item.namespace)
            .target(item.id)
            .outcome("expired", Some(format!("{} not run", item.kind.as_str())));
        match self.close(&next, vec![record]) {
            Ok(()) => Ok(next),
            // Someone else moved it first: read what it is now.
            Err(e) if raced(&e) => {
                let ledger = self.ledger()?;
                Ok(self
                    .store
                    .read(|txn, t| ledger.get_in(txn, t, &item.id))?
                    .unwrap_or(next))
            }
            Err(e) => Err(e),
        }
    }

    /// Write `next` (checked against its revision) with `records`.
    fn close(&self, next: &PendingAction, records: Vec<Record>) -> Result<(), ServiceError> {
        let ledger = self.ledger()?;
        let next = next.clone();
        let entries = self
            .store
            .write_blocking(move |txn, t| ledger.transition(txn, t, &next, &records))?;
        entries.iter().for_each(crate::audit::emit);
        Ok(())
    }

    /// Vote on an approval. A repeat vote by the same agent changes
    /// nothing and returns the item as it stands; an approving tally runs
    /// the action in the same transaction as the vote.
    pub fn vote(
        &self,
        who: &Principal,
        id: &Uuid,
        vote: NewVote,
    ) -> Result<ApprovalView, ServiceError> {
        if vote
            .comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT)
        {
            return Err(ServiceError::TooLarge {
                field: "comment".into(),
                limit: MAX_COMMENT,
                unit: "characters",
            });
        }
        // Concurrent voters race on the item's revision; the loser reads
        // the item again. Bounded: each round some transition won.
        for _ in 0..64 {
            // Only members of its namespace find it (`find_item`).
            let item = self.find_item(who, id)?;
            if item.voted(&who.agent_id).is_some() {
                return self.view(who, item);
            }
            if let Some(refusal) = not_a_voter(who, &item) {
                return Err(self.refuse_vote(who, &item, refusal));
            }
            let item = self.expire_if_due(item)?;
            match item.state {
                State::Pending => {}
                State::Expired => return Err(ServiceError::ApprovalExpired(id.to_string())),
                other => {
                    return Err(ServiceError::ApprovalClosed {
                        id: id.to_string(),
                        state: other.as_str().into(),
                        reason: item.reason.clone().unwrap_or_default(),
                    });
                }
            }
            if vote.payload_hash != item.payload_hash {
                return Err(ServiceError::StaleApproval(format!(
                    "approval {id} holds payload {}, not the {} the vote names: read it again before voting",
                    item.payload_hash, vote.payload_hash
                )));
            }
            match self.count_vote(who, item, &vote) {
                Err(e) if raced(&e) => continue,
                other => return other,
            }
        }
        Err(ServiceError::Raced(format!(
            "approval {id} is changing too fast; retry"
        )))
    }

    /// Close `item` as superseded (`why`), answering that it is closed.
    fn supersede(&self, item: &PendingAction, why: &str) -> Result<ApprovalView, ServiceError> {
        let next = item.closed(State::Superseded, Some(why.into()), model::now_ms());
        let record = Record::by(&Principal::system(), "approval.superseded")
            .ns(&item.namespace)
            .target(item.id)
            .outcome("superseded", Some(why.into()));
        self.close(&next, vec![record])?;
        Err(ServiceError::ApprovalClosed {
            id: item.id.to_string(),
            state: "superseded".into(),
            reason: why.into(),
        })
    }

    fn refuse_vote(&self, who: &Principal, item: &PendingAction, e: ServiceError) -> ServiceError {
        self.record_refusal(
            Record::by(who, "approval.vote")
                .ns(&item.namespace)
                .target(item.id)
                .outcome("denied", Some(e.to_string())),
        );
        e
    }

    /// Tally `item` with `vote` and write the outcome (executing when
    /// approved). Fails with [`RACED`] when the item moved meanwhile.
    fn count_vote(
        &self,
        who: &Principal,
        item: PendingAction,
        vote: &NewVote,
    ) -> Result<ApprovalView, ServiceError> {
        let now = model::now_ms();
        let approve = vote.decision == VoteDecision::Approve;
        let mut votes = item.votes.clone();
        votes.push(Vote {
            agent_id: who.agent_id.clone(),
            agent_type: who.agent_type.clone(),
            key_id: who.key_id.clone(),
            approve,
            comment: vote.comment.clone(),
            at: now,
        });
        let vote_record = Record::by(who, "approval.vote")
            .ns(&item.namespace)
            .target(item.id)
            .outcome(if approve { "approve" } else { "reject" }, None);

        // The namespace as it is now: gone, or under another policy, and
        // the item is superseded (normally done when that happened).
        let ns = match self.find_namespace(&item.namespace) {
            Ok(ns) if ns.id == item.namespace_id => ns,
            Ok(_) | Err(ServiceError::NoNamespace(_)) => {
                return self.supersede(&item, "its namespace no longer exists");
            }
            Err(e) => return Err(e),
        };
        if (&ns.settings.policy_plugin, &ns.settings.policy)
            != (&item.policy.plugin, &item.policy.config)
        {
            return self.supersede(&item, "its namespace's policy changed");
        }
        if ns.settings.human_votes == crate::service::HumanVotes::Console
            && who.agent_type == crate::auth::users::HUMAN
            && !who.is_console_user()
            && item
                .requirement
                .approver_types
                .iter()
                .any(|t| t == crate::auth::users::HUMAN)
        {
            let why = ServiceError::NotAnApprover(format!(
                "namespace \"{}\" counts only people signed in to the console as human approvers; key {} is an API key",
                ns.name, who.key_id
            ));
            return Err(self.refuse_vote(who, &item, why));
        }
        let plugin_id = item.policy.plugin.clone();
        let policy = self.plugins.snapshot().policy(&plugin_id).ok_or_else(|| {
            ServiceError::PolicyFailed {
                plugin: plugin_id.clone(),
                detail: "it is not loaded; the vote was not counted".into(),
            }
        })?;
        let wit_votes: Vec<facade::Vote> = votes
            .iter()
            .map(|v| facade::Vote {
                voter: facade::Actor {
                    agent_id: v.agent_id.clone(),
                    agent_type: v.agent_type.clone(),
                },
                approve: v.approve,
                comment: v.comment.clone(),
            })
            .collect();
        let outcome = policy.tally(&wit_action(&item), &wit_votes).map_err(|e| {
            ServiceError::PolicyFailed {
                plugin: plugin_id.clone(),
                detail: format!("{}; the vote was not counted", e.kind),
            }
        })?;
        // Every recorded vote was checked eligible when it was cast.
        let approvals = u32::try_from(votes.iter().filter(|v| v.approve).count()).unwrap_or(0);
        let mut next = PendingAction {
            votes,
            revision: item.revision + 1,
            ..item.clone()
        };
        match outcome {
            Outcome::Pending(_) => {
                self.close(&next, vec![vote_record])?;
                self.view(who, next)
            }
            Outcome::Rejected(reason) => {
                let reason: String = reason.chars().take(500).collect();
                next = PendingAction {
                    state: State::Rejected,
                    reason: Some(reason.clone()),
                    closed_at: Some(now),
                    ..next
                };
                let closed = Record::by(&Principal::system(), "approval.rejected")
                    .ns(&item.namespace)
                    .target(item.id)
                    .outcome("rejected", Some(reason));
                self.close(&next, vec![vote_record, closed])?;
                self.view(who, next)
            }
            // The host counts too: an `approved` on a rejecting vote, or
            // with fewer distinct eligible approvals than the item was held
            // for, is a broken policy, and a broken policy runs nothing.
            Outcome::Approved if !approve || approvals < item.requirement.approvals_needed => {
                Err(ServiceError::PolicyFailed {
                    plugin: plugin_id,
                    detail: format!(
                        "its tally approved with {approvals} eligible approvals of the {} it asked for; the vote was not counted",
                        item.requirement.approvals_needed
                    ),
                })
            }
            Outcome::Approved => {
                let executed = PendingAction {
                    state: State::Executed,
                    closed_at: Some(now),
                    ..next.clone()
                };
                let exec = Execution {
                    ledger: self.ledger()?,
                    next: executed.clone(),
                    records: vec![
                        vote_record.clone(),
                        Record::by(&Principal::system(), "approval.executed")
                            .ns(&item.namespace)
                            .target(item.id)
                            .outcome("executed", Some(item.kind.as_str().into())),
                    ],
                    entries: Arc::default(),
                };
                match self.execute(&ns, &item, exec)? {
                    Ran::Executed => self.view(who, executed),
                    Ran::Failed(reason) => {
                        let failed = PendingAction {
                            state: State::Failed,
                            reason: Some(reason.clone()),
                            closed_at: Some(now),
                            ..next
                        };
                        let closed = Record::by(&Principal::system(), "approval.failed")
                            .ns(&item.namespace)
                            .target(item.id)
                            .outcome("failed", Some(reason));
                        self.close(&failed, vec![vote_record, closed])?;
                        self.view(who, failed)
                    }
                }
            }
        }
    }

    /// Run an approved item's payload, as its requester, with `exec` in the
    /// same transaction — or say why it can no longer run as submitted.
    /// Passing faults (storage, a plugin missing, a lost race) are errors:
    /// the vote is not counted.
    fn execute(
        &self,
        ns: &Namespace,
        item: &PendingAction,
        exec: Execution,
    ) -> Result<Ran, ServiceError> {
        // It runs as its requester, as recorded: its roles were checked when
        // it asked.
        let who = Principal::recorded(
            &item.requester.key_id,
            &item.requester.agent_id,
            &item.requester.agent_type,
        );
        // It runs as its requester: one whose key is gone runs nothing (the
        // command line, the system and --no-auth hold no key).
        if crate::auth::keys::parse_id(&who.key_id).is_some() && !self.key_usable(&who.key_id)? {
            return Ok(Ran::Failed(format!(
                "requester_revoked: key {} was revoked or expired",
                who.key_id
            )));
        }
        if who.is_console_user() && !self.user_active(&who.agent_id)? {
            return Ok(Ran::Failed(format!(
                "requester_revoked: user {} was disabled or removed",
                who.agent_id
            )));
        }
        if let Some(then) = &item.namespace_hash
            && *then != namespace_hash(ns)
        {
            return Ok(Ran::Failed(format!(
                "stale_target: namespace \"{}\" changed since this was asked for",
                ns.name
            )));
        }
        match self.run_payload(ns, item, &who, exec) {
            Ok(()) => Ok(Ran::Executed),
            Err(e @ ServiceError::NoNamespace(_)) => {
                Ok(Ran::Failed(format!("namespace_gone: {e}")))
            }
            Err(e) if precondition_failed(&e) => Ok(Ran::Failed(format!("stale_target: {e}"))),
            Err(e) => Err(e),
        }
    }

    fn run_payload(
        &self,
        ns: &Namespace,
        item: &PendingAction,
        who: &Principal,
        exec: Execution,
    ) -> Result<(), ServiceError> {
        // A payload is removed when its item closes: another vote closed it
        // since it was read. Read the item again.
        let payload = self
            .load_payload(ns, &item.id)?
            .ok_or_else(|| ServiceError::Raced(RACED.into()))?;
        let exec = Some(exec);
        let target = || {
            let id = item.target_id.ok_or_else(|| {
                ServiceError::Internal(format!("approval {} has no target", item.id))
            })?;
            let current = self.load(ns, &id)?;
            if Some(current.version) != item.target_version {
                return Err(ServiceError::Conflict(format!(
                    "memory {id} is at version {}, the approval was for version {}",
                    current.version,
                    item.target_version.unwrap_or(0)
                )));
            }
            Ok(current)
        };
        match payload {
            Payload::Store { memory, import } => {
                let prepared = match import {
                    Some(origin) => self.prepare_import(ns, who, memory, &origin)?,
                    None => self.prepare_store(ns, who, memory)?,
                };
                self.commit_store(who, ns, prepared, exec).map(|_| ())
            }
            Payload::Update { patch } => {
                let old = target()?;
                let next = self.prepare_update(ns, who, &old, &patch)?;
                self.commit_update(who, ns, old, next, patch.ttl_seconds, exec)
                    .map(|_| ())
            }
            Payload::Forget => {
                let current = target()?;
                self.remove(ns, &current, Record::by(who, "memory.forget"), exec)
            }
            Payload::Configure { settings } => self
                .commit_namespace_update(who, ns.clone(), settings, exec)
                .map(|_| ()),
            Payload::DeleteNamespace => self.commit_delete_namespace(who, ns, exec).map(|_| ()),
            Payload::Reindex { embedder } => self
                .commit_reindex(who, ns.clone(), embedder.as_deref(), exec)
                .map(|_| ()),
        }
    }

    /// Withdraw an open item: its requester or a namespace admin.
    pub fn cancel_approval(
        &self,
        who: &Principal,
        id: &Uuid,
    ) -> Result<ApprovalView, ServiceError> {
        for _ in 0..64 {
            let item = self.find_item(who, id)?;
            let is_admin = who.role_in(&item.namespace) >= Some(Role::Admin);
            if item.requester.agent_id != who.agent_id && !is_admin {
                return Err(self.deny(
                    Record::by(who, "approval.cancel")
                        .ns(&item.namespace)
                        .target(item.id)
                        .outcome("denied", Some("neither requester nor admin".into())),
                    format!(
                        "only the requester (agent \"{}\") or an admin of \"{}\" may cancel approval {id}",
                        item.requester.agent_id, item.namespace
                    ),
                ));
            }
            let item = self.expire_if_due(item)?;
            match item.state {
                State::Pending => {}
                State::Expired => return Err(ServiceError::ApprovalExpired(id.to_string())),
                State::Cancelled => return self.view(who, item),
                other => {
                    return Err(ServiceError::ApprovalClosed {
                        id: id.to_string(),
                        state: other.as_str().into(),
                        reason: item.reason.clone().unwrap_or_default(),
                    });
                }
            }
            let next = item.closed(
                State::Cancelled,
                Some(format!("cancelled by agent \"{}\"", who.agent_id)),
                model::now_ms(),
            );
            let record = Record::by(who, "approval.cancel")
                .ns(&item.namespace)
                .target(item.id)
                .outcome("cancelled", None);
            match self.close(&next, vec![record]) {
                Ok(()) => return self.view(who, next),
                Err(e) if raced(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::Raced(format!(
            "approval {id} is changing too fast; retry"
        )))
    }

    /// A page of the approvals `who` may see, oldest first.
    /// How many approval items are in each state (the metrics' gauge).
    pub(super) fn approval_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<&'static str, i64>, ServiceError> {
        let mut counts: std::collections::BTreeMap<&'static str, i64> =
            State::ALL.into_iter().map(|s| (s.as_str(), 0)).collect();
        let ledger = self.ledger()?;
        let now = model::now_ms();
        let mut from = ITEM_PREFIX.to_vec();
        loop {
            let rows =
                self.store
                    .rows_max(|t| t.pending, &from, |k| k.starts_with(ITEM_PREFIX), 256)?;
            for (k, v) in &rows {
                if let Ok(item) = ledger.open(k, v) {
                    *counts.entry(item.state_at(now).as_str()).or_insert(0) += 1;
                }
            }
            match rows.last() {
                Some((k, _)) if rows.len() == 256 => from = [k.as_slice(), &[0]].concat(),
                _ => return Ok(counts),
            }
        }
    }

    pub fn approvals(
        &self,
        who: &Principal,
        q: &ApprovalQuery,
    ) -> Result<ApprovalPage, ServiceError> {
        if let Some(ns) = &q.namespace {
            super::access::check_namespace_name("namespace", ns)?;
        }
        let limit = q.limit.unwrap_or(50).clamp(1, 200);
        let ledger = self.ledger()?;
        let now = model::now_ms();
        let mut from = match q.cursor {
            Some(c) => [item_row(&c), vec![0]].concat(),
            None => ITEM_PREFIX.to_vec(),
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        'chunks: loop {
            let rows =
                self.store
                    .rows_max(|t| t.pending, &from, |k| k.starts_with(ITEM_PREFIX), 256)?;
            let exhausted = rows.len() < 256;
            for (k, v) in &rows {
                from = [k.clone(), vec![0]].concat();
                let Ok(item) = ledger.open(k, v) else {
                    tracing::error!("an approval row does not open; not listed");
                    continue;
                };
                let visible = who.role_in(&item.namespace).is_some();
                let state = item.state_at(now);
                let keep = visible
                    && q.namespace.as_ref().is_none_or(|n| n == &item.namespace)
                    && q.state.is_none_or(|s| s == state)
                    && match q.role {
                        None => true,
                        Some(Perspective::Requester) => who.agent_id == item.requester.agent_id,
                        Some(Perspective::Approver) => {
                            state == State::Pending
                                && item.voted(&who.agent_id).is_none()
                                && not_a_voter(who, &item).is_none()
                        }
                    };
                if keep {
                    if out.len() == limit {
                        more = true;
                        break 'chunks;
                    }
                    last = Some(item.id);
                    out.push(self.view(who, item)?);
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(ApprovalPage {
            approvals: out,
            next_cursor: if more { last } else { None },
        })
    }

    /// Does `who` hold a role on a namespace whose policy is not plain
    /// `allow` (so approvals concern it)?
    pub fn governed_somewhere(&self, who: &Principal) -> Result<bool, ServiceError> {
        Ok(self.namespaces(who)?.iter().any(|ns| {
            ns.settings.policy.trim() != "allow"
                || ns.settings.policy_plugin != model::DEFAULT_POLICY_PLUGIN
        }))
    }

    /// Expire overdue items and purge closed ones past retention; returns
    /// (expired, purged).
    pub fn sweep_approvals(&self) -> Result<(usize, usize), ServiceError> {
        let ledger = self.ledger()?;
        let now = model::now_ms();
        let rows = self
            .store
            .rows(|t| t.pending, ITEM_PREFIX, |k| k.starts_with(ITEM_PREFIX))?;
        let (mut expired, mut purged) = (0, 0);
        for (k, v) in rows {
            let item = match ledger.open(&k, &v) {
                Ok(item) => item,
                Err(e) => {
                    // One unreadable row must not stop every other expiry.
                    tracing::error!(error = %e, "an approval row does not open; skipped");
                    continue;
                }
            };
            if item.state == State::Pending && now >= item.expires_at {
                if self.expire_if_due(item)?.state == State::Expired {
                    expired += 1;
                }
            } else if item
                .closed_at
                .is_some_and(|c| now.saturating_sub(c) > RETENTION_MS)
            {
                let id = item.id;
                let ledger = ledger.clone();
                let done = self.store.write_blocking(move |txn, t| {
                    // Still closed: purge it.
                    if let Some(i) = ledger.get_in(txn, t, &id)?
                        && i.state != State::Pending
                    {
                        ledger.purge(txn, t, &i)?;
                        return Ok(true);
                    }
                    Ok(false)
                })?;
                purged += usize::from(done);
            }
        }
        Ok((expired, purged))
    }
}

/// Why `who` (a member of the item's namespace) may not vote on `item`,
/// if it may not: it is the requester's agent, holds a key minted through
/// the requester, or is of a type the requirement does not accept.
/// Would a vote of `who` count on `item` now: open, not voted yet, not
/// its requester's, of a type it accepts? (A namespace that counts only
/// console users as `human` refuses keys besides, when the vote comes.)
pub fn may_vote(who: &Principal, item: &PendingAction) -> bool {
    item.open_at(model::now_ms())
        && item.voted(&who.agent_id).is_none()
        && not_a_voter(who, item).is_none()
}

fn not_a_voter(who: &Principal, item: &PendingAction) -> Option<ServiceError> {
    let id = item.id;
    if item.requester.agent_id == who.agent_id {
        return Some(ServiceError::SelfApproval(format!(
            "agent \"{}\" asked for approval {id} and may not vote on it",
            who.agent_id
        )));
    }
    if who.minted_by.contains(&item.requester.agent_id) {
        return Some(ServiceError::SelfApproval(format!(
            "key {} was minted through agent \"{}\", which asked for approval {id}: an agent never approves through keys it made",
            who.key_id, item.requester.agent_id
        )));
    }
    if !item.accepts(&who.agent_type) {
        return Some(ServiceError::NotAnApprover(format!(
            "approval {id} needs votes from {}; agent \"{}\" is of type \"{}\"",
            item.requirement.approver_types.join(" or "),
            who.agent_id,
            who.agent_type
        )));
    }
    None
}

/// sha256 (hex) of a namespace's settings and index generation.
fn namespace_hash(ns: &Namespace) -> String {
    let bytes = serde_json::to_vec(&(&ns.settings, ns.index_generation)).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// A requirement the host can honour: 1–100 approvals, valid agent types.
fn check_requirement(r: &facade::Requirement) -> Result<(), String> {
    if r.approvals_needed == 0 || r.approvals_needed > MAX_APPROVALS {
        return Err(format!(
            "{} approvals (1-{MAX_APPROVALS} are possible)",
            r.approvals_needed
        ));
    }
    if r.approver_types.len() > MAX_APPROVER_TYPES
        || !r
            .approver_types
            .iter()
            .all(|t| crate::auth::keys::valid_agent_type(t))
    {
        return Err("approver types that are not agent types".into());
    }
    Ok(())
}

/// sha256 (hex) of what an item would run, where and on what.
fn payload_hash(item: &PendingAction, payload: &Payload) -> Result<String, ServiceError> {
    let bytes = serde_json::to_vec(&(
        item.kind,
        item.namespace_id,
        item.target_id,
        item.target_version,
        payload,
    ))
    .map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}
