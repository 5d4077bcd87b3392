//! Reading tar archives that come from outside (build contexts, dependencies): every entry is checked
//! before anything uses it. Refused: absolute paths, `..`, links that resolve outside the archive, hard
//! links, devices and fifos; and archives past the size or entry-count caps.
//!
//! Links are resolved the way an extractor (GNU tar, Python's tarfile) lays them out on disk: through the
//! links stored before them, so a chain of links that each look harmless cannot climb out together.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
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
    let mut layout = Layout::default();
    let (mut entries, mut bytes) = (0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(ArchiveError::TooLarge(format!("it has more than {} entries", limits.max_entries)));
        }
        bytes = bytes.saturating_add(apparent_size(&entry)?);
        if bytes > limits.max_bytes {
            return Err(ArchiveError::TooLarge(format!("its contents exceed {} bytes", limits.max_bytes)));
        }
        let raw = entry.path()?.into_owned();
        let path: PathBuf = clean_relative(&raw)
            .ok_or_else(|| refused(format!("entry {:?} is absolute or climbs out with '..'", raw.display())))?
            .components()
            .skip(strip)
            .collect();
        let kind = match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Directory,
            EntryType::Symlink => Kind::Symlink(entry.link_name()?.unwrap_or_default().into_owned()),
            // Extended headers are metadata the tar crate applies itself.
            EntryType::XHeader | EntryType::XGlobalHeader | EntryType::GNULongName | EntryType::GNULongLink => continue,
            other => {
                return Err(refused(format!(
                    "entry {:?} is a {other:?}: only files, directories and symlinks are accepted",
                    path.display()
                )))
            }
        };
        if path.as_os_str().is_empty() {
            continue;
        }
        layout.add(&path, &kind).map_err(refused)?;
        visit(&path, &mut entry)?;
    }
    Ok(entries)
}

/// The bytes an extractor writes for `entry`: its declared size, the larger of the header's (the real size
/// of a GNU sparse file) and a PAX `size` record's, which overrides the header's and is what the tar crate
/// reads. A sparse file stored whole declares its apparent size, holes included.
pub fn apparent_size<R: Read>(entry: &tar::Entry<'_, R>) -> std::io::Result<u64> {
    Ok(entry.size().max(entry.header().size()?))
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

enum Kind {
    File,
    Directory,
    Symlink(PathBuf),
}

/// Linux stops resolving a path after following this many links (ELOOP); an extractor could not use a
/// longer chain either.
const MAX_LINKS_FOLLOWED: u32 = 40;

const ROOT: usize = 0;

/// What an extractor has on disk after the entries read so far, as a tree of paths. A path is in the tree
/// once anything depended on it: it holds a symlink, or it was a directory something was written in, or
/// a component walked through while resolving an entry or a link. A symlink is only accepted at a path
/// that is not in the tree yet, so a later link never changes where an earlier entry or link went: each
/// link's resolution, taken when it is stored, stays true and is reused as it is.
struct Layout {
    nodes: Vec<Node>,
    children: HashMap<(usize, OsString), usize>,
}

struct Node {
    parent: usize,
    name: OsString,
    link: Option<Link>,
}

struct Link {
    target: PathBuf,
    resolves_to: usize,
    /// Links followed on the way to `resolves_to`, this one included, as the kernel counts them toward ELOOP.
    followed: u32,
}

/// Why a walk through the tree stopped.
enum Stop {
    /// It climbed above the root, after following this link if any.
    Escapes(Option<usize>),
    TooManyLinks,
}

impl Default for Layout {
    fn default() -> Self {
        let root = Node { parent: ROOT, name: OsString::new(), link: None };
        Self { nodes: vec![root], children: HashMap::new() }
    }
}

impl Layout {
    /// Checks the entry at clean, non-empty `path` against what is laid out, then lays it out.
    fn add(&mut self, path: &Path, kind: &Kind) -> Result<(), String> {
        let name = path.file_name().expect("a clean, non-empty path ends with a name");
        let subject = match kind {
            Kind::Symlink(target) => format!("symlink {:?} -> {:?}", path.display(), target.display()),
            Kind::File | Kind::Directory => format!("entry {:?}", path.display()),
        };
        // The extractor writes the entry in its parent directory as the kernel resolves it, links included.
        let parent = self
            .walk(ROOT, path.parent().unwrap_or(Path::new("")), &mut 0)
            .map_err(|stop| format!("{subject} {}", self.explain(stop)))?;
        let existing = self.children.get(&(parent, name.to_owned())).copied();
        match kind {
            // Python's tarfile writes a file through a link already at its path and keeps a link to a
            // directory in place of a directory entry; GNU tar replaces the link instead, which changes where
            // entries already resolved through it went. Refusing both cases covers either extractor.
            Kind::File | Kind::Directory => {
                if let Some(link) = existing.filter(|&node| self.nodes[node].link.is_some()) {
                    return Err(format!("{subject} would be written over the symlink {}", self.describe(link)));
                }
                if matches!(kind, Kind::Directory) {
                    self.child(parent, name);
                }
            }
            Kind::Symlink(target) => {
                if let Some(node) = existing {
                    return Err(match self.nodes[node].link {
                        Some(_) => format!("{subject} replaces the symlink {} stored before it", self.describe(node)),
                        None => format!(
                            "{subject} lands on {:?}, which earlier entries used as a directory or resolved \
                             through: a link there would change where they lead",
                            self.path_of(node).display()
                        ),
                    });
                }
                // Whatever resolves through the link follows it first.
                let mut followed = 1;
                let resolves_to = self
                    .walk(parent, target, &mut followed)
                    .map_err(|stop| format!("{subject} {}", self.explain(stop)))?;
                // Walking the target created the link's own path: the link leads through itself.
                if self.children.contains_key(&(parent, name.to_owned())) {
                    return Err(format!("{subject} leads through itself"));
                }
                let link = Link { target: target.clone(), resolves_to, followed };
                let node = self.child(parent, name);
                self.nodes[node].link = Some(link);
            }
        }
        Ok(())
    }

    /// Resolves `path` from the directory `from` as the kernel would, following every link met (the last
    /// component included), and returns where it ends. Paths walked through join the tree.
    fn walk(&mut self, from: usize, path: &Path, followed: &mut u32) -> Result<usize, Stop> {
        let (mut at, mut last_link) = (from, None);
        for component in path.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir if at == ROOT => return Err(Stop::Escapes(last_link)),
                Component::ParentDir => at = self.nodes[at].parent,
                Component::Normal(name) => {
                    at = self.child(at, name);
                    if let Some(link) = &self.nodes[at].link {
                        *followed += link.followed;
                        if *followed > MAX_LINKS_FOLLOWED {
                            return Err(Stop::TooManyLinks);
                        }
                        last_link = Some(at);
                        at = link.resolves_to;
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(Stop::Escapes(None)),
            }
        }
        Ok(at)
    }

    /// The node for `name` in the directory `parent`, added if new.
    fn child(&mut self, parent: usize, name: &OsStr) -> usize {
        let next = self.nodes.len();
        let node = *self.children.entry((parent, name.to_owned())).or_insert(next);
        if node == next {
            self.nodes.push(Node { parent, name: name.to_owned(), link: None });
        }
        node
    }

    fn path_of(&self, mut node: usize) -> PathBuf {
        let mut names = Vec::new();
        while node != ROOT {
            names.push(&self.nodes[node].name);
            node = self.nodes[node].parent;
        }
        names.into_iter().rev().collect()
    }

    /// `"path" -> "target"` of the link at `node`.
    fn describe(&self, node: usize) -> String {
        let link = self.nodes[node].link.as_ref().expect("only links are described");
        format!("{:?} -> {:?}", self.path_of(node).display(), link.target.display())
    }

    fn explain(&self, stop: Stop) -> String {
        match stop {
            Stop::Escapes(None) => "resolves outside the archive".to_owned(),
            Stop::Escapes(Some(link)) => {
                format!("resolves outside the archive (through {})", self.describe(link))
            }
            Stop::TooManyLinks => format!("resolves through more than {MAX_LINKS_FOLLOWED} symlinks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_entries: 100 };

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

    fn dir(builder: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        header.set_entry_type(EntryType::Directory);
        builder.append_data(&mut header, path, std::io::empty()).unwrap();
    }

    fn link(builder: &mut tar::Builder<Vec<u8>>, path: &str, target: &str, kind: EntryType) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        builder.append_link(&mut header, path, target).unwrap();
    }

    fn symlink(builder: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        link(builder, path, target, EntryType::Symlink);
    }

    fn check_stripped(bytes: &[u8], strip: usize) -> Result<Vec<String>, ArchiveError> {
        let mut seen = Vec::new();
        for_each_entry(bytes, LIMITS, strip, |path, _| {
            seen.push(path.display().to_string());
            Ok(())
        })?;
        Ok(seen)
    }

    fn check(bytes: &[u8]) -> Result<Vec<String>, ArchiveError> {
        check_stripped(bytes, 0)
    }

    /// The reason an archive is refused; panics if it is accepted.
    fn refusal(bytes: &[u8]) -> String {
        match check(bytes) {
            Err(ArchiveError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
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

    /// An entry counts at the size an extractor writes: a PAX `size` record overrides the header's (and
    /// the tar crate reads that many bytes), so an entry declaring 0 in its header is no smaller.
    #[test]
    fn entries_count_at_the_size_they_expand_to() {
        let declared = (LIMITS.max_bytes + 1).to_string();
        let bytes = archive(|b| {
            b.append_pax_extensions([("size", declared.as_bytes())]).unwrap();
            let mut header = tar::Header::new_ustar();
            header.set_path("zeros").unwrap();
            header.set_mode(0o644);
            header.set_entry_type(EntryType::Regular);
            header.set_size(0);
            header.set_cksum();
            b.append(&header, std::io::repeat(0).take(LIMITS.max_bytes + 1)).unwrap();
        });
        let refused = for_each_entry(bytes.as_slice(), LIMITS, 0, |_, _| Ok(()));
        assert!(matches!(refused, Err(ArchiveError::TooLarge(_))), "{refused:?}");
        // A sparse file stored whole declares its apparent size: refused from its header, before its data.
        let mut header = tar::Header::new_gnu();
        header.set_path("sparse").unwrap();
        header.set_entry_type(EntryType::Regular);
        header.set_size(2 << 30);
        header.set_cksum();
        let mut head_only = header.as_bytes().to_vec();
        head_only.resize(4096, 0);
        let refused = for_each_entry(head_only.as_slice(), LIMITS, 0, |_, _| Ok(()));
        assert!(matches!(refused, Err(ArchiveError::TooLarge(_))), "{refused:?}");
    }

    /// The component output that was accepted while `tar -xzf` of what was stored gave `passwd -> /etc/passwd`:
    /// every link climbs one more level than it seems to, through the link before it.
    #[test]
    fn refuses_the_chain_of_links_that_climbs_out() {
        let output = archive(|b| {
            dir(b, "out/");
            dir(b, "out/a/");
            symlink(b, "out/a/b", "..");
            symlink(b, "out/c", "a/b/..");
            symlink(b, "out/e", "c/..");
            symlink(b, "out/g", "e/..");
            symlink(b, "out/h", "g/..");
            symlink(b, "out/passwd", "h/etc/passwd");
        });
        let Err(ArchiveError::Refused(why)) = check_stripped(&output, 1) else { panic!("the chain was accepted") };
        assert_eq!(why, r#"symlink "c" -> "a/b/.." resolves outside the archive (through "a/b" -> "..")"#);

        // Stored last hop first, each link looks inside until the one it goes through comes.
        let reversed = archive(|b| {
            symlink(b, "passwd", "h/etc/passwd");
            symlink(b, "h", "g/..");
            symlink(b, "g", "e/..");
        });
        let why = refusal(&reversed);
        assert!(why.starts_with(r#"symlink "h" -> "g/.." lands on "h""#), "{why}");
    }

    /// A link stored later would change where an earlier one leads: `x -> c/..` is `.` while `c` does not
    /// exist, and `..` once `c -> .` is there.
    #[test]
    fn refuses_links_that_change_what_came_before() {
        let after_use = archive(|b| {
            symlink(b, "x", "c/..");
            symlink(b, "c", ".");
        });
        let why = refusal(&after_use);
        assert!(why.starts_with(r#"symlink "c" -> "." lands on "c", which earlier entries used"#), "{why}");
        for (bytes, reason) in [
            (
                archive(|b| {
                    dir(b, "d/");
                    symlink(b, "d", "e");
                }),
                r#"symlink "d" -> "e" lands on "d""#,
            ),
            (
                archive(|b| {
                    file(b, "d/f", b"");
                    symlink(b, "d", "e");
                }),
                r#"symlink "d" -> "e" lands on "d""#,
            ),
            (
                archive(|b| {
                    symlink(b, "l", "d");
                    symlink(b, "l", "e");
                }),
                r#"symlink "l" -> "e" replaces the symlink "l" -> "d" stored before it"#,
            ),
            (archive(|b| symlink(b, "l", "l/..")), r#"symlink "l" -> "l/.." leads through itself"#),
        ] {
            let why = refusal(&bytes);
            assert!(why.starts_with(reason), "{why}");
        }
        // A file is not something others resolve through: a link may take its place.
        let replaced_file = archive(|b| {
            file(b, "f", b"");
            symlink(b, "f", "g");
        });
        assert!(check(&replaced_file).is_ok());
    }

    #[test]
    fn accepts_links_through_links_that_stay_inside() {
        let bytes = archive(|b| {
            dir(b, "usr/lib/");
            dir(b, "usr/share/");
            symlink(b, "lib", "usr/lib");
            symlink(b, "lib64", "lib");
            // Lands in usr/lib, so `..` is usr.
            symlink(b, "lib/share", "../share");
            symlink(b, "docs", "lib64/../share/doc");
            symlink(b, "top", "lib64/../..");
        });
        assert_eq!(check(&bytes).unwrap().len(), 7);
        let climbing = archive(|b| {
            dir(b, "usr/lib/");
            symlink(b, "lib", "usr/lib");
            symlink(b, "up", "lib/../../..");
        });
        assert_eq!(
            refusal(&climbing),
            r#"symlink "up" -> "lib/../../.." resolves outside the archive (through "lib" -> "usr/lib")"#
        );
    }

    #[test]
    fn files_written_through_links_stay_inside() {
        let inside = archive(|b| {
            dir(b, "d/");
            symlink(b, "l", "d");
            file(b, "l/f", b"x");
            file(b, "l/sub/f", b"x");
            symlink(b, "l/sub/up", "../f");
        });
        assert_eq!(check(&inside).unwrap().len(), 5);
        // The extractor would follow `l` out of the root; the link itself is refused before anything is
        // written through it.
        let outside = archive(|b| {
            symlink(b, "l", "..");
            file(b, "l/passwd", b"x");
        });
        assert_eq!(refusal(&outside), r#"symlink "l" -> ".." resolves outside the archive"#);
        for written_over in [
            archive(|b| {
                symlink(b, "l", "d");
                file(b, "l", b"x");
            }),
            archive(|b| {
                symlink(b, "l", "d");
                dir(b, "l/");
            }),
        ] {
            let why = refusal(&written_over);
            assert!(why.contains(r#"would be written over the symlink "l" -> "d""#), "{why}");
        }
    }

    /// The kernel follows at most 40 links while resolving one path; an extractor cannot go further.
    #[test]
    fn refuses_chains_longer_than_the_kernel_follows() {
        let chain = |links: usize, then: fn(&mut tar::Builder<Vec<u8>>)| {
            archive(|b| {
                dir(b, "d/");
                symlink(b, "l0", "d");
                (1..links).for_each(|i| symlink(b, &format!("l{i}"), &format!("l{}", i - 1)));
                then(b);
            })
        };
        assert!(check(&chain(40, |b| file(b, "l39/f", b""))).is_ok());
        assert_eq!(refusal(&chain(41, |_| {})), r#"symlink "l40" -> "l39" resolves through more than 40 symlinks"#);
        let one_more = chain(40, |b| {
            symlink(b, "d/s", ".");
            file(b, "l39/s/f", b"");
        });
        assert_eq!(refusal(&one_more), r#"entry "l39/s/f" resolves through more than 40 symlinks"#);
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

        /// With no other link to go through, a link is accepted exactly when its target, walked from the
        /// link's directory, neither rises above the root nor passes the link itself.
        #[test]
        fn a_lone_link_is_accepted_when_it_resolves_inside(
            link in "[a-z]{1,3}(/[a-z]{1,3}){0,3}",
            target in "(\\.\\./|[a-z]{1,3}/){0,5}[a-z]{1,3}",
        ) {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &link, &target).unwrap();
            let accepted = for_each_entry(builder.into_inner().unwrap().as_slice(), tests::LIMITS, 0, |_, _| Ok(()));

            let mut at: Vec<&str> = link.split('/').collect();
            at.pop();
            let (mut inside, mut through_itself) = (true, false);
            for part in target.split('/') {
                if part != ".." {
                    at.push(part);
                    through_itself |= at.join("/") == link;
                } else if at.pop().is_none() {
                    inside = false;
                    break;
                }
            }
            prop_assert_eq!(accepted.is_ok(), inside && !through_itself, "{:?}", accepted);
        }
    }
}
