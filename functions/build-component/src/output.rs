//! The artifact: the container's output directory, as Docker streams it (an uncompressed tar whose top
//! directory is the output's own name), rewritten with paths relative to the output directory, gzipped
//! with `flate2`, and put into the object store as it streams. Memory stays bounded whatever the size: the
//! tar is read and written in a blocking task bridged to the async download and upload by a small pipe.

use std::io::Write;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};

use artifacts_store::{Objects, Store};
use tokio_util::io::{StreamReader, SyncIoBridge};

use artifacts_runtime::archive::{self, Limits};
use artifacts_runtime::attempt::BuildFailure;

/// What was stored.
pub struct Stored {
    /// `sha256:<hex>` of the `.tar.gz`.
    pub digest: String,
    pub size: u64,
}

const PIPE_BYTES: usize = 256 * 1024;

pub async fn store(
    download: impl Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + Unpin + 'static,
    store: &Store,
    object: &str,
    limits: Limits,
) -> Result<Stored, BuildFailure> {
    let (pipe_out, pipe_in) = tokio::io::duplex(PIPE_BYTES);
    let source = StreamReader::new(download.map_err(std::io::Error::other));
    let packing = tokio::task::spawn_blocking(move || {
        let mut gzip =
            flate2::write::GzEncoder::new(Counted::new(SyncIoBridge::new(pipe_in)), flate2::Compression::default());
        let entries = {
            let mut builder = tar::Builder::new(&mut gzip);
            let entries = archive::for_each_entry(SyncIoBridge::new(source), limits, 1, |path, entry| {
                let mut header = entry.header().clone();
                builder.append_data(&mut header, path, entry)
            })?;
            builder.finish()?;
            entries
        };
        let mut counted = gzip.finish()?;
        counted.flush()?;
        Ok::<_, archive::ArchiveError>((entries, counted.finish()))
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
    let (_, (digest, size)) = match packed {
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
    Ok(Stored { digest: format!("sha256:{}", hex::encode(digest)), size })
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
