//! Files that carry memories in and out: memhost's export format (JSON
//! Lines, gzip, age — `docs/export.md`) and the exports of other memory
//! servers (`foreign`). Turns files into [`Entry`]s and export lines into
//! files; the use cases themselves (and every rule) are `service/`'s.
//!
//! | reading     | detected by                                   |
//! |-------------|-----------------------------------------------|
//! | age         | `age-encryption.org/v1` at the start           |
//! | gzip        | bytes `1f 8b` at the start (after age)         |
//! | memhost     | a first line `{"type":"header","format":"memhost-export",…}` |
//! | ai-memory, mem0 / OpenMemory | one JSON document of their shape (`foreign`) |

pub mod foreign;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};

use serde::Serialize;

use crate::auth::Principal;
use crate::crypto::CryptoError;
use crate::crypto::age_file;
use crate::service::model::{Imported, Memory, NamespaceSettings};
use crate::service::transfer::{
    ExportLine, FORMAT, FORMAT_VERSION, ImportItem, ImportOutcome, OnConflict, Origin,
};
use crate::service::{NewMemory, Service, ServiceError};

/// A line of an export is at most this long (a memory with many versions).
const MAX_LINE: u64 = 64 << 20;
/// A foreign export is read whole: at most this large (uncompressed).
const MAX_DOCUMENT: u64 = 1 << 30;

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A use case refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// age failed (a recipient, an identity, a damaged file).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The file is not what it should be.
    #[error("{0}")]
    Format(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

fn io(e: std::io::Error) -> TransferError {
    TransferError::Io(e.to_string())
}

/// What an import file holds, item by item.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A namespace and its settings (memhost exports).
    Namespace {
        /// Its name there.
        name: String,
        /// Its settings there.
        settings: NamespaceSettings,
    },
    /// A memory, and the namespace (or scope) it was in there, if any.
    Memory {
        /// Where it was.
        namespace: Option<String>,
        /// What to import.
        item: Box<ImportItem>,
    },
    /// Something memhost has no place for, said once per kind of thing.
    Unmapped(String),
}

/// Which format to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Tell by the content.
    #[default]
    Auto,
    /// memhost's own export.
    Memhost,
    /// ai-memory's JSON export.
    AiMemory,
    /// mem0 / OpenMemory exports.
    Mem0,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Format::Auto),
            "memhost" => Ok(Format::Memhost),
            "ai-memory" => Ok(Format::AiMemory),
            "mem0" | "openmemory" => Ok(Format::Mem0),
            _ => Err(format!(
                "\"{s}\" is not one of auto, memhost, ai-memory, mem0"
            )),
        }
    }
}

/// Write an export of `names` (see [`Service::export`]) to `out`: JSON
/// Lines, gzip-compressed, age-encrypted to `recipients` (at least one:
/// an export is never written in the clear). Returns `out` and the counts
/// (namespaces, memories, earlier versions).
pub fn write_export<W: Write>(
    service: &Service,
    who: &Principal,
    names: &[String],
    versions: bool,
    recipients: &[age::x25519::Recipient],
    out: W,
    progress: &dyn Fn(u64),
) -> Result<(W, (u64, u64, u64)), TransferError> {
    if recipients.is_empty() {
        return Err(TransferError::Format(
            "an export is encrypted to at least one age recipient (age1…)".into(),
        ));
    }
    let sealed = age_file::encrypt_to(out, recipients)?;
    let mut gz = flate2::write::GzEncoder::new(sealed, flate2::Compression::default());
    let mut memories = 0u64;
    let counts = service.export(who, names, versions, &mut |line| {
        let mut bytes = serde_json::to_vec(&line)
            .map_err(|e| ServiceError::Internal(format!("writing the export: {e}")))?;
        bytes.push(b'\n');
        gz.write_all(&bytes)
            .map_err(|e| ServiceError::Internal(format!("writing the export: {e}")))?;
        if matches!(line, ExportLine::Memory { .. }) {
            memories += 1;
            progress(memories);
        }
        Ok(())
    })?;
    let sealed = gz.finish().map_err(io)?;
    let out = sealed.finish().map_err(io)?;
    Ok((out, counts))
}

/// The entries of an import file read from `input` (already decrypted):
/// gzip is undone, the format told by the content unless `format` says.
pub fn read_entries<'a>(
    input: impl Read + 'a,
    format: Format,
) -> Result<Box<dyn Iterator<Item = Result<Entry, TransferError>> + 'a>, TransferError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    if input.fill_buf().map_err(io)?.starts_with(b"PK\x03\x04") {
        let mut bytes = Vec::new();
        input
            .take(MAX_DOCUMENT)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let doc = foreign::zip_document(bytes)?;
        return Ok(Box::new(foreign::entries(doc, format)?.into_iter().map(Ok)));
    }
    let gzipped = input.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut input: Box<dyn BufRead + 'a> = if gzipped {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(input)))
    } else {
        Box::new(input)
    };
    let first = read_line(&mut input)?.unwrap_or_default();
    let header = serde_json::from_slice::<ExportLine>(&first).ok();
    match (format, header) {
        (Format::Auto | Format::Memhost, Some(header)) => {
            check_header(&header)?;
            Ok(Box::new(MemhostLines {
                input,
                line: 1,
                seen: (0, 0),
                ended: false,
            }))
        }
        (Format::Memhost, None) => Err(TransferError::Format(
            "not a memhost export: its first line is not a memhost-export header".into(),
        )),
        (format, _) => {
            let mut whole = first;
            (&mut input)
                .take(MAX_DOCUMENT)
                .read_to_end(&mut whole)
                .map_err(io)?;
            if whole.len() as u64 >= MAX_DOCUMENT {
                return Err(TransferError::Format(format!(
                    "the file is larger than {} GiB uncompressed",
                    MAX_DOCUMENT >> 30
                )));
            }
            let doc: serde_json::Value = match serde_json::from_slice(&whole) {
                Ok(doc) => doc,
                // JSON Lines (OpenMemory's memories.jsonl.gz).
                Err(e) => std::str::from_utf8(&whole)
                    .ok()
                    .and_then(|text| foreign::json_lines(text).ok())
                    .ok_or_else(|| {
                        TransferError::Format(format!(
                            "not a memhost export, and not JSON either: {e}"
                        ))
                    })?,
            };
            Ok(Box::new(foreign::entries(doc, format)?.into_iter().map(Ok)))
        }
    }
}

fn check_header(header: &ExportLine) -> Result<(), TransferError> {
    match header {
        ExportLine::Header {
            format,
            format_version,
            ..
        } if format == FORMAT => {
            if *format_version > FORMAT_VERSION {
                return Err(TransferError::Format(format!(
                    "export format version {format_version} is newer than this memhost reads ({FORMAT_VERSION}): import it with a newer memhost"
                )));
            }
            Ok(())
        }
        _ => Err(TransferError::Format(
            "not a memhost export: its first line is not a memhost-export header".into(),
        )),
    }
}

/// One line (without its newline), at most [`MAX_LINE`] bytes; None at the
/// end.
fn read_line(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, TransferError> {
    let mut line = Vec::new();
    let n = input
        .take(MAX_LINE + 1)
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() as u64 > MAX_LINE {
        return Err(TransferError::Format(format!(
            "a line is longer than {} MiB",
            MAX_LINE >> 20
        )));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// The lines of a memhost export after its header.
struct MemhostLines<R> {
    input: R,
    line: u64,
    /// Namespaces and memories seen, checked against the end line.
    seen: (u64, u64),
    ended: bool,
}

impl<R: BufRead> Iterator for MemhostLines<R> {
    type Item = Result<Entry, TransferError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.ended {
                return None;
            }
            let bytes = match read_line(&mut self.input) {
                Ok(Some(b)) => b,
                Ok(None) => {
                    self.ended = true;
                    return Some(Err(TransferError::Format(format!(
                        "the export ends at line {} without its end line: it was cut short",
                        self.line
                    ))));
                }
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            };
            self.line += 1;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed: ExportLine = match serde_json::from_slice(&bytes) {
                Ok(l) => l,
                Err(e) => {
                    return Some(Err(TransferError::Format(format!(
                        "line {}: {e}",
                        self.line
                    ))));
                }
            };
            return Some(Ok(match parsed {
                ExportLine::Header { .. } => {
                    return Some(Err(TransferError::Format(format!(
                        "line {}: a second header",
                        self.line
                    ))));
                }
                ExportLine::Namespace { name, settings, .. } => {
                    self.seen.0 += 1;
                    Entry::Namespace { name, settings }
                }
                ExportLine::Memory { memory, .. } => {
                    self.seen.1 += 1;
                    Entry::Memory {
                        namespace: Some(memory.namespace.clone()),
                        item: Box::new(from_memhost(*memory)),
                    }
                }
                ExportLine::End {
                    namespaces,
                    memories,
                    ..
                } => {
                    self.ended = true;
                    if (namespaces, memories) != self.seen {
                        return Some(Err(TransferError::Format(format!(
                            "the end line counts {namespaces} namespaces and {memories} memories, the file holds {} and {}",
                            self.seen.0, self.seen.1
                        ))));
                    }
                    return None;
                }
            }));
        }
    }
}

/// What importing a memhost memory keeps: everything but its author (the
/// importer), whose id and type go to its provenance.
fn from_memhost(m: Memory) -> ImportItem {
    let imported = m.imported.clone().unwrap_or(Imported {
        from: "memhost".into(),
        at: 0,
        original_id: None,
        agent_id: Some(m.agent_id.clone()),
        agent_type: Some(m.agent_type.clone()),
    });
    ImportItem {
        memory: NewMemory {
            content: m.content,
            title: m.title,
            tags: m.tags,
            metadata: m.metadata,
            ttl_seconds: None,
            importance: Some(m.importance),
            observed_at: m.observed_at,
        },
        origin: Origin {
            id: Some(m.id),
            created_at: Some(m.created_at),
            updated_at: Some(m.updated_at),
            expires_at: m.expires_at,
            imported,
        },
    }
}

/// Where imported memories go, and what to do with an id already there.
#[derive(Debug, Clone, Default)]
pub struct ImportPlan {
    /// Everything into this namespace (REST's path, `--namespace`); the
    /// file's namespace lines are then not created.
    pub into: Option<String>,
    /// Their namespace name → ours (`--namespace-map a=b`).
    pub map: BTreeMap<String, String>,
    /// For ids already in the namespace.
    pub on_conflict: OnConflict,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Memories stored.
    pub created: u64,
    /// Memories whose content was there already.
    pub duplicates: u64,
    /// Memories whose id was there already, left as they were.
    pub skipped: u64,
    /// Memories whose id was there already, now a new version.
    pub updated: u64,
    /// Memories the namespace's policy holds for approval.
    pub held: u64,
    /// Memories that had expired before they arrived.
    pub expired: u64,
    /// Memories refused (the first hundred reasons are in `errors`).
    pub failed: u64,
    /// Namespaces the import created.
    pub namespaces_created: Vec<String>,
    /// Why memories were refused (the first hundred).
    pub errors: Vec<String>,
    /// What the file holds that memhost has no place for.
    pub unmapped: Vec<String>,
    /// Why the import stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

impl ImportReport {
    /// The counts, in words.
    pub fn summary(&self) -> String {
        format!(
            "{} created, {} duplicates, {} skipped, {} updated, {} held for approval, {} expired, {} failed",
            self.created,
            self.duplicates,
            self.skipped,
            self.updated,
            self.held,
            self.expired,
            self.failed
        )
    }

    /// Memories read so far.
    pub fn seen(&self) -> u64 {
        self.created
            + self.duplicates
            + self.skipped
            + self.updated
            + self.held
            + self.expired
            + self.failed
    }
}

/// Import `entries` as `who`, each memory through the service's import
/// funnel; namespaces the file names are created (with its settings, or
/// the defaults for a foreign export) unless `plan.into` says where
/// everything goes. Goes on past a refused memory; stops at a damaged file
/// or, with `on_conflict: fail`, at the first id already there.
/// `progress` sees the report after each memory.
pub fn import(
    service: &Service,
    who: &Principal,
    entries: impl Iterator<Item = Result<Entry, TransferError>>,
    plan: &ImportPlan,
    progress: &dyn Fn(&ImportReport),
) -> ImportReport {
    const MAX_ERRORS: usize = 100;
    let mut report = ImportReport::default();
    // Namespaces that could not be made, and why.
    let mut broken: BTreeMap<String, String> = BTreeMap::new();
    // Namespaces known to exist: looked up once, not once per memory.
    let mut ensured: std::collections::BTreeSet<String> = Default::default();
    let target = |theirs: &str| plan.map.get(theirs).cloned().unwrap_or(theirs.to_string());
    let fail = |report: &mut ImportReport, why: String| {
        report.failed += 1;
        if report.errors.len() < MAX_ERRORS {
            report.errors.push(why);
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report.stopped = Some(e.to_string());
                break;
            }
        };
        match entry {
            Entry::Unmapped(note) => report.unmapped.push(note),
            Entry::Namespace { name, settings } => {
                if plan.into.is_some() {
                    continue;
                }
                let ours = target(&name);
                match service.import_namespace(who, &ours, settings) {
                    Ok(created) => {
                        if created {
                            report.namespaces_created.push(ours.clone());
                        }
                        ensured.insert(ours);
                    }
                    Err(e) => {
                        broken.insert(ours, e.to_string());
                    }
                }
            }
            Entry::Memory { namespace, item } => {
                let n = report.seen() + 1;
                let ours = match (&plan.into, namespace) {
                    (Some(into), _) => into.clone(),
                    (None, Some(theirs)) => target(&theirs),
                    (None, None) => {
                        fail(
                            &mut report,
                            format!(
                                "memory {n}: the file names no namespace for it; give one (--namespace)"
                            ),
                        );
                        continue;
                    }
                };
                if plan.into.is_none() && !broken.contains_key(&ours) && !ensured.contains(&ours) {
                    match service.import_namespace(who, &ours, NamespaceSettings::default()) {
                        Ok(created) => {
                            if created {
                                report.namespaces_created.push(ours.clone());
                            }
                            ensured.insert(ours.clone());
                        }
                        Err(e) => {
                            broken.insert(ours.clone(), e.to_string());
                        }
                    }
                }
                if let Some(why) = broken.get(&ours) {
                    fail(
                        &mut report,
                        format!("memory {n}: namespace \"{ours}\": {why}"),
                    );
                    progress(&report);
                    continue;
                }
                match service.import_memory(who, &ours, *item, plan.on_conflict) {
                    Ok(ImportOutcome::Created { .. }) => report.created += 1,
                    Ok(ImportOutcome::Duplicate { .. }) => report.duplicates += 1,
                    Ok(ImportOutcome::Skipped { .. }) => report.skipped += 1,
                    Ok(ImportOutcome::Updated { .. }) => report.updated += 1,
                    Ok(ImportOutcome::Expired) => report.expired += 1,
                    Err(ServiceError::Held(_)) => report.held += 1,
                    Err(e @ ServiceError::Conflict(_)) if plan.on_conflict == OnConflict::Fail => {
                        report.stopped = Some(format!("memory {n}: {e}"));
                        break;
                    }
                    Err(e) => fail(&mut report, format!("memory {n} (into \"{ours}\"): {e}")),
                }
                progress(&report);
            }
        }
    }
    service.record_event(crate::audit::Record::by(who, "import").outcome(
        if report.stopped.is_some() {
            "stopped"
        } else {
            "ok"
        },
        Some(format!(
            "{} created, {} duplicates, {} skipped, {} updated, {} held, {} expired, {} failed",
            report.created,
            report.duplicates,
            report.skipped,
            report.updated,
            report.held,
            report.expired,
            report.failed
        )),
    ));
    report
}
