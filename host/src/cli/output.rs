//! Where a command writes its file (`--out FILE`, or `-` for standard
//! output): a hidden temporary file beside FILE, renamed into place only
//! once complete and synced, so an interrupted command never leaves a half
//! file under the name asked for.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What to call a command's input FILE in messages (`-`: standard input).
pub(crate) fn input_name(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "standard input".into()
    } else {
        file.display().to_string()
    }
}

/// The `--out` of a command.
pub(crate) struct Out {
    target: Option<PathBuf>,
    dir: PathBuf,
}

impl Out {
    /// `out` (`-`: standard output), refusing an existing file unless
    /// `force`.
    pub(crate) fn new(out: &Path, force: bool) -> anyhow::Result<Out> {
        if out.as_os_str() == "-" {
            return Ok(Out {
                target: None,
                dir: std::env::current_dir()?,
            });
        }
        if out.exists() && !force {
            bail!(
                "{} exists: choose another --out, or add --force to replace it",
                out.display()
            );
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::env::current_dir()?,
        };
        Ok(Out {
            target: Some(out.to_path_buf()),
            dir,
        })
    }

    /// The directory beside the output: where to stage large temporary
    /// files (same filesystem, not /tmp).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// What to call it in messages.
    pub(crate) fn name(&self) -> String {
        match &self.target {
            Some(t) => t.display().to_string(),
            None => "standard output".into(),
        }
    }

    /// Start writing; [`Sink::commit`] puts it in place.
    pub(crate) fn open(&self, what: &str) -> anyhow::Result<Sink> {
        Ok(match &self.target {
            None => Sink::Stdout(BufWriter::new(std::io::stdout())),
            Some(target) => {
                let file = tempfile::Builder::new()
                    .prefix(&format!(".memhost-{what}-"))
                    .tempfile_in(&self.dir)
                    .with_context(|| format!("cannot write in {}", self.dir.display()))?;
                Sink::File(BufWriter::new(file), target.clone())
            }
        })
    }
}

/// An output being written.
pub(crate) enum Sink {
    /// Standard output.
    Stdout(BufWriter<std::io::Stdout>),
    /// The temporary file, and where it goes.
    File(BufWriter<tempfile::NamedTempFile>, PathBuf),
}

impl Sink {
    /// Flush, sync and rename into place.
    pub(crate) fn commit(self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush(),
            Sink::File(w, target) => {
                let file = w.into_inner().map_err(|e| e.into_error())?;
                file.as_file().sync_all()?;
                file.persist(&target).map_err(|e| e.error)?;
                Ok(())
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(w, _) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w, _) => w.flush(),
        }
    }
}
