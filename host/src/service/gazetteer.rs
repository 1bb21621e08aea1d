//! A namespace's gazetteer: aliases its admin declares so that "Bob",
//! "Robert" and "Bob Smith" are one entity. The extractor's findings are
//! stored as found; the gazetteer is applied when they are read — a
//! memory's entities, a recall's entity filter, the namespace's entity
//! listing — so an edit takes effect at once, without extracting again,
//! and undoing it loses nothing.
//!
//! | table      | row                    | value                                   |
//! |------------|------------------------|-----------------------------------------|
//! | `entities` | namespace id + `g`     | sealed: the aliases as the admin wrote them |
//!
//! Names compare trimmed, lowercase, spaces collapsed (as the entity index
//! blinds them). An alias of an alias resolves to the end of the chain; a
//! name given as its own alias is ignored; a cycle is refused.
//!
//! Changing the gazetteer is an admin's act, audited, and not put to the
//! namespace's policy: it changes no memory and no access, only which
//! spellings are read as one name.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Namespace, Service, ServiceError, invalid};
use crate::audit::Record;
use crate::auth::{Principal, Role};
use crate::store::WriteFlags;

/// Most aliases a namespace may declare.
pub const MAX_ALIASES: usize = 1_000;
/// Longest alias or canonical name, in characters (as an entity name).
pub const MAX_ALIAS_CHARS: usize = super::extraction::MAX_NAME;
/// Longest chain of aliases followed.
const MAX_CHAIN: usize = 16;

/// A namespace's aliases: each alias (a spelling the extractor may find)
/// → the name it stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gazetteer {
    /// Alias → canonical name, e.g. `{"Bob": "Bob Smith", "Robert": "Bob Smith"}`.
    pub aliases: BTreeMap<String, String>,
}

/// The `entities` row holding namespace `ns`'s gazetteer.
fn row_key(ns: &Uuid) -> Vec<u8> {
    [ns.as_bytes().as_slice(), b"g"].concat()
}

/// Each namespace's gazetteer row as last opened, and what it resolved to:
/// reused while the row is unchanged (a recall opens many memories).
pub(super) type Opened = Arc<Mutex<HashMap<Uuid, (Vec<u8>, Arc<Aliases>)>>>;

/// A name as the index compares it: trimmed, lowercase, spaces collapsed.
pub(super) fn normal(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A gazetteer ready to apply: every alias resolved to the end of its chain.
#[derive(Debug, Default)]
pub(super) struct Aliases {
    /// Normal alias → canonical name as written.
    to: HashMap<String, String>,
}

impl Aliases {
    /// Check `g` and resolve its chains; a clear error names what is wrong.
    fn resolve(g: &Gazetteer) -> Result<Aliases, ServiceError> {
        if g.aliases.len() > MAX_ALIASES {
            return Err(ServiceError::TooLarge {
                field: "aliases".into(),
                limit: MAX_ALIASES,
                unit: "entries",
            });
        }
        let mut direct: HashMap<String, (&str, &str)> = HashMap::new();
        for (alias, name) in &g.aliases {
            for (field, text) in [("alias", alias), ("name", name)] {
                if text.trim().is_empty() {
                    return Err(invalid(
                        "aliases",
                        format!("an {field} is empty (\"{alias}\": \"{name}\")"),
                    ));
                }
                if text.chars().count() > MAX_ALIAS_CHARS {
                    return Err(invalid(
                        "aliases",
                        format!("{field} \"{text}\" is longer than {MAX_ALIAS_CHARS} characters"),
                    ));
                }
            }
            let (a, n) = (normal(alias), normal(name));
            if a == n {
                continue;
            }
            match direct.get(&a) {
                None => {
                    direct.insert(a, (alias, name));
                }
                Some((other, was)) if normal(was) != n => {
                    return Err(invalid(
                        "aliases",
                        format!(
                            "\"{other}\" and \"{alias}\" are the same alias for two names (\"{was}\", \"{name}\")"
                        ),
                    ));
                }
                // The same alias again for the same name: the first spelling stands.
                Some(_) => {}
            }
        }
        let mut to = HashMap::with_capacity(direct.len());
        for (alias, (written, first)) in &direct {
            let mut name = *first;
            let mut steps = 0;
            while let Some((_, next)) = direct.get(&normal(name)) {
                if normal(next) == *alias || steps == MAX_CHAIN {
                    return Err(invalid(
                        "aliases",
                        format!(
                            "\"{written}\" leads back to itself through its aliases (or through more than {MAX_CHAIN})"
                        ),
                    ));
                }
                name = next;
                steps += 1;
            }
            to.insert(alias.clone(), name.trim().to_string());
        }
        Ok(Aliases { to })
    }

    /// The name `name` stands for: its canonical name if it is an alias,
    /// else itself.
    pub(super) fn canonical<'a>(&'a self, name: &'a str) -> &'a str {
        self.to.get(&normal(name)).map_or(name, String::as_str)
    }

    /// Every spelling read as `name` (itself included): what the index is
    /// searched for.
    pub(super) fn spellings(&self, name: &str) -> Vec<String> {
        let canonical = normal(self.canonical(name));
        let mut all = vec![canonical.clone()];
        all.extend(
            self.to
                .iter()
                .filter(|(_, to)| normal(to) == canonical)
                .map(|(alias, _)| alias.clone()),
        );
        all
    }

    /// Each canonical name that has aliases, with every spelling of it.
    pub(super) fn groups(&self) -> BTreeMap<String, (String, Vec<String>)> {
        let mut groups: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for (alias, to) in &self.to {
            let entry = groups
                .entry(normal(to))
                .or_insert_with(|| (to.clone(), vec![normal(to)]));
            entry.1.push(alias.clone());
        }
        groups
    }
}

impl Service {
    /// Forget namespace `ns`'s opened gazetteer (the namespace is gone).
    pub(super) fn forget_aliases(&self, ns: &Uuid) {
        if let Ok(mut opened) = self.gazetteers.lock() {
            opened.remove(ns);
        }
    }

    /// Namespace `ns`'s gazetteer as stored (empty when none was set).
    fn stored_gazetteer(&self, ns: &Namespace) -> Result<Gazetteer, ServiceError> {
        let row = row_key(&ns.id);
        match self.store.get(|t| t.entities, &row)? {
            None => Ok(Gazetteer::default()),
            Some(sealed) => super::open_json(&*self.data_key(ns)?, "entities", &row, &sealed),
        }
    }

    /// Namespace `ns`'s aliases, ready to apply.
    pub(super) fn aliases(&self, ns: &Namespace) -> Result<Arc<Aliases>, ServiceError> {
        let row = row_key(&ns.id);
        let Some(sealed) = self.store.get(|t| t.entities, &row)? else {
            return Ok(Arc::default());
        };
        if let Ok(opened) = self.gazetteers.lock()
            && let Some((was, aliases)) = opened.get(&ns.id)
            && *was == sealed
        {
            return Ok(aliases.clone());
        }
        let g: Gazetteer = super::open_json(&*self.data_key(ns)?, "entities", &row, &sealed)?;
        // Checked when it was set; a row that no longer resolves (a limit
        // lowered since) applies nothing rather than failing every read.
        let aliases = Arc::new(Aliases::resolve(&g).unwrap_or_default());
        if let Ok(mut opened) = self.gazetteers.lock() {
            opened.insert(ns.id, (sealed, aliases.clone()));
        }
        Ok(aliases)
    }

    /// The gazetteer of `namespace`. Needs read access.
    pub fn gazetteer(&self, who: &Principal, namespace: &str) -> Result<Gazetteer, ServiceError> {
        self.authorize(who, namespace, Role::Reader, "namespace.gazetteer", None)?;
        let ns = self.find_namespace(namespace)?;
        self.stored_gazetteer(&ns)
    }

    /// Replace the gazetteer of `namespace` with `g`: applies at once to
    /// its memories' entities, entity filters and listing. Needs admin.
    pub fn set_gazetteer(
        &self,
        who: &Principal,
        namespace: &str,
        g: Gazetteer,
    ) -> Result<Gazetteer, ServiceError> {
        self.authorize(who, namespace, Role::Admin, "namespace.gazetteer", None)?;
        let ns = self.find_namespace(namespace)?;
        let resolved = Aliases::resolve(&g)?;
        let row = row_key(&ns.id);
        let sealed = super::seal_json(&*self.data_key(&ns)?, "entities", &row, &g)?;
        let record = Record::by(who, "namespace.gazetteer")
            .ns(namespace)
            .outcome(
                "ok",
                Some(format!(
                    "{} aliases for {} names",
                    resolved.to.len(),
                    resolved.groups().len()
                )),
            );
        let audit = self.audit.clone();
        let ns_row = self.namespace_row(namespace)?;
        let system = self.system_key()?;
        let raced = format!("namespace \"{namespace}\" was deleted meanwhile");
        let empty = g.aliases.is_empty();
        let ns_id = ns.id;
        let entry = self.store.write_blocking(move |txn, t| {
            // Deleted since it was found (perhaps made again under the same
            // name): its aliases would outlive it.
            let now = super::indexing::namespace_in(txn, t, &system, &ns_row)?;
            if now.is_none_or(|now| now.id != ns_id) {
                return Err(crate::store::StoreError::Raced(raced.clone()));
            }
            if empty {
                crate::store::del_in(txn, t.entities, &row)?;
            } else {
                txn.put(t.entities, &row, &sealed, WriteFlags::empty())?;
            }
            audit.append(txn, t, &record)
        })?;
        crate::audit::emit(&entry);
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pairs: &[(&str, &str)]) -> Result<Aliases, ServiceError> {
        Aliases::resolve(&Gazetteer {
            aliases: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        })
    }

    #[test]
    fn aliases_resolve_to_the_end_of_their_chain_in_any_case() {
        let a = resolve(&[("Bob", "Robert"), ("Robert", "Bob Smith"), ("bobby", "bob")]).unwrap();
        assert_eq!(a.canonical("BOB"), "Bob Smith");
        assert_eq!(a.canonical("  bobby "), "Bob Smith");
        assert_eq!(a.canonical("Bob  Smith"), "Bob  Smith");
        assert_eq!(a.canonical("Alice"), "Alice");
        let mut s = a.spellings("robert");
        s.sort();
        assert_eq!(s, ["bob", "bob smith", "bobby", "robert"]);
        assert_eq!(a.groups().len(), 1);
    }

    #[test]
    fn a_cycle_a_clash_an_empty_or_long_name_is_refused_by_name() {
        let e = resolve(&[("a", "b"), ("b", "c"), ("c", "A")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads back to itself"), "{e}");
        let e = resolve(&[("Bob", "Bob Smith"), ("bob", "Bobby")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("same alias for two names"), "{e}");
        let e = resolve(&[("Bob", " ")]).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let long = "x".repeat(MAX_ALIAS_CHARS + 1);
        let e = resolve(&[("Bob", &long)]).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
        // Its own alias is no alias; the same alias twice for one name is fine.
        let a = resolve(&[("Bob", "bob"), ("Al", "Alice"), ("al", "alice")]).unwrap();
        assert_eq!(a.canonical("bob"), "bob");
        assert_eq!(a.canonical("AL"), "Alice");
    }
}
