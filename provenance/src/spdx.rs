//! SPDX 2.3 JSON documents: for a component archive, every regular file (its path relative to the archive
//! root, written `./path` as SPDX 8.1 asks, with SHA1 and SHA256 checksums; SPDX 2.3 makes SHA1 mandatory
//! for files) in a package for the archive, the source and each dependency as packages; for an image, the
//! image, its base images, its layers and its operating-system packages (read from a dpkg or apk database)
//! as packages. And the check that an archive still matches its document, entry for entry.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::statement::{sha256_hex, DigestError};

pub const SPDX_VERSION: &str = "SPDX-2.3";
pub const DATA_LICENSE: &str = "CC0-1.0";
pub const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
/// Where a package may be downloaded from, when the document does not say (SPDX 7.7).
pub const NOASSERTION: &str = "NOASSERTION";
/// The SPDX id of the package a document describes: the component archive or the image.
pub const ARTIFACT_ID: &str = "SPDXRef-Package-artifact";
pub const SOURCE_ID: &str = "SPDXRef-Package-source";

/// An SPDX 2.3 document, as its JSON serialization names the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<Package>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationships: Vec<Relationship>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    /// `YYYY-MM-DDThh:mm:ssZ` (SPDX 6.9).
    pub created: String,
    /// `Tool: name-version`, `Organization: ...`, `Person: ...`.
    pub creators: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub name: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_file_name: Option<String>,
    pub download_location: String,
    /// Whether the document lists the package's files (SPDX 7.8; true when absent).
    #[serde(default = "yes")]
    pub files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_verification_code: Option<PackageVerificationCode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageVerificationCode {
    pub package_verification_code_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// `./` and the path relative to the archive root.
    pub file_name: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub checksums: Vec<Checksum>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// `SHA1`, `SHA256`, ...
    pub algorithm: String,
    /// Lowercase hex.
    pub checksum_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

impl Relationship {
    fn new(from: &str, kind: &str, to: &str) -> Self {
        Self {
            spdx_element_id: from.to_owned(),
            relationship_type: kind.to_owned(),
            related_spdx_element: to.to_owned(),
        }
    }
}

impl Document {
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a document always serializes")
    }

    /// The package the document describes (the `DESCRIBES` relationship from the document).
    pub fn described_package(&self) -> Option<&Package> {
        let id = self
            .relationships
            .iter()
            .find(|relationship| {
                relationship.spdx_element_id == DOCUMENT_ID && relationship.relationship_type == "DESCRIBES"
            })?
            .related_spdx_element
            .as_str();
        self.packages.iter().find(|package| package.spdx_id == id)
    }

    /// The packages the described package has the relationship `kind` with (`DEPENDS_ON`, `GENERATED_FROM`,
    /// `DESCENDANT_OF`, `CONTAINS`), in document order.
    pub fn related_packages<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Package> + 'a {
        let from = self.described_package().map(|package| package.spdx_id.clone()).unwrap_or_default();
        self.relationships
            .iter()
            .filter(move |relationship| relationship.spdx_element_id == from && relationship.relationship_type == kind)
            .filter_map(|relationship| {
                self.packages.iter().find(|package| package.spdx_id == relationship.related_spdx_element)
            })
    }
}

impl Package {
    fn new(spdx_id: String, name: String) -> Self {
        Self {
            name,
            spdx_id,
            version_info: None,
            package_file_name: None,
            download_location: NOASSERTION.to_owned(),
            files_analyzed: false,
            package_verification_code: None,
            checksums: Vec::new(),
            primary_package_purpose: None,
            external_refs: Vec::new(),
            comment: None,
        }
    }

    /// The lowercase hex of the package's SHA256 checksum, if it has one.
    pub fn sha256(&self) -> Option<&str> {
        checksum(&self.checksums, "SHA256")
    }
}

impl File {
    /// The path relative to the archive root, without `./`.
    pub fn path(&self) -> &str {
        self.file_name.trim_start_matches("./")
    }

    pub fn sha256(&self) -> Option<&str> {
        checksum(&self.checksums, "SHA256")
    }

    pub fn sha1(&self) -> Option<&str> {
        checksum(&self.checksums, "SHA1")
    }
}

fn checksum<'a>(checksums: &'a [Checksum], algorithm: &str) -> Option<&'a str> {
    checksums.iter().find(|checksum| checksum.algorithm == algorithm).map(|checksum| checksum.checksum_value.as_str())
}

fn sha256_checksum(hex: String) -> Checksum {
    Checksum { algorithm: "SHA256".to_owned(), checksum_value: hex }
}

/// SPDX's timestamp form: `YYYY-MM-DDThh:mm:ssZ`, in UTC, whole seconds.
pub fn spdx_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

// ---------------------------------------------------------------------------------------------------------
// The files of an archive.

/// The digests of one file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigests {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Hashes what passes through it (read from `inner`, or written to it): SHA1 and SHA256, as an SBOM's file
/// entry needs. Wrap a tar entry in one while packing it to get its digests without reading it twice.
pub struct FileHasher<T> {
    inner: T,
    sha1: Sha1,
    sha256: Sha256,
    size: u64,
}

impl<T> FileHasher<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, sha1: Sha1::new(), sha256: Sha256::new(), size: 0 }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.size += bytes.len() as u64;
    }

    pub fn finish(self) -> FileDigests {
        FileDigests { sha1: self.sha1.finalize().into(), sha256: self.sha256.finalize().into(), size: self.size }
    }
}

impl<R: Read> Read for FileHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.update(&buf[..read]);
        Ok(read)
    }
}

impl<W: Write> Write for FileHasher<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes files on a thread of its own, so that packing (tar and gzip on one core) does not wait for the
/// hashes: [`BackgroundHasher::file`] wraps each entry's reader in one that hands a copy of every chunk
/// read to that thread, and [`BackgroundHasher::finish`] returns the files. Memory stays bounded: the
/// thread is at most [`BackgroundHasher::QUEUE`] chunks behind, after which reads wait for it.
pub struct BackgroundHasher {
    sender: Option<std::sync::mpsc::SyncSender<HashWork>>,
    /// Chunks the thread has hashed, to be filled again (fresh 256 KiB allocations cost page faults).
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<Result<ArchiveFiles, ArchiveError>>>,
}

enum HashWork {
    Start(String),
    Bytes(Vec<u8>),
    End,
    Link { path: String, target: String },
    Remove(String),
}

impl Default for BackgroundHasher {
    fn default() -> Self {
        Self::spawn()
    }
}

impl BackgroundHasher {
    /// How many chunks the hashing thread may be behind.
    pub const QUEUE: usize = 16;
    /// Bytes handed to the thread at once (a tar builder reads 8 KiB at a time).
    pub const CHUNK: usize = 256 * 1024;

    pub fn spawn() -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<HashWork>(Self::QUEUE);
        let (recycle, recycled) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::QUEUE + 2);
        let thread = std::thread::Builder::new()
            .name("sbom-hasher".to_owned())
            .spawn(move || {
                let mut files = ArchiveFiles::new();
                let mut current: Option<(String, FileHasher<std::io::Sink>)> = None;
                for work in receiver {
                    match work {
                        HashWork::Start(path) => current = Some((path, FileHasher::new(std::io::sink()))),
                        HashWork::Bytes(mut bytes) => {
                            if let Some((_, hasher)) = current.as_mut() {
                                hasher.update(&bytes);
                            }
                            bytes.clear();
                            let _ = recycle.try_send(bytes);
                        }
                        HashWork::End => {
                            if let Some((path, hasher)) = current.take() {
                                files.insert(&path, hasher.finish())?;
                            }
                        }
                        HashWork::Link { path, target } => {
                            let digests = clean_path(&target)?
                                .and_then(|clean| files.files.get(&clean).copied())
                                .ok_or_else(|| ArchiveError::Link { path: path.clone(), target: target.clone() })?;
                            files.insert(&path, digests)?;
                        }
                        HashWork::Remove(path) => files.remove(&path)?,
                    }
                }
                Ok(files)
            })
            .expect("a thread starts");
        Self { sender: Some(sender), recycled, thread: Some(thread) }
    }

    fn send(&self, work: HashWork) {
        // A send fails only when the thread stopped on an error, which `finish` returns.
        if let Some(sender) = &self.sender {
            let _ = sender.send(work);
        }
    }

    /// The regular file at `path` whose contents `reader` reads: read the returned reader to its end (as
    /// `tar::Builder::append_data` does) and drop it.
    pub fn file<R: Read>(&self, path: &str, reader: R) -> HashedReader<'_, R> {
        self.send(HashWork::Start(path.to_owned()));
        HashedReader { inner: reader, hasher: self, pending: Vec::new() }
    }

    /// A hard link at `path` to the regular file `target` (added before).
    pub fn link(&self, path: &str, target: &str) {
        self.send(HashWork::Link { path: path.to_owned(), target: target.to_owned() });
    }

    /// Something other than a regular file at `path` (a later entry replaces an earlier file).
    pub fn other(&self, path: &str) {
        self.send(HashWork::Remove(path.to_owned()));
    }

    /// Waits for the thread to hash what it was given; the files.
    pub fn finish(mut self) -> Result<ArchiveFiles, ArchiveError> {
        self.sender.take();
        self.thread.take().expect("finished once").join().expect("the hashing thread does not panic")
    }
}

impl Drop for BackgroundHasher {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A reader whose bytes [`BackgroundHasher`] hashes.
pub struct HashedReader<'a, R> {
    inner: R,
    hasher: &'a BackgroundHasher,
    pending: Vec<u8>,
}

impl<R: Read> Read for HashedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        if self.pending.capacity() == 0 {
            self.pending = self.hasher.recycled.try_recv().unwrap_or_default();
            self.pending.reserve_exact(BackgroundHasher::CHUNK);
        }
        self.pending.extend_from_slice(&buf[..read]);
        if self.pending.len() >= BackgroundHasher::CHUNK {
            self.hasher.send(HashWork::Bytes(std::mem::take(&mut self.pending)));
        }
        Ok(read)
    }
}

impl<R> Drop for HashedReader<'_, R> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.hasher.send(HashWork::Bytes(std::mem::take(&mut self.pending)));
        }
        self.hasher.send(HashWork::End);
    }
}

/// Why an archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("the archive's entry {0:?} leaves the archive root")]
    Path(String),
    #[error("the archive's hard link {path:?} names {target:?}, which is no regular file before it")]
    Link { path: String, target: String },
}

/// The regular files of an archive, by path relative to its root (`bin/tool`: no `./`, no `.` or empty
/// components), in byte order of their paths. A hard link counts as the regular file it makes when
/// extracted; an entry that appears twice counts as its last appearance, as an extractor leaves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveFiles {
    files: BTreeMap<String, FileDigests>,
}

/// What reading a whole `.tar.gz` found.
#[derive(Debug, Clone)]
pub struct ReadArchive {
    pub files: ArchiveFiles,
    /// Lowercase hex SHA-256 of the compressed archive, as read.
    pub archive_sha256: String,
    pub archive_size: u64,
}

/// The clean relative form of an entry's path: `None` for the root itself, an error if it is absolute or
/// climbs with `..`.
pub fn clean_path(raw: &str) -> Result<Option<String>, ArchiveError> {
    if raw.starts_with('/') {
        return Err(ArchiveError::Path(raw.to_owned()));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ArchiveError::Path(raw.to_owned())),
            part => parts.push(part),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

impl ArchiveFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the regular file at `path` (any form [`clean_path`] takes), replacing an earlier one.
    pub fn insert(&mut self, path: &str, digests: FileDigests) -> Result<(), ArchiveError> {
        if let Some(path) = clean_path(path)? {
            self.files.insert(path, digests);
        }
        Ok(())
    }

    /// Forgets `path` (a later entry there is no regular file).
    pub fn remove(&mut self, path: &str) -> Result<(), ArchiveError> {
        if let Some(path) = clean_path(path)? {
            self.files.remove(&path);
        }
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&FileDigests> {
        self.files.get(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The files in byte order of their paths.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FileDigests)> {
        self.files.iter().map(|(path, digests)| (path.as_str(), digests))
    }

    /// Reads an uncompressed tar.
    pub fn from_tar(reader: impl Read) -> Result<Self, ArchiveError> {
        let mut files = Self::new();
        let mut archive = tar::Archive::new(reader);
        let mut buffer = vec![0; 128 * 1024];
        for entry in archive.entries()? {
            files.add_entry(&mut entry?, &mut buffer)?;
        }
        Ok(files)
    }

    /// Reads a gzip-compressed tar to its end, hashing the compressed bytes as well.
    pub fn from_tar_gz(reader: impl Read) -> Result<ReadArchive, ArchiveError> {
        let mut counted = Counted { inner: reader, sha256: Sha256::new(), size: 0 };
        let files = {
            let mut gzip = flate2::read::MultiGzDecoder::new(&mut counted);
            let files = Self::from_tar(&mut gzip)?;
            // What follows the tar's end (its zero blocks, padding): decompressed to the end so that the whole
            // object is hashed and a corrupt gzip trailer is an error.
            std::io::copy(&mut gzip, &mut std::io::sink())?;
            files
        };
        std::io::copy(&mut counted, &mut std::io::sink())?;
        Ok(ReadArchive { files, archive_sha256: hex::encode(counted.sha256.finalize()), archive_size: counted.size })
    }

    /// Adds one entry of a tar being read.
    pub fn add_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, buffer: &mut [u8]) -> Result<(), ArchiveError> {
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut hasher = FileHasher::new(std::io::sink());
                loop {
                    let read = match entry.read(buffer) {
                        Ok(0) => break,
                        Ok(read) => read,
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(err.into()),
                    };
                    hasher.update(&buffer[..read]);
                }
                self.insert(&path, hasher.finish())
            }
            tar::EntryType::Link => {
                let target =
                    entry.link_name_bytes().map(|name| String::from_utf8_lossy(&name).into_owned()).unwrap_or_default();
                let digests = clean_path(&target)?
                    .and_then(|clean| self.files.get(&clean).copied())
                    .ok_or_else(|| ArchiveError::Link { path: path.clone(), target: target.clone() })?;
                self.insert(&path, digests)
            }
            _ => self.remove(&path),
        }
    }

    /// SPDX's package verification code (7.9): the SHA1 of the files' SHA1s in lowercase hex, sorted and
    /// concatenated.
    pub fn verification_code(&self) -> String {
        let mut sha1s: Vec<String> = self.files.values().map(|digests| hex::encode(digests.sha1)).collect();
        sha1s.sort_unstable();
        let mut hasher = Sha1::new();
        for sha1 in &sha1s {
            hasher.update(sha1.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// The SPDX file entries, `SPDXRef-File-<n>` numbered from 1 in path order.
    fn spdx_files(&self) -> Vec<File> {
        self.files
            .iter()
            .enumerate()
            .map(|(index, (path, digests))| File {
                file_name: format!("./{path}"),
                spdx_id: format!("SPDXRef-File-{}", index + 1),
                checksums: vec![
                    Checksum { algorithm: "SHA1".to_owned(), checksum_value: hex::encode(digests.sha1) },
                    sha256_checksum(hex::encode(digests.sha256)),
                ],
            })
            .collect()
    }
}

struct Counted<R> {
    inner: R,
    sha256: Sha256,
    size: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.sha256.update(&buf[..read]);
        self.size += read as u64;
        Ok(read)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Documents.

/// A git source: the URL and the commit checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub url: String,
    pub commit: String,
}

/// A component archive a build used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDependency {
    pub component: String,
    pub version: String,
    pub architecture: Option<String>,
    /// `sha256:<hex>` or `<hex>` of the archive.
    pub digest: String,
}

/// An image by reference (`registry/repository:tag`, `busybox:latest`) and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub reference: String,
    /// `sha256:<hex>` or `<hex>`.
    pub digest: String,
}

/// A layer of an image, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// What every document says about itself.
#[derive(Debug, Clone)]
pub struct DocumentInfo {
    /// A URI unique to this document (SPDX 6.5), e.g. the gateway's `.../builds/<buildId>/sbom`.
    pub namespace: String,
    /// When the build finished: the document of a build does not change when it is made again.
    pub created: OffsetDateTime,
    /// `Tool: <this>` in `creators`, e.g. `artifacts-build-component-0.1.0`.
    pub tool: String,
}

/// The SBOM of a component build, see [`ComponentSbom::document`].
#[derive(Debug, Clone)]
pub struct ComponentSbom {
    pub component: String,
    pub version: String,
    pub architecture: String,
    /// The archive's name, e.g. `hello-1.0.0-amd64.tar.gz`.
    pub archive_name: String,
    /// `sha256:<hex>` or `<hex>` of the archive.
    pub archive_digest: String,
    pub source: Option<GitSource>,
    pub dependencies: Vec<ArchiveDependency>,
    /// The image the build ran in.
    pub builder_image: Option<ImageReference>,
    pub info: DocumentInfo,
}

impl ComponentSbom {
    /// The document: the archive as the described package containing every file of `files`, the source
    /// it was `GENERATED_FROM`, each dependency it `DEPENDS_ON`, the builder image as its `BUILD_TOOL_OF`.
    pub fn document(&self, files: &ArchiveFiles) -> Result<Document, DigestError> {
        let mut artifact = Package::new(ARTIFACT_ID.to_owned(), self.component.clone());
        artifact.version_info = Some(self.version.clone());
        artifact.package_file_name = Some(self.archive_name.clone());
        artifact.files_analyzed = true;
        artifact.package_verification_code =
            Some(PackageVerificationCode { package_verification_code_value: files.verification_code() });
        artifact.checksums = vec![sha256_checksum(sha256_hex(&self.archive_digest)?)];
        artifact.primary_package_purpose = Some("ARCHIVE".to_owned());
        artifact.comment = Some(format!("architecture {}", self.architecture));

        let mut packages = vec![artifact];
        let mut relationships = vec![Relationship::new(DOCUMENT_ID, "DESCRIBES", ARTIFACT_ID)];
        if let Some(source) = &self.source {
            packages.push(source_package(source));
            relationships.push(Relationship::new(ARTIFACT_ID, "GENERATED_FROM", SOURCE_ID));
        }
        for (index, dependency) in self.dependencies.iter().enumerate() {
            let id = format!("SPDXRef-Package-dependency-{}", index + 1);
            let mut package = Package::new(id.clone(), dependency.component.clone());
            package.version_info = Some(dependency.version.clone());
            package.checksums = vec![sha256_checksum(sha256_hex(&dependency.digest)?)];
            package.primary_package_purpose = Some("ARCHIVE".to_owned());
            package.comment =
                dependency.architecture.as_ref().map(|architecture| format!("architecture {architecture}"));
            packages.push(package);
            relationships.push(Relationship::new(ARTIFACT_ID, "DEPENDS_ON", &id));
        }
        if let Some(builder) = &self.builder_image {
            let id = "SPDXRef-Package-builder-image";
            packages.push(image_package(id, builder)?);
            relationships.push(Relationship::new(id, "BUILD_TOOL_OF", ARTIFACT_ID));
        }
        let files = files.spdx_files();
        relationships.extend(files.iter().map(|file| Relationship::new(ARTIFACT_ID, "CONTAINS", &file.spdx_id)));
        Ok(Document {
            spdx_version: SPDX_VERSION.to_owned(),
            data_license: DATA_LICENSE.to_owned(),
            spdx_id: DOCUMENT_ID.to_owned(),
            name: format!("{} {} {}", self.component, self.version, self.architecture),
            document_namespace: self.info.namespace.clone(),
            creation_info: creation_info(&self.info),
            packages,
            files,
            relationships,
        })
    }
}

/// The SBOM of an image build, see [`ImageSbom::document`].
#[derive(Debug, Clone)]
pub struct ImageSbom {
    pub component: String,
    /// The branch (tag) the image was built for.
    pub tag: String,
    pub architecture: String,
    /// The image as pushed, e.g. `127.0.0.1:5000/hello:main`, and its manifest digest.
    pub image: ImageReference,
    pub base_images: Vec<ImageReference>,
    pub layers: Vec<Layer>,
    pub os_packages: Vec<OsPackage>,
    pub source: Option<GitSource>,
    pub info: DocumentInfo,
}

impl ImageSbom {
    /// The document: the image as the described package, `DESCENDANT_OF` each base image, `CONTAINS`
    /// each layer and operating-system package, `GENERATED_FROM` its source if any.
    pub fn document(&self) -> Result<Document, DigestError> {
        let mut image = image_package(ARTIFACT_ID, &self.image)?;
        image.name = self.component.clone();
        image.version_info = Some(self.tag.clone());
        image.comment = Some(format!("architecture {}", self.architecture));
        let mut packages = vec![image];
        let mut relationships = vec![Relationship::new(DOCUMENT_ID, "DESCRIBES", ARTIFACT_ID)];
        if let Some(source) = &self.source {
            packages.push(source_package(source));
            relationships.push(Relationship::new(ARTIFACT_ID, "GENERATED_FROM", SOURCE_ID));
        }
        for (index, base) in self.base_images.iter().enumerate() {
            let id = format!("SPDXRef-Package-base-image-{}", index + 1);
            packages.push(image_package(&id, base)?);
            relationships.push(Relationship::new(ARTIFACT_ID, "DESCENDANT_OF", &id));
        }
        for (index, layer) in self.layers.iter().enumerate() {
            let id = format!("SPDXRef-Package-layer-{}", index + 1);
            let hex = sha256_hex(&layer.digest)?;
            let mut package = Package::new(id.clone(), format!("sha256:{hex}"));
            package.checksums = vec![sha256_checksum(hex)];
            package.primary_package_purpose = Some("ARCHIVE".to_owned());
            package.comment =
                Some(format!("layer {} of the image, {} bytes, {}", index + 1, layer.size, layer.media_type));
            packages.push(package);
            relationships.push(Relationship::new(ARTIFACT_ID, "CONTAINS", &id));
        }
        for (index, os_package) in self.os_packages.iter().enumerate() {
            let id = format!("SPDXRef-Package-os-{}", index + 1);
            let mut package = Package::new(id.clone(), os_package.name.clone());
            package.version_info = Some(os_package.version.clone());
            package.external_refs = vec![ExternalRef {
                reference_category: "PACKAGE-MANAGER".to_owned(),
                reference_type: "purl".to_owned(),
                reference_locator: os_package.purl(),
            }];
            packages.push(package);
            relationships.push(Relationship::new(ARTIFACT_ID, "CONTAINS", &id));
        }
        Ok(Document {
            spdx_version: SPDX_VERSION.to_owned(),
            data_license: DATA_LICENSE.to_owned(),
            spdx_id: DOCUMENT_ID.to_owned(),
            name: format!("{} {} {}", self.component, self.tag, self.architecture),
            document_namespace: self.info.namespace.clone(),
            creation_info: creation_info(&self.info),
            packages,
            files: Vec::new(),
            relationships,
        })
    }
}

fn creation_info(info: &DocumentInfo) -> CreationInfo {
    CreationInfo { created: spdx_timestamp(info.created), creators: vec![format!("Tool: {}", info.tool)] }
}

fn source_package(source: &GitSource) -> Package {
    let mut package = Package::new(SOURCE_ID.to_owned(), source.url.clone());
    package.version_info = Some(source.commit.clone());
    // SPDX 7.7's VCS form: <vcs_tool>+<transport>://<host>/<path>@<revision>. A repository on the build
    // host's disk (`file://`, a path) has no host and is no download location anyone else can use.
    let url = source.url.strip_prefix("git+").unwrap_or(&source.url);
    let networked = ["https://", "http://", "ssh://", "git://"].iter().any(|scheme| url.starts_with(scheme));
    package.download_location = if networked { format!("git+{url}@{}", source.commit) } else { NOASSERTION.to_owned() };
    package.primary_package_purpose = Some("SOURCE".to_owned());
    package
}

fn image_package(id: &str, image: &ImageReference) -> Result<Package, DigestError> {
    let hex = sha256_hex(&image.digest)?;
    let mut package = Package::new(id.to_owned(), image.reference.clone());
    package.version_info = Some(format!("sha256:{hex}"));
    package.primary_package_purpose = Some("CONTAINER".to_owned());
    package.external_refs = vec![ExternalRef {
        reference_category: "PACKAGE-MANAGER".to_owned(),
        reference_type: "purl".to_owned(),
        reference_locator: oci_purl(&image.reference, &hex),
    }];
    package.checksums = vec![sha256_checksum(hex)];
    Ok(package)
}

/// `pkg:oci/<name>@sha256%3A<hex>?repository_url=<repository>[&tag=<tag>]`.
fn oci_purl(reference: &str, hex: &str) -> String {
    let reference = reference.split('@').next().unwrap_or(reference);
    let last_slash = reference.rfind('/').map_or(0, |at| at + 1);
    let (repository, tag) = match reference[last_slash..].rfind(':') {
        Some(colon) => (&reference[..last_slash + colon], Some(&reference[last_slash + colon + 1..])),
        None => (reference, None),
    };
    let name = repository.rsplit('/').next().unwrap_or(repository).to_ascii_lowercase();
    let mut purl = format!("pkg:oci/{}@sha256%3A{hex}?repository_url={}", encode_purl(&name), encode_purl(repository));
    if let Some(tag) = tag {
        purl.push_str("&tag=");
        purl.push_str(&encode_purl(tag));
    }
    purl
}

/// Percent-encodes all but the unreserved characters and `/` (for a repository URL's path).
fn encode_purl(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b".-_~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Operating-system packages.

/// The package manager whose database listed a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    /// `/var/lib/dpkg/status`.
    Dpkg,
    /// `/lib/apk/db/installed`.
    Apk,
}

/// An installed operating-system package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsPackage {
    pub manager: PackageManager,
    pub name: String,
    pub version: String,
    pub architecture: Option<String>,
    /// The distribution's id (`ID` of `/etc/os-release`: `debian`, `ubuntu`, `alpine`), for the purl's
    /// namespace.
    pub distro: Option<String>,
}

impl OsPackage {
    /// `pkg:deb/<distro>/<name>@<version>?arch=<arch>` or `pkg:apk/<distro>/...`.
    pub fn purl(&self) -> String {
        let kind = match self.manager {
            PackageManager::Dpkg => "deb",
            PackageManager::Apk => "apk",
        };
        let distro = self.distro.clone().unwrap_or_else(|| match self.manager {
            PackageManager::Dpkg => "debian".to_owned(),
            PackageManager::Apk => "alpine".to_owned(),
        });
        let mut purl = format!(
            "pkg:{kind}/{}/{}@{}",
            encode_purl(&distro.to_ascii_lowercase()),
            encode_purl(&self.name),
            encode_purl(&self.version).replace('/', "%2F")
        );
        if let Some(architecture) = &self.architecture {
            purl.push_str("?arch=");
            purl.push_str(&encode_purl(architecture));
        }
        purl
    }
}

/// The installed packages of a dpkg status file (`/var/lib/dpkg/status`): stanzas whose `Status` ends in
/// `installed`, in file order.
pub fn parse_dpkg_status(text: &str, distro: Option<&str>) -> Vec<OsPackage> {
    let mut packages = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                fields.insert(name.trim(), value.trim());
            }
        }
        let installed =
            fields.get("Status").is_some_and(|status| status.split_whitespace().last() == Some("installed"));
        if let (true, Some(name), Some(version)) = (installed, fields.get("Package"), fields.get("Version")) {
            packages.push(OsPackage {
                manager: PackageManager::Dpkg,
                name: (*name).to_owned(),
                version: (*version).to_owned(),
                architecture: fields.get("Architecture").map(|arch| (*arch).to_owned()),
                distro: distro.map(str::to_owned),
            });
        }
    }
    packages
}

/// The packages of an apk database (`/lib/apk/db/installed`): records of `P:` name, `V:` version, `A:`
/// architecture lines separated by blank lines, in file order.
pub fn parse_apk_installed(text: &str, distro: Option<&str>) -> Vec<OsPackage> {
    let mut packages = Vec::new();
    for record in text.split("\n\n") {
        let (mut name, mut version, mut architecture) = (None, None, None);
        for line in record.lines() {
            match line.split_once(':') {
                Some(("P", value)) => name = Some(value.trim()),
                Some(("V", value)) => version = Some(value.trim()),
                Some(("A", value)) => architecture = Some(value.trim()),
                _ => {}
            }
        }
        if let (Some(name), Some(version)) = (name, version) {
            packages.push(OsPackage {
                manager: PackageManager::Apk,
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: architecture.map(str::to_owned),
                distro: distro.map(str::to_owned),
            });
        }
    }
    packages
}

/// `ID` of an `/etc/os-release` text.
pub fn os_release_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("ID="))
        .map(|value| value.trim().trim_matches('"').trim_matches('\'').to_owned())
        .filter(|id| !id.is_empty())
}

// ---------------------------------------------------------------------------------------------------------
// Checking an archive against its document.

/// A file whose contents differ from what the document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    pub path: String,
    /// The document's SHA256 (or `none` when it gives none).
    pub expected_sha256: String,
    pub found_sha256: String,
}

/// How an archive compares with the files of its document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilesCheck {
    /// Paths the document lists that the archive does not have as regular files.
    pub missing: Vec<String>,
    /// Regular files of the archive the document does not list.
    pub unexpected: Vec<String>,
    pub changed: Vec<ChangedFile>,
    /// Files that matched.
    pub matched: usize,
}

impl FilesCheck {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for FilesCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_ok() {
            return write!(f, "all {} files match the SBOM", self.matched);
        }
        let mut parts = Vec::new();
        for changed in &self.changed {
            parts.push(format!(
                "{} changed (SBOM sha256 {}, archive {})",
                changed.path, changed.expected_sha256, changed.found_sha256
            ));
        }
        for path in &self.missing {
            parts.push(format!("{path} is in the SBOM but not in the archive"));
        }
        for path in &self.unexpected {
            parts.push(format!("{path} is in the archive but not in the SBOM"));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// What [`check_archive`] found.
#[derive(Debug, Clone)]
pub struct ArchiveCheck {
    pub files: FilesCheck,
    /// Lowercase hex SHA-256 of the archive as read.
    pub archive_sha256: String,
    /// Whether that is the SHA256 checksum of the document's described package (`None`: it gives none).
    pub archive_digest_matches: Option<bool>,
}

impl ArchiveCheck {
    pub fn is_ok(&self) -> bool {
        self.files.is_ok() && self.archive_digest_matches != Some(false)
    }
}

/// Compares `files` with the document's files: every path in both, with the same SHA256 (and SHA1 where
/// the document has one).
pub fn check_files(document: &Document, files: &ArchiveFiles) -> FilesCheck {
    let mut check = FilesCheck::default();
    let mut listed: BTreeMap<String, &File> = BTreeMap::new();
    for file in &document.files {
        match clean_path(&file.file_name) {
            Ok(Some(path)) => {
                listed.insert(path, file);
            }
            _ => check.missing.push(file.file_name.clone()),
        }
    }
    for (path, file) in &listed {
        let Some(found) = files.get(path) else {
            check.missing.push(path.clone());
            continue;
        };
        let found_sha256 = hex::encode(found.sha256);
        let sha256_matches = file.sha256().is_some_and(|expected| expected.eq_ignore_ascii_case(&found_sha256));
        let sha1_matches = file.sha1().is_none_or(|expected| expected.eq_ignore_ascii_case(&hex::encode(found.sha1)));
        if sha256_matches && sha1_matches {
            check.matched += 1;
        } else {
            check.changed.push(ChangedFile {
                path: path.clone(),
                expected_sha256: file.sha256().unwrap_or("none").to_owned(),
                found_sha256,
            });
        }
    }
    check.unexpected =
        files.iter().map(|(path, _)| path).filter(|path| !listed.contains_key(*path)).map(str::to_owned).collect();
    check
}

/// Reads the `.tar.gz` `archive` whole and compares it with `document`: its files entry for entry
/// ([`check_files`]) and its digest with the described package's SHA256 checksum.
pub fn check_archive(document: &Document, archive: impl Read) -> Result<ArchiveCheck, ArchiveError> {
    let read = ArchiveFiles::from_tar_gz(archive)?;
    let archive_digest_matches = document
        .described_package()
        .and_then(Package::sha256)
        .map(|expected| expected.eq_ignore_ascii_case(&read.archive_sha256));
    Ok(ArchiveCheck {
        files: check_files(document, &read.files),
        archive_sha256: read.archive_sha256,
        archive_digest_matches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn info() -> DocumentInfo {
        DocumentInfo {
            namespace: "http://127.0.0.1:8080/api/v1/builds/b1/sbom".into(),
            created: at("2026-12-07T07:05:32.9+01:00"),
            tool: "artifacts-build-component-0.1.0".into(),
        }
    }

    /// A tar.gz of: a directory, two files, a symlink, a hard link, a file replaced later by a directory.
    fn archive() -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, data).unwrap();
        };
        add("./", tar::EntryType::Directory, b"", None);
        add("bin/", tar::EntryType::Directory, b"", None);
        add("./bin/tool", tar::EntryType::Regular, b"#!/bin/sh\necho hi\n", None);
        add("README", tar::EntryType::Regular, b"hello\n", None);
        add("bin/alias", tar::EntryType::Symlink, b"", Some("tool"));
        add("bin/copy", tar::EntryType::Link, b"", Some("bin/tool"));
        add("gone", tar::EntryType::Regular, b"x", None);
        add("gone", tar::EntryType::Directory, b"", None);
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn regular_files_of_an_archive() {
        let bytes = archive();
        let read = ArchiveFiles::from_tar_gz(&bytes[..]).unwrap();
        assert_eq!(read.archive_sha256, sha(&bytes));
        assert_eq!(read.archive_size, bytes.len() as u64);
        let paths: Vec<_> = read.files.iter().map(|(path, _)| path).collect();
        assert_eq!(paths, ["README", "bin/copy", "bin/tool"]);
        let tool = read.files.get("bin/tool").unwrap();
        assert_eq!(hex::encode(tool.sha256), sha(b"#!/bin/sh\necho hi\n"));
        assert_eq!(hex::encode(tool.sha1), hex::encode(Sha1::digest(b"#!/bin/sh\necho hi\n")));
        assert_eq!(tool.size, 18);
        assert_eq!(read.files.get("bin/copy"), Some(tool));
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        assert_eq!(clean_path("./a//b/./c").unwrap().as_deref(), Some("a/b/c"));
        assert_eq!(clean_path("./").unwrap(), None);
        assert!(matches!(clean_path("/etc/passwd"), Err(ArchiveError::Path(_))));
        assert!(matches!(clean_path("a/../../b"), Err(ArchiveError::Path(_))));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_entry_type(tar::EntryType::Link);
        builder.append_link(&mut header, "a", "nowhere").unwrap();
        let tar = builder.into_inner().unwrap();
        assert!(matches!(ArchiveFiles::from_tar(&tar[..]), Err(ArchiveError::Link { .. })));
    }

    fn component_sbom(digest: &str) -> ComponentSbom {
        ComponentSbom {
            component: "hello".into(),
            version: "1.0.0".into(),
            architecture: "amd64".into(),
            archive_name: "hello-1.0.0-amd64.tar.gz".into(),
            archive_digest: digest.into(),
            source: Some(GitSource { url: "https://example.com/o/hello.git".into(), commit: "c".repeat(40) }),
            dependencies: vec![ArchiveDependency {
                component: "libfoo".into(),
                version: "1.2.0".into(),
                architecture: Some("amd64".into()),
                digest: format!("sha256:{}", "e".repeat(64)),
            }],
            builder_image: Some(ImageReference { reference: "busybox:latest".into(), digest: "d".repeat(64) }),
            info: info(),
        }
    }

    #[test]
    fn component_document() {
        let bytes = archive();
        let read = ArchiveFiles::from_tar_gz(&bytes[..]).unwrap();
        let document = component_sbom(&format!("sha256:{}", read.archive_sha256)).document(&read.files).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&document.to_json()).unwrap();
        assert_eq!(json["spdxVersion"], "SPDX-2.3");
        assert_eq!(json["dataLicense"], "CC0-1.0");
        assert_eq!(json["SPDXID"], "SPDXRef-DOCUMENT");
        assert_eq!(json["creationInfo"]["created"], "2026-12-07T06:05:32Z");
        assert_eq!(json["creationInfo"]["creators"][0], "Tool: artifacts-build-component-0.1.0");
        assert_eq!(
            json["files"][2],
            serde_json::json!({
                "fileName": "./bin/tool",
                "SPDXID": "SPDXRef-File-3",
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": hex::encode(Sha1::digest(b"#!/bin/sh\necho hi\n"))},
                    {"algorithm": "SHA256", "checksumValue": sha(b"#!/bin/sh\necho hi\n")},
                ],
            })
        );
        let artifact = document.described_package().unwrap();
        assert_eq!(artifact.sha256(), Some(read.archive_sha256.as_str()));
        assert!(artifact.files_analyzed);
        assert_eq!(
            json["packages"][0]["packageVerificationCode"]["packageVerificationCodeValue"],
            read.files.verification_code()
        );
        let source: Vec<_> = document.related_packages("GENERATED_FROM").collect();
        assert_eq!(source[0].download_location, format!("git+https://example.com/o/hello.git@{}", "c".repeat(40)));
        assert!(!source[0].files_analyzed);
        assert_eq!(json["packages"][1]["filesAnalyzed"], false);
        let dependencies: Vec<_> = document.related_packages("DEPENDS_ON").collect();
        assert_eq!(dependencies.len(), 1);
        assert_eq!(dependencies[0].name, "libfoo");
        assert_eq!(dependencies[0].sha256(), Some("e".repeat(64).as_str()));
        assert_eq!(document.related_packages("CONTAINS").count(), 0, "files are no packages");
        assert_eq!(
            document.relationships.iter().filter(|relationship| relationship.relationship_type == "CONTAINS").count(),
            3
        );
        assert!(document.relationships.contains(&Relationship::new(
            "SPDXRef-Package-builder-image",
            "BUILD_TOOL_OF",
            ARTIFACT_ID
        )));
        assert_eq!(
            document.packages[3].external_refs[0].reference_locator,
            format!("pkg:oci/busybox@sha256%3A{}?repository_url=busybox&tag=latest", "d".repeat(64))
        );
        assert_eq!(Document::from_json(&document.to_json()).unwrap(), document);

        // The archive matches it entry for entry.
        let check = check_archive(&document, &bytes[..]).unwrap();
        assert!(check.is_ok(), "{}", check.files);
        assert_eq!(check.files.matched, 3);
        assert_eq!(check.archive_digest_matches, Some(true));
    }

    #[test]
    fn a_changed_archive_does_not_match() {
        let bytes = archive();
        let read = ArchiveFiles::from_tar_gz(&bytes[..]).unwrap();
        let document = component_sbom(&read.archive_sha256).document(&read.files).unwrap();

        let mut other = read.files.clone();
        other.insert("README", FileHasher::new(std::io::sink()).finish()).unwrap();
        other.remove("bin/copy").unwrap();
        let mut hasher = FileHasher::new(std::io::sink());
        hasher.write_all(b"new").unwrap();
        other.insert("./extra", hasher.finish()).unwrap();
        let check = check_files(&document, &other);
        assert!(!check.is_ok());
        assert_eq!(check.missing, ["bin/copy"]);
        assert_eq!(check.unexpected, ["extra"]);
        assert_eq!(check.changed.len(), 1);
        assert_eq!(check.changed[0].path, "README");
        assert_eq!(check.changed[0].expected_sha256, sha(b"hello\n"));
        assert_eq!(check.matched, 1);
        let said = check.to_string();
        assert!(
            said.contains("README changed")
                && said.contains("bin/copy is in the SBOM")
                && said.contains("extra is in the archive"),
            "{said}"
        );

        // Another archive's document: the digest differs too.
        let mut document = document;
        document.packages[0].checksums[0].checksum_value = "0".repeat(64);
        let check = check_archive(&document, &bytes[..]).unwrap();
        assert!(check.files.is_ok());
        assert_eq!(check.archive_digest_matches, Some(false));
        assert!(!check.is_ok());
    }

    #[test]
    fn a_byte_changed_in_a_file_is_found() {
        let bytes = archive();
        let read = ArchiveFiles::from_tar_gz(&bytes[..]).unwrap();
        let document = component_sbom(&read.archive_sha256).document(&read.files).unwrap();
        // Decompress, change a byte of README's contents, compress again.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut tar).unwrap();
        let at = tar.windows(6).position(|window| window == b"hello\n").unwrap();
        tar[at] = b'j';
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).unwrap();
        let changed = gzip.finish().unwrap();
        let check = check_archive(&document, &changed[..]).unwrap();
        assert_eq!(check.files.changed.len(), 1);
        assert_eq!(check.files.changed[0].found_sha256, sha(b"jello\n"));
        assert_eq!(check.archive_digest_matches, Some(false));
        // A truncated archive is an error, not a match.
        assert!(check_archive(&document, &bytes[..bytes.len() - 10]).is_err());
    }

    #[test]
    fn hashing_while_packing_gives_what_reading_gives() {
        let files: [(&str, &[u8]); 2] = [("a/one", b"1"), ("two", b"22")];
        let mut listed = ArchiveFiles::new();
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            let mut hashing = FileHasher::new(data);
            builder.append_data(&mut header, path, &mut hashing).unwrap();
            listed.insert(path, hashing.finish()).unwrap();
        }
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        assert_eq!(ArchiveFiles::from_tar_gz(&bytes[..]).unwrap().files, listed);
    }

    #[test]
    fn hashing_on_a_thread_gives_what_reading_gives() {
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let background = BackgroundHasher::spawn();
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, data) in [("./a/one", &b"1"[..]), ("big", &big[..]), ("empty", b""), ("gone", b"x")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, background.file(path, data)).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        builder.append_link(&mut header, "again", "big").unwrap();
        background.link("again", "big");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder.append_data(&mut header, "gone", &b""[..]).unwrap();
        background.other("gone");
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        let files = background.finish().unwrap();
        assert_eq!(files.iter().map(|(path, _)| path).collect::<Vec<_>>(), ["a/one", "again", "big", "empty"]);
        assert_eq!(ArchiveFiles::from_tar_gz(&bytes[..]).unwrap().files, files);

        let background = BackgroundHasher::spawn();
        background.link("x", "nowhere");
        assert!(matches!(background.finish(), Err(ArchiveError::Link { .. })));
    }

    #[test]
    fn verification_code_follows_spdx_7_9() {
        let mut files = ArchiveFiles::new();
        for (path, data) in [("b", &b"second"[..]), ("a", b"first")] {
            let mut hasher = FileHasher::new(std::io::sink());
            hasher.write_all(data).unwrap();
            files.insert(path, hasher.finish()).unwrap();
        }
        let mut sha1s = [hex::encode(Sha1::digest(b"first")), hex::encode(Sha1::digest(b"second"))];
        sha1s.sort();
        assert_eq!(files.verification_code(), hex::encode(Sha1::digest(sha1s.concat().as_bytes())));
    }

    #[test]
    fn image_document() {
        let sbom = ImageSbom {
            component: "web".into(),
            tag: "main".into(),
            architecture: "arm64".into(),
            image: ImageReference { reference: "127.0.0.1:5000/team/web:main".into(), digest: format!("sha256:{}", "a".repeat(64)) },
            base_images: vec![ImageReference { reference: "busybox:latest".into(), digest: format!("sha256:{}", "b".repeat(64)) }],
            layers: vec![Layer {
                digest: format!("sha256:{}", "1".repeat(64)),
                size: 1234,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }],
            os_packages: parse_dpkg_status(
                "Package: libc6\nStatus: install ok installed\nArchitecture: arm64\nVersion: 2.36-9+deb12u4\nDescription: GNU C\n Library\n\nPackage: removed\nStatus: deinstall ok config-files\nVersion: 1\n",
                os_release_id("PRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\n").as_deref(),
            ),
            source: None,
            info: info(),
        };
        let document = sbom.document().unwrap();
        let image = document.described_package().unwrap();
        assert_eq!(image.name, "web");
        assert_eq!(image.sha256(), Some("a".repeat(64).as_str()));
        assert_eq!(
            image.external_refs[0].reference_locator,
            format!("pkg:oci/web@sha256%3A{}?repository_url=127.0.0.1%3A5000/team/web&tag=main", "a".repeat(64))
        );
        let bases: Vec<_> = document.related_packages("DESCENDANT_OF").collect();
        assert_eq!(bases[0].sha256(), Some("b".repeat(64).as_str()));
        let contained: Vec<_> = document.related_packages("CONTAINS").collect();
        assert_eq!(contained.len(), 2);
        assert_eq!(contained[0].sha256(), Some("1".repeat(64).as_str()));
        assert_eq!(contained[1].name, "libc6");
        assert_eq!(contained[1].external_refs[0].reference_locator, "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=arm64");
        assert!(document.files.is_empty());
    }

    #[test]
    fn apk_database() {
        let packages = parse_apk_installed(
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\nA:x86_64\n",
            Some("alpine"),
        );
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[1].purl(), "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64");
    }
}
