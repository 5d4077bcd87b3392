//! Reading tar archives that come from outside (build contexts, dependencies): every entry is checked
//! before anything uses it. Refused: absolute paths, `..`, links that point outside the archive, hard
//! links, devices and fifos; and archives past the size or entry-count caps.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total size of the entries' contents, uncompressed.
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Limits {
    /// Limits of a Docker build context.
    pub fn for_contexts(build: &crate::configuration::BuildSettings) -> Self {
        Self { max_bytes: build.max_context_bytes, max_entries: 200_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive is refused: {0}")]
    Refused(String),
    #[error("the archive is too large: {0}")]
    TooLarge(String),
    #[error("the archive cannot be read: {0}")]
    Unreadable(#[from] std::io::Error),
}

fn refused(why: String) -> ArchiveError {
    ArchiveError::Refused(why)
}

/// Reads a tar or gzip-compressed tar, calling `visit` with each checked entry and its clean relative
/// path, less its first `strip` components (entries left with no path are skipped). Returns the number of
/// entries.
pub fn for_each_entry(
    reader: impl Read,
    limits: Limits,
    strip: usize,
    mut visit: impl FnMut(&Path, &mut tar::Entry<'_, Box<dyn Read + '_>>) -> std::io::Result<()>,
) -> Result<u64, ArchiveError> {
    let mut buffered = BufReader::with_capacity(128 * 1024, reader);
    let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(buffered)) } else { Box::new(buffered) };
    let mut archive = tar::Archive::new(input);
    let (mut entries, mut bytes) = (0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(ArchiveError::TooLarge(format!("it has more than {} entries", limits.max_entries)));
        }
        bytes = bytes.saturating_add(entry.header().size()?);
        if bytes > limits.max_bytes {
            return Err(ArchiveError::TooLarge(format!("its contents exceed {} bytes", limits.max_bytes)));
        }
        let raw = entry.path()?.into_owned();
        let path: PathBuf = clean_relative(&raw)
            .ok_or_else(|| refused(format!("entry {:?} is absolute or climbs out with '..'", raw.display())))?
            .components()
            .skip(strip)
            .collect();
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink => {
                let target = entry.link_name()?.unwrap_or_default().into_owned();
                if !link_stays_inside(&path, &target) {
                    return Err(refused(format!(
                        "symlink {:?} points outside the archive (to {:?})",
                        path.display(),
                        target.display()
                    )));
                }
            }
            // Extended headers are metadata the tar crate applies itself.
            EntryType::XHeader | EntryType::XGlobalHeader | EntryType::GNULongName | EntryType::GNULongLink => continue,
            other => {
                return Err(refused(format!(
                    "entry {:?} is a {other:?}: only files, directories and symlinks are accepted",
                    path.display()
                )))
            }
        }
        if path.as_os_str().is_empty() {
            continue;
        }
        visit(&path, &mut entry)?;
    }
    Ok(entries)
}

/// `path` without `.` components, or None if it is absolute or has `..`.
pub fn clean_relative(path: &Path) -> Option<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(clean)
}

/// Whether a relative symlink at `link`, pointing at `target`, resolves inside the archive's root.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_entries: 100 };

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(EntryType::Regular);
        // set_path refuses '..'; write the raw name to build hostile archives.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn link(builder: &mut tar::Builder<Vec<u8>>, path: &str, target: &str, kind: EntryType) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        builder.append_link(&mut header, path, target).unwrap();
    }

    fn check(bytes: &[u8]) -> Result<Vec<String>, ArchiveError> {
        let mut seen = Vec::new();
        for_each_entry(bytes, LIMITS, 0, |path, _| {
            seen.push(path.display().to_string());
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn accepts_plain_files_gzip_and_inner_links() {
        let plain = archive(|b| {
            file(b, "./src/main.c", b"int main;");
            link(b, "src/alias.c", "main.c", EntryType::Symlink);
            link(b, "src/up.c", "../src/main.c", EntryType::Symlink);
        });
        assert_eq!(check(&plain).unwrap(), vec!["src/main.c", "src/alias.c", "src/up.c"]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        assert_eq!(check(&gz.finish().unwrap()).unwrap().len(), 3);
    }

    #[test]
    fn refuses_escapes_links_devices_and_bombs() {
        for (name, bytes) in [
            ("dotdot", archive(|b| file(b, "../../etc/passwd", b"x"))),
            ("absolute", archive(|b| file(b, "/etc/passwd", b"x"))),
            ("absolute link", archive(|b| link(b, "passwd", "/etc/passwd", EntryType::Symlink))),
            ("climbing link", archive(|b| link(b, "a/passwd", "../../etc/passwd", EntryType::Symlink))),
            ("hard link", archive(|b| link(b, "h", "x", EntryType::Link))),
            ("device", archive(|b| link(b, "dev", "x", EntryType::Char))),
            ("fifo", archive(|b| link(b, "fifo", "x", EntryType::Fifo))),
            ("too many", archive(|b| (0..101).for_each(|i| file(b, &format!("f{i}"), b"")))),
            ("too big", archive(|b| file(b, "big", &vec![0; (1 << 20) + 1]))),
        ] {
            assert!(
                matches!(check(&bytes), Err(ArchiveError::Refused(_) | ArchiveError::TooLarge(_))),
                "{name} was accepted"
            );
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn clean_paths_never_escape(path in "[a-z./]{0,30}") {
            if let Some(clean) = clean_relative(Path::new(&path)) {
                prop_assert!(clean.is_relative());
                prop_assert!(clean.components().all(|c| matches!(c, Component::Normal(_))));
            } else {
                prop_assert!(path.starts_with('/') || path.split('/').any(|part| part == ".."));
            }
        }

        #[test]
        fn accepted_links_resolve_inside(link in "[a-z]{1,3}(/[a-z]{1,3}){0,3}", target in "(\\.\\./|[a-z]{1,3}/){0,5}[a-z]{1,3}") {
            if link_stays_inside(Path::new(&link), Path::new(&target)) {
                // Resolve lexically from the link's directory: it never rises above the root.
                let mut depth: i64 = Path::new(&link).components().count() as i64 - 1;
                for part in target.split('/') {
                    depth += if part == ".." { -1 } else { 1 };
                    prop_assert!(depth >= 0);
                }
            }
        }
    }
}
