//! The artifact: the container's output directory, as Docker streams it (an uncompressed tar whose top
//! directory is the output's own name), rewritten as a reproducible archive, gzipped with `flate2`, and
//! put into the object store as it streams.
//!
//! Reproducible (CONTRACT "Reproducible archives"): the archive is a function of what the build wrote and
//! the source commit, never of when or where it ran. The engine's stream comes in the order of the
//! container's file system with the times the build wrote: each entry is checked and spooled to a
//! temporary file, then written again in byte order of its path, with the commit's time as every
//! modification time, owner and group 0 without names, its permission bits kept and nothing else of the
//! engine's header (no access or change times). flate2 writes a gzip header without a name and with time 0.
//!
//! The SBOM's file list is hashed on the way out, on a thread of its own ([`BackgroundHasher`]). Memory
//! stays bounded whatever the size: the spool is on disk, and the packed stream reaches the async upload
//! through a small pipe.

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use artifacts_provenance::spdx::{ArchiveFiles, BackgroundHasher};
use artifacts_store::{Objects, Store};
use tokio_util::io::{StreamReader, SyncIoBridge};

use artifacts_engine::attempt::BuildFailure;
use artifacts_runtime::archive::{self, Limits};

/// What was stored.
pub struct Stored {
    /// `sha256:<hex>` of the `.tar.gz`.
    pub digest: String,
    pub size: u64,
    /// Every regular file of the archive with its digests, for the SBOM.
    pub files: ArchiveFiles,
}

const PIPE_BYTES: usize = 256 * 1024;

/// Stores the output `download` streams as `object`, every entry's time set to `commit_time` (seconds
/// since the epoch, the source commit's committer time).
pub async fn store(
    download: impl Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + Unpin + 'static,
    store: &Store,
    object: &str,
    limits: Limits,
    commit_time: u64,
) -> Result<Stored, BuildFailure> {
    let (pipe_out, pipe_in) = tokio::io::duplex(PIPE_BYTES);
    let source = StreamReader::new(download.map_err(std::io::Error::other));
    let packing = tokio::task::spawn_blocking(move || {
        let spooled = Spool::read(SyncIoBridge::new(source), limits)?;
        let mut gzip =
            flate2::write::GzEncoder::new(Counted::new(SyncIoBridge::new(pipe_in)), flate2::Compression::default());
        let files = spooled.write(&mut gzip, commit_time)?;
        let mut counted = gzip.finish()?;
        counted.flush()?;
        Ok::<_, archive::ArchiveError>((files, counted.finish()))
    });
    // The upload owns the pipe's reading end, so a failed upload closes it and the packer stops too.
    let upload = async move {
        let mut reader = tokio::io::BufReader::with_capacity(128 * 1024, pipe_out);
        store.put_object(Objects::Archives, object, &mut reader).await
    };
    let (put, packed) = tokio::join!(upload, packing);
    let packed = packed
        .map_err(|err| BuildFailure::Passing(format!("packing the output stopped: {err}")))
        .and_then(|packed| packed.map_err(|err| BuildFailure::Permanent(format!("the output directory: {err}"))));
    let (files, (digest, size)) = match packed {
        Ok(packed) => packed,
        Err(failure) => {
            // The upload saw the pipe close and stored a truncated object: remove it.
            if put.is_ok() {
                let _ = store.remove_object(Objects::Archives, object).await;
            }
            return Err(failure);
        }
    };
    put.map_err(|err| BuildFailure::Unavailable(format!("the object store cannot take the artifact: {err}")))?;
    Ok(Stored { digest: format!("sha256:{}", hex::encode(digest)), size, files })
}

/// The checked entries of the output, their contents in a temporary file.
struct Spool {
    file: std::fs::File,
    entries: Vec<Spooled>,
}

struct Spooled {
    path: PathBuf,
    mode: u32,
    kind: SpooledKind,
}

enum SpooledKind {
    Directory,
    /// Its contents: `size` bytes at `offset` in the spool.
    File {
        offset: u64,
        size: u64,
    },
    Symlink(PathBuf),
}

impl Spool {
    /// Reads and checks the engine's tar of the output directory (its top directory stripped).
    fn read(tar: impl Read, limits: Limits) -> Result<Self, archive::ArchiveError> {
        let mut contents = BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?);
        let mut offset = 0u64;
        let mut entries = Vec::new();
        archive::for_each_entry(tar, limits, 1, |path, entry| {
            let mode = entry.header().mode()? & 0o7777;
            let kind = match entry.header().entry_type() {
                EntryType::Directory => SpooledKind::Directory,
                EntryType::Symlink => SpooledKind::Symlink(entry.link_name()?.unwrap_or_default().into_owned()),
                // `for_each_entry` hands on nothing but files, directories and symlinks.
                _ => {
                    let size = std::io::copy(entry, &mut contents)?;
                    let file = SpooledKind::File { offset, size };
                    offset += size;
                    file
                }
            };
            entries.push(Spooled { path: path.to_owned(), mode, kind });
            Ok(())
        })?;
        // A path the engine sent twice counts as its last appearance, as an extractor leaves it.
        entries.reverse();
        entries.sort_by(|a, b| a.path.as_os_str().as_bytes().cmp(b.path.as_os_str().as_bytes()));
        entries.dedup_by(|duplicate, kept| duplicate.path == kept.path);
        let file = contents.into_inner().map_err(|err| err.into_error())?;
        Ok(Self { file, entries })
    }

    /// Writes the reproducible tar to `out`; the regular files with their digests.
    fn write(self, out: impl Write, commit_time: u64) -> Result<ArchiveFiles, archive::ArchiveError> {
        let Self { file, entries } = self;
        let mut contents = BufReader::with_capacity(256 * 1024, file);
        let hasher = BackgroundHasher::spawn();
        let mut builder = tar::Builder::new(out);
        for Spooled { path, mode, kind } in entries {
            let shown = path.to_string_lossy();
            let mut header = Header::new_gnu();
            header.set_mode(mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(commit_time);
            match kind {
                SpooledKind::Directory => {
                    header.set_entry_type(EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, &path, std::io::empty())?;
                }
                SpooledKind::File { offset, size } => {
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(size);
                    contents.seek(SeekFrom::Start(offset))?;
                    let reader = hasher.file(&shown, (&mut contents).take(size));
                    builder.append_data(&mut header, &path, reader)?;
                }
                SpooledKind::Symlink(target) => {
                    header.set_entry_type(EntryType::Symlink);
                    header.set_size(0);
                    builder.append_link(&mut header, &path, &target)?;
                }
            }
        }
        builder.into_inner()?;
        hasher.finish().map_err(|err| archive::ArchiveError::Refused(err.to_string()))
    }
}

/// A writer that hashes and counts what passes through it.
struct Counted<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Counted<W> {
    fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), size: 0 }
    }

    fn finish(self) -> ([u8; 32], u64) {
        (self.hasher.finalize().into(), self.size)
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
