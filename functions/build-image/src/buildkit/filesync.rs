//! The session's `FileSync.DiffCopy`: sends BuildKit a local directory (`context`, `dockerfile`) as the
//! docker CLI does (`tonistiigi/fsutil`'s sender): every entry's stat in walk order, then the contents of
//! the files BuildKit asks for. BuildKit's Dockerfile frontend reads `.dockerignore` itself and passes its
//! patterns as `exclude-patterns`; the paths it needs come as `include-patterns` and `followpaths`. The
//! patterns are matched as Docker's `fileutils.PatternMatcher` and fsutil's walker match them.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bollard_buildkit_proto::fsutil::types::{packet::PacketType, Packet, Stat};
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSync;
use futures::Stream;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

/// The directories a session offers, by the name BuildKit asks for (`dir-name`).
#[derive(Clone)]
pub struct Dirs(pub HashMap<String, PathBuf>);

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

#[tonic::async_trait]
impl FileSync for Dirs {
    type DiffCopyStream = PacketStream;
    type TarStreamStream = PacketStream;

    async fn diff_copy(&self, request: Request<Streaming<Packet>>) -> Result<Response<PacketStream>, Status> {
        let values = |key: &str| -> Vec<String> {
            request.metadata().get_all(key).iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect()
        };
        let name = values("dir-name").into_iter().next().unwrap_or_default();
        let root = self.0.get(&name).cloned().ok_or_else(|| Status::not_found(format!("no directory {name:?}")))?;
        let excludes = values("exclude-patterns");
        let includes = values("include-patterns");
        let follow = values("followpaths");
        let entries =
            tokio::task::spawn_blocking(move || walk(&root, &excludes, &includes, &follow).map(|e| (root, e)))
                .await
                .map_err(|err| Status::internal(err.to_string()))?
                .map_err(Status::invalid_argument)?;
        let (root, entries) = entries;
        let mut incoming = request.into_inner();
        let (sender, receiver) = mpsc::channel::<Result<Packet, Status>>(64);
        tokio::spawn(async move {
            let files: Vec<Option<String>> =
                entries.iter().map(|stat| (stat.mode & MODE_TYPE == 0).then(|| stat.path.clone())).collect();
            let stats = sender.clone();
            let announce = async move {
                for stat in entries {
                    let packet =
                        Packet { r#type: PacketType::PacketStat as i32, stat: Some(stat), id: 0, data: vec![] };
                    if stats.send(Ok(packet)).await.is_err() {
                        return;
                    }
                }
                let _ = stats.send(Ok(Packet { r#type: PacketType::PacketStat as i32, ..Packet::default() })).await;
            };
            let answer = async {
                while let Ok(Some(packet)) = incoming.message().await {
                    match PacketType::try_from(packet.r#type) {
                        Ok(PacketType::PacketReq) => {
                            let Some(Some(path)) = files.get(packet.id as usize) else {
                                let _ = sender.send(Err(Status::invalid_argument("no such file requested"))).await;
                                return;
                            };
                            if send_file(&sender, &root.join(path), packet.id).await.is_err() {
                                return;
                            }
                        }
                        Ok(PacketType::PacketFin) => {
                            let _ = sender
                                .send(Ok(Packet { r#type: PacketType::PacketFin as i32, ..Packet::default() }))
                                .await;
                            return;
                        }
                        Ok(PacketType::PacketErr) => {
                            tracing::debug!(error = %String::from_utf8_lossy(&packet.data), "BuildKit ended a file transfer");
                            return;
                        }
                        _ => {}
                    }
                }
            };
            tokio::join!(announce, answer);
        });
        let stream = tokio_stream_from(receiver);
        Ok(Response::new(stream))
    }

    async fn tar_stream(&self, _: Request<Streaming<Packet>>) -> Result<Response<PacketStream>, Status> {
        Err(Status::unimplemented("only DiffCopy"))
    }
}

fn tokio_stream_from(mut receiver: mpsc::Receiver<Result<Packet, Status>>) -> PacketStream {
    Box::pin(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
}

/// One file's contents as data packets, ended by an empty one.
async fn send_file(sender: &mpsc::Sender<Result<Packet, Status>>, path: &Path, id: u32) -> Result<(), ()> {
    let data = |data: Vec<u8>| Ok(Packet { r#type: PacketType::PacketData as i32, stat: None, id, data });
    if let Ok(mut file) = tokio::fs::File::open(path).await {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) => {
                    let _ = sender.send(Err(Status::internal(format!("cannot read a context file: {err}")))).await;
                    return Err(());
                }
            };
            sender.send(data(buffer[..read].to_vec())).await.map_err(|_| ())?;
        }
    }
    sender.send(data(Vec::new())).await.map_err(|_| ())
}

// Go's os.FileMode bits, which fsutil's stats carry.
const MODE_DIR: u32 = 1 << 31;
const MODE_SYMLINK: u32 = 1 << 27;
const MODE_NAMED_PIPE: u32 = 1 << 25;
const MODE_SOCKET: u32 = 1 << 24;
const MODE_SETUID: u32 = 1 << 23;
const MODE_SETGID: u32 = 1 << 22;
const MODE_DEVICE: u32 = 1 << 26;
const MODE_CHAR_DEVICE: u32 = 1 << 21;
const MODE_STICKY: u32 = 1 << 20;
const MODE_IRREGULAR: u32 = 1 << 19;
const MODE_TYPE: u32 =
    MODE_DIR | MODE_SYMLINK | MODE_NAMED_PIPE | MODE_SOCKET | MODE_DEVICE | MODE_CHAR_DEVICE | MODE_IRREGULAR;

fn go_mode(metadata: &std::fs::Metadata) -> u32 {
    let unix = metadata.mode();
    let mut mode = unix & 0o777;
    let kind = metadata.file_type();
    if kind.is_dir() {
        mode |= MODE_DIR;
    } else if kind.is_symlink() {
        mode |= MODE_SYMLINK;
    } else if !kind.is_file() {
        mode |= MODE_IRREGULAR;
    }
    if unix & 0o4000 != 0 {
        mode |= MODE_SETUID;
    }
    if unix & 0o2000 != 0 {
        mode |= MODE_SETGID;
    }
    if unix & 0o1000 != 0 {
        mode |= MODE_STICKY;
    }
    mode
}

/// The entries of `root` that the patterns let through, in `filepath.Walk` order (each directory's
/// names in byte order, a directory before what it holds), owned by 0:0 as the docker CLI sends them.
pub fn walk(root: &Path, excludes: &[String], includes: &[String], follow: &[String]) -> Result<Vec<Stat>, String> {
    let excludes = PatternMatcher::new(excludes)?;
    let mut includes: Option<Vec<String>> =
        (!includes.is_empty()).then(|| includes.iter().map(|p| go_clean(p.trim_start_matches('/'))).collect());
    if !follow.is_empty() {
        let mut targets = follow_links(root, follow);
        let list = includes.get_or_insert_with(Vec::new);
        list.append(&mut targets);
        list.sort();
        list.dedup();
    }
    let mut walker = Walker { root, excludes, includes, last_included_dir: None, out: Vec::new() };
    walker.dir(root, "")?;
    Ok(walker.out)
}

struct Walker<'a> {
    root: &'a Path,
    excludes: PatternMatcher,
    includes: Option<Vec<String>>,
    last_included_dir: Option<String>,
    out: Vec<Stat>,
}

impl Walker<'_> {
    fn dir(&mut self, dir: &Path, prefix: &str) -> Result<(), String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|err| format!("cannot read {}: {err}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
            .collect();
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let Some(name) = name.to_str().map(str::to_owned) else { continue };
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let full = dir.join(&name);
            let metadata =
                std::fs::symlink_metadata(&full).map_err(|err| format!("cannot read {}: {err}", full.display()))?;
            let is_dir = metadata.is_dir();
            if !self.passes(&path, is_dir) {
                continue;
            }
            let linkname = if metadata.file_type().is_symlink() {
                std::fs::read_link(&full).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default()
            } else {
                String::new()
            };
            let mod_time = metadata.mtime().saturating_mul(1_000_000_000).saturating_add(metadata.mtime_nsec());
            self.out.push(Stat {
                path: path.clone(),
                mode: go_mode(&metadata),
                uid: 0,
                gid: 0,
                size: if is_dir { 0 } else { metadata.len() as i64 },
                mod_time,
                linkname,
                ..Stat::default()
            });
            if is_dir {
                self.dir(&full, &path)?;
            }
        }
        let _ = self.root;
        Ok(())
    }

    /// fsutil's filter: include patterns (a directory that leads to one passes), then exclude patterns
    /// (an excluded directory passes only when an exception names something inside it).
    fn passes(&mut self, path: &str, is_dir: bool) -> bool {
        if let Some(includes) = &self.includes {
            let inside_included =
                self.last_included_dir.as_ref().is_some_and(|dir| path.starts_with(&format!("{dir}/")));
            if !inside_included {
                let (mut matched, mut partial) = (false, true);
                for pattern in includes {
                    let (ok, is_partial) = match_prefix(pattern, path);
                    if ok {
                        matched = true;
                        if !is_partial {
                            partial = false;
                            break;
                        }
                    }
                }
                if !matched {
                    return false;
                }
                if !partial && is_dir {
                    self.last_included_dir = Some(path.to_owned());
                }
            }
        }
        if self.excludes.matches(path) {
            if is_dir && self.excludes.has_exclusions() {
                let dir = format!("{path}/");
                if self.excludes.patterns.iter().any(|p| p.exclusion && format!("{}/", p.text).starts_with(&dir)) {
                    return true;
                }
            }
            return false;
        }
        true
    }
}

/// fsutil's `matchPrefix`: whether `pattern` matches `name`, or `name` is a directory on the way to what
/// it matches (then partial).
fn match_prefix(pattern: &str, name: &str) -> (bool, bool) {
    let count = name.matches('/').count();
    let mut pattern = pattern;
    let mut partial = false;
    if pattern.matches('/').count() > count {
        let cut = pattern.match_indices('/').nth(count).map(|(i, _)| i).unwrap_or(pattern.len());
        pattern = &pattern[..cut];
        partial = true;
    }
    (filepath_match(pattern, name), partial)
}

/// Go's `filepath.Match` (`*`, `?`, `[...]`, `\` escapes; `*` and `?` do not cross `/`).
fn filepath_match(pattern: &str, name: &str) -> bool {
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '\\' => match chars.next() {
                Some(next) => regex.push_str(&regex::escape(&next.to_string())),
                None => return false,
            },
            '[' => {
                regex.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    regex.push('^');
                }
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    if matches!(c, '[' | '\\' | '&' | '~' | '^') {
                        regex.push('\\');
                    }
                    regex.push(c);
                }
                if !closed {
                    return false;
                }
                regex.push(']');
            }
            other => regex.push_str(&regex::escape(&other.to_string())),
        }
    }
    regex.push('$');
    regex::Regex::new(&regex).is_ok_and(|re| re.is_match(name))
}

/// fsutil's `FollowLinks`, enough for a context we unpacked ourselves: each path, and where each
/// symlink along it leads inside the root.
fn follow_links(root: &Path, paths: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for path in paths {
        let clean = go_clean(path.trim_start_matches('/'));
        let mut current = String::new();
        for (depth, part) in clean.split('/').enumerate() {
            current = if depth == 0 { part.to_owned() } else { format!("{current}/{part}") };
            let full = root.join(&current);
            if let Ok(target) = std::fs::read_link(&full) {
                let base = Path::new(&current).parent().map(Path::to_path_buf).unwrap_or_default();
                let resolved = if target.is_absolute() { target.clone() } else { base.join(&target) };
                let resolved = go_clean(resolved.to_string_lossy().trim_start_matches('/'));
                if !resolved.starts_with("..") && resolved != "." {
                    out.push(resolved);
                }
            }
        }
        out.push(clean);
    }
    out
}

/// Go's `filepath.Clean` of a relative path ("." when nothing is left).
fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

struct Pattern {
    text: String,
    regex: regex::Regex,
    dirs: usize,
    exclusion: bool,
}

/// Docker's `fileutils.PatternMatcher` (20.10): the last pattern that matches a path or one of its
/// parent directories decides; `!` patterns are exceptions.
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
}

impl PatternMatcher {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut compiled = Vec::new();
        for pattern in patterns {
            let pattern = pattern.trim();
            if pattern.is_empty() {
                continue;
            }
            let mut text = go_clean(pattern);
            let exclusion = text.starts_with('!');
            if exclusion {
                if text.len() == 1 {
                    return Err("illegal exclusion pattern: \"!\"".into());
                }
                text = text[1..].to_owned();
            }
            // `.dockerignore` patterns are relative to the context whether or not they start with `/`.
            let text = go_clean(text.trim_start_matches('/'));
            let regex = regex::Regex::new(&pattern_regex(&text))
                .map_err(|err| format!(".dockerignore pattern {pattern:?}: {err}"))?;
            compiled.push(Pattern { dirs: text.split('/').count(), text, regex, exclusion });
        }
        Ok(Self { patterns: compiled })
    }

    fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    pub fn matches(&self, file: &str) -> bool {
        let parent = match file.rfind('/') {
            Some(at) => &file[..at],
            None => ".",
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            let mut hit = pattern.regex.is_match(file);
            if !hit && parent != "." && pattern.dirs <= parent_dirs.len() {
                hit = pattern.regex.is_match(&parent_dirs[..pattern.dirs].join("/"));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

/// A pattern as the regular expression Docker makes of it.
fn pattern_regex(pattern: &str) -> String {
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    regex.push_str(".*");
                } else {
                    regex.push_str("(.*/)?");
                }
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '.' | '$' => {
                regex.push('\\');
                regex.push(c);
            }
            '\\' => match chars.next() {
                Some(next) => regex.push_str(&regex::escape(&next.to_string())),
                None => regex.push_str("\\\\"),
            },
            other => regex.push(other),
        }
    }
    regex.push('$');
    regex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> PatternMatcher {
        PatternMatcher::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn dockerignore_patterns_match_as_docker_matches_them() {
        let m = matcher(&["*.log", "build", "!build/keep.txt", "**/secret*", "/docs/*.md"]);
        assert!(m.matches("a.log"));
        assert!(!m.matches("dir/a.log"), "* does not cross /");
        assert!(m.matches("build/x"), "a parent directory matches");
        assert!(!m.matches("build/keep.txt"));
        assert!(m.matches("deep/er/secret.txt") && m.matches("secret"));
        assert!(m.matches("docs/readme.md") && !m.matches("docs/sub/readme.md"));
        assert!(!m.matches("src/main.rs"));
    }

    #[test]
    fn walks_in_fsutil_order_with_excludes_and_includes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in ["a/b", "a.txt", "b/keep", "b/drop", ".dockerignore"] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let paths = |stats: Vec<Stat>| stats.into_iter().map(|s| s.path).collect::<Vec<_>>();
        assert_eq!(
            paths(walk(root, &[], &[], &[]).unwrap()),
            [".dockerignore", "a", "a/b", "a.txt", "b", "b/drop", "b/keep", "link"]
        );
        let excludes = vec!["b".to_owned(), "!b/keep".to_owned(), "a".to_owned()];
        assert_eq!(paths(walk(root, &excludes, &[], &[]).unwrap()), [".dockerignore", "a.txt", "b", "b/keep", "link"]);
        assert_eq!(paths(walk(root, &[], &["/.dockerignore".to_owned()], &[]).unwrap()), [".dockerignore"]);
        assert_eq!(
            paths(walk(root, &[], &[], &["link".to_owned(), "a/b".to_owned()]).unwrap()),
            ["a", "a/b", "a.txt", "link"]
        );
        let stats = walk(root, &[], &[], &[]).unwrap();
        assert_eq!(stats[1].mode & MODE_DIR, MODE_DIR);
        assert_eq!(stats[7].linkname, "a.txt");
        assert_eq!(stats[2].size, 3);
    }
}
