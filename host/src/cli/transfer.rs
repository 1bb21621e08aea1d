//! `memhost export` and `memhost import`: memories out as an age file any
//! age tool opens (`docs/export.md`), and in — from memhost's exports or
//! from ai-memory's and mem0's — through the same funnel as every write.
//! Both work while the server runs on the same data directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::progress::{Progress, Unit};
use crate::auth::Principal;
use crate::crypto::age_file::{self, Identities};
use crate::service::transfer::OnConflict;
use crate::transfer::{self, Format, ImportPlan};

/// `memhost export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// A namespace to export (repeatable; default: all of them).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Encrypt to this age X25519 recipient (age1…); repeatable, at least one.
    #[arg(long = "recipient", required = true)]
    recipients: Vec<String>,
    /// The file to write, or - for standard output.
    #[arg(long)]
    out: PathBuf,
    /// Include each memory's earlier versions.
    #[arg(long)]
    versions: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Configuration file (the plugins a redacting read needs).
    #[arg(long, env = "MEMHOST_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory.
    #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
    data: PathBuf,
}

/// `memhost import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The file: a memhost export (age-encrypted, or after `age -d`), an
    /// ai-memory export, or an OpenMemory/mem0 export; - for standard input.
    file: PathBuf,
    /// The age identity file that opens an encrypted export.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// The file's format (default: told by its content).
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    format: Format,
    /// Import everything into this namespace.
    #[arg(long, conflicts_with = "namespace_map")]
    namespace: Option<String>,
    /// THEIRS=OURS: import namespace THEIRS as OURS (repeatable).
    #[arg(long = "namespace-map", value_parser = parse_mapping)]
    namespace_map: Vec<(String, String)>,
    /// For a memory whose id is already there: skip it, make it a new
    /// version, or stop.
    #[arg(long, default_value = "skip", value_parser = parse_on_conflict)]
    on_conflict: OnConflict,
    /// Configuration file (the plugins the namespaces use: redaction,
    /// policy, extraction).
    #[arg(long, env = "MEMHOST_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory.
    #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
    data: PathBuf,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn parse_on_conflict(s: &str) -> Result<OnConflict, String> {
    s.parse()
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.into(), b.into())),
        _ => Err(format!("\"{s}\" is not THEIRS=OURS")),
    }
}

/// Write an export.
pub(crate) fn export(args: ExportArgs) -> anyhow::Result<i32> {
    let recipients = age_file::parse_recipients(&args.recipients)?;
    let out = super::output::Out::new(&args.out, args.force)?;
    let service = super::service_with_plugins(args.data, args.config.as_ref())?;
    let progress = Progress::start("export", Unit::Items);
    let (sink, counts) = transfer::write_export(
        &service,
        &Principal::operator(),
        &args.namespaces,
        args.versions,
        &recipients,
        out.open("export")?,
        &|n| progress.set(n, 0),
    )?;
    sink.commit()?;
    let (namespaces, memories, versions) = counts;
    progress.finish(&format!(
        "{memories} memories{} from {namespaces} namespaces",
        if args.versions {
            format!(" (and {versions} earlier versions)")
        } else {
            String::new()
        }
    ));
    eprintln!(
        "wrote {}: age-encrypted to {} recipient(s); read it with `age -d -i KEY FILE | gunzip`",
        out.name(),
        recipients.len(),
    );
    Ok(0)
}

/// Counts bytes read, for progress.
struct Counted<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Import a file.
pub(crate) fn import(args: ImportArgs) -> anyhow::Result<i32> {
    let source = super::output::input_name(&args.file);
    let (raw, size): (Box<dyn Read>, u64) = if args.file.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), size)
    };
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut input = BufReader::with_capacity(
        1 << 20,
        Counted {
            inner: raw,
            read: read.clone(),
        },
    );
    let service = super::service_with_plugins(args.data, args.config.as_ref())?;
    let input: Box<dyn Read> = if age_file::is_age(input.fill_buf()?) {
        let Some(path) = &args.identity else {
            bail!(
                "{source} is age-encrypted: give the identity that opens it with --identity FILE"
            );
        };
        Box::new(Identities::from_file(path)?.decrypt(input)?)
    } else {
        Box::new(input)
    };
    let entries = transfer::read_entries(input, args.format)
        .with_context(|| format!("{source}: nothing was imported"))?;
    let plan = ImportPlan {
        into: args.namespace,
        map: args.namespace_map.into_iter().collect::<BTreeMap<_, _>>(),
        on_conflict: args.on_conflict,
    };
    let progress = Progress::start("import", Unit::Bytes);
    let report = transfer::import(&service, &Principal::operator(), entries, &plan, &|_| {
        progress.set(read.load(std::sync::atomic::Ordering::Relaxed), size)
    });
    progress.finish(&format!(
        "{} memories read: {}",
        report.seen(),
        report.summary()
    ));
    if !report.namespaces_created.is_empty() {
        eprintln!(
            "created namespaces: {}",
            report.namespaces_created.join(", ")
        );
    }
    for note in &report.unmapped {
        eprintln!("not imported: {note}");
    }
    for e in &report.errors {
        eprintln!("refused: {e}");
    }
    if report.failed as usize > report.errors.len() {
        eprintln!(
            "… and {} more refused",
            report.failed as usize - report.errors.len()
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(why) = &report.stopped {
        eprintln!("import stopped: {why}; what came before it was imported");
        return Ok(1);
    }
    Ok(if report.failed > 0 { 1 } else { 0 })
}
