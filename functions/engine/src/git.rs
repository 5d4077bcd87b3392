//! A safe shallow clone of an untrusted URL at an untrusted ref.
//!
//! The URL and the tag were checked where they entered (`GitUrl`, `TagName`: nothing starts with `-`, no
//! transport helpers, only allowed schemes), and git is run so that neither could become an option
//! (`--` before the positionals) and nothing outside the clone steers it: no system or global config, a
//! fresh `HOME`, no prompts, `GIT_ALLOW_PROTOCOL` limited to the allowed schemes, no submodules, a time
//! limit. The URL may carry credentials: every message shows it redacted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::attempt::BuildFailure;
use artifacts_runtime::configuration::{redact_url, GitSettings};
use artifacts_schemas::{GitUrl, RequestError, TagName};

pub struct Checkout {
    pub path: PathBuf,
    pub commit: String,
    /// The commit's committer time, seconds since the epoch: every time in the archive (reproducible).
    pub commit_time: u64,
    /// `tag` named a git tag, not a branch (a clone of a tag has no branch checked out).
    pub is_tag: bool,
}

/// A URL this deployment may clone: an allowed scheme, and for `file://` a path under `git.file_roots`.
pub fn checked_url(url: &str, settings: &GitSettings) -> Result<GitUrl, RequestError> {
    let url = GitUrl::parse(url, &settings.allowed_schemes)?;
    check_file_root(&url, settings)?;
    Ok(url)
}

/// A local repository (`file://` or a bare path) must lie under one of `git.file_roots` once every link
/// is resolved. A path outside them and a path that does not exist get the same answer, so the answer
/// tells nothing about the worker's file system.
pub fn check_file_root(url: &GitUrl, settings: &GitSettings) -> Result<(), RequestError> {
    if url.scheme() != "file" {
        return Ok(());
    }
    let refused = || {
        RequestError::invalid(format!(
            "{} is not a repository under git.file_roots ({}): file:// URLs may name only repositories there",
            url.as_str(),
            if settings.file_roots.is_empty() { "none are set".to_owned() } else { settings.file_roots.join(", ") }
        ))
    };
    let text = url.as_str();
    let path = match text.strip_prefix("file://") {
        // `file:///path` or `file://localhost/path`.
        Some(rest) => rest.strip_prefix("localhost").unwrap_or(rest),
        None => text,
    };
    // git would decode `%xx`; refusing them keeps the path checked the path cloned.
    if !path.starts_with('/') || path.contains('%') {
        return Err(refused());
    }
    let resolved = std::fs::canonicalize(path).map_err(|_| refused())?;
    let inside = settings
        .file_roots
        .iter()
        .filter_map(|root| std::fs::canonicalize(root).ok())
        .any(|root| resolved.starts_with(root));
    if inside {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Clones into `dir` (the build's work directory): the source under `src`, and the empty `HOME` git runs
/// with.
pub async fn clone(url: &GitUrl, tag: &TagName, settings: &GitSettings, dir: &Path) -> Result<Checkout, BuildFailure> {
    let home = dir.join("home");
    let path = dir.join("src");
    std::fs::create_dir(&home).map_err(|err| BuildFailure::Passing(format!("no room for a clone: {err}")))?;
    let shown = redact_url(url.as_str());
    let mut clone = git(&home, settings);
    clone
        .args(["clone", "--quiet", "--depth", "1", "--single-branch", "--no-tags", "--branch"])
        .arg(tag.as_str())
        .arg("--")
        .arg(url.as_str())
        .arg(&path);
    let timeout = Duration::from_secs(settings.clone_timeout_secs);
    let output = match tokio::time::timeout(timeout, clone.output()).await {
        Err(_) => {
            return Err(BuildFailure::Passing(format!("cloning {shown} took longer than {}s", timeout.as_secs())))
        }
        Ok(Err(err)) => return Err(BuildFailure::Passing(format!("cannot run git: {err}"))),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).replace(url.as_str(), &shown);
        let stderr = stderr.trim();
        let (permanent, message) = plain_git_error(stderr, &shown, tag);
        return Err(if permanent { BuildFailure::Permanent(message) } else { BuildFailure::Passing(message) });
    }
    let (commit, commit_time) = head_commit(&home, &path, settings).await?;
    let on_branch = git(&home, settings).arg("-C").arg(&path).args(["symbolic-ref", "-q", "HEAD"]).output().await;
    let is_tag = !on_branch.map_err(|err| BuildFailure::Passing(format!("cannot run git: {err}")))?.status.success();
    Ok(Checkout { path, commit, commit_time, is_tag })
}

/// Why git failed with a repository, in plain words, and whether a retry could change it: an unknown
/// host, no repository there or no such ref could not (the build fails at once, the submission is a
/// 400); a refused or dropped connection could.
fn plain_git_error(stderr: &str, shown: &str, tag: &TagName) -> (bool, String) {
    if stderr.contains("not found in upstream") {
        return (true, format!("tag or branch {tag} was not found in {shown}"));
    }
    if let Some(host) = stderr.split("Could not resolve host: ").nth(1) {
        let host = host.split_whitespace().next().unwrap_or_default();
        return (
            true,
            format!("cannot reach {shown}: the host {host} is not known (DNS has no address for it); check the URL"),
        );
    }
    let missing = ["does not appear to be a git repository", "Repository not found", "not found"];
    if missing.iter().any(|m| stderr.contains(m)) {
        return (true, format!("cannot read {shown}: there is no git repository there"));
    }
    (false, format!("cannot reach {shown}: {stderr}"))
}

/// How long asking a repository which commit a ref names may take (a submission waits for it).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The commit `tag` (a branch or a tag, as `git clone --branch` takes it) names in the repository now:
/// with the rest of a submission it identifies identical builds. A ref the repository lacks and a
/// repository that cannot be read are the submitter's to fix (400); a slow one is 503.
/// What a tag or branch names in a repository now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub commit: String,
    /// It is a git tag, not a branch: a released version, whose commit never changes here.
    pub is_tag: bool,
}

pub async fn resolve(url: &GitUrl, tag: &TagName, settings: &GitSettings) -> Result<Resolved, RequestError> {
    let home = tempfile::tempdir().map_err(|err| RequestError::unavailable(format!("no room to run git: {err}")))?;
    let shown = redact_url(url.as_str());
    let (branch, tag_ref) = (format!("refs/heads/{tag}"), format!("refs/tags/{tag}"));
    let peeled = format!("{tag_ref}^{{}}");
    let mut command = git(home.path(), settings);
    command.args(["ls-remote", "--"]).arg(url.as_str()).args([&branch, &tag_ref]);
    let output = match tokio::time::timeout(RESOLVE_TIMEOUT, command.output()).await {
        Err(_) => {
            return Err(RequestError::unavailable(format!(
                "{shown} did not answer within {}s",
                RESOLVE_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(err)) => return Err(RequestError::unavailable(format!("cannot run git: {err}"))),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).replace(url.as_str(), &shown);
        let (permanent, message) = plain_git_error(stderr.trim(), &shown, tag);
        return Err(if permanent { RequestError::invalid(message) } else { RequestError::unavailable(message) });
    }
    let listed = String::from_utf8_lossy(&output.stdout);
    let refs: Vec<(&str, &str)> = listed.lines().filter_map(|line| line.split_once('\t')).collect();
    // `git clone --branch` prefers a branch to a tag; an annotated tag names its commit when peeled.
    [branch.as_str(), peeled.as_str(), tag_ref.as_str()]
        .iter()
        .find_map(|wanted| refs.iter().find(|(_, name)| name == wanted))
        .map(|(commit, name)| Resolved { commit: commit.to_string(), is_tag: *name != branch })
        .ok_or_else(|| RequestError::invalid(format!("tag or branch {tag} was not found in {shown}")))
}

/// The checked-out commit and its committer time.
async fn head_commit(home: &Path, repository: &Path, settings: &GitSettings) -> Result<(String, u64), BuildFailure> {
    let output = git(home, settings)
        .arg("-C")
        .arg(repository)
        .args(["log", "-1", "--format=%H %ct", "HEAD"])
        .output()
        .await
        .map_err(|err| BuildFailure::Passing(format!("cannot run git: {err}")))?;
    let printed = String::from_utf8_lossy(&output.stdout);
    let parsed = printed.trim().split_once(' ').and_then(|(commit, time)| Some((commit, time.parse().ok()?)));
    match parsed {
        Some((commit, time)) if output.status.success() && commit.len() >= 40 => Ok((commit.to_owned(), time)),
        _ => Err(BuildFailure::Permanent("the clone has no commit".into())),
    }
}

/// git with nothing from the machine's or user's configuration.
fn git(home: &Path, settings: &GitSettings) -> Command {
    let protocols: Vec<&str> = settings
        .allowed_schemes
        .iter()
        .map(String::as_str)
        .filter(|s| matches!(*s, "https" | "http" | "ssh" | "git" | "file"))
        .collect();
    let mut command = Command::new("git");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("HOME", home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ALLOW_PROTOCOL", protocols.join(":"))
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_stay_under_the_roots_and_missing_paths_answer_alike() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let settings = GitSettings {
            allowed_schemes: vec!["file".into(), "https".into()],
            file_roots: vec![root.path().display().to_string()],
            ..GitSettings::default()
        };
        let check = |url: &str| check_file_root(&GitUrl::parse(url, &settings.allowed_schemes).unwrap(), &settings);
        assert!(check(&format!("file://{}", repo.display())).is_ok());
        assert!(check(&repo.display().to_string()).is_ok(), "a bare path is a file URL too");
        assert!(check("https://example.com/x.git").is_ok());
        let outside = check("file:///etc/shadow").unwrap_err().message;
        let missing = check("file:///nonexistent/repo").unwrap_err().message;
        let escaping = check(&format!("file://{}/../../etc", repo.display())).unwrap_err().message;
        let strip = |m: &str, url: &str| m.replace(url, "URL");
        assert_eq!(strip(&outside, "file:///etc/shadow"), strip(&missing, "file:///nonexistent/repo"));
        assert!(escaping.contains("git.file_roots"));
        let none = GitSettings { file_roots: Vec::new(), ..settings.clone() };
        let url = GitUrl::parse(&format!("file://{}", repo.display()), &none.allowed_schemes).unwrap();
        assert!(check_file_root(&url, &none).is_err(), "no roots: no file:// URL");
    }
}
