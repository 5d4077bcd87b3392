//! Names that arrive from outside: component names, git branches and tags, architectures.
//!
//! Each type can only hold a valid value. They are parsed once, where a request enters the system
//! (the gateway, a NATS endpoint), and everything behind that edge passes the typed value along, so no
//! function has to wonder whether a branch might start with `-` or a component contain `/`.
//! Deserialising one of these types runs the same parse, so a JSON message with a bad name is refused
//! with the rule that it broke.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schema::string_schema;

/// Why a name was refused. The message names the field and states the rule, so a client can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// A component name: `^[a-z0-9][a-z0-9._-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ComponentName(String);

pub const COMPONENT_RULE: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";

impl ComponentName {
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let mut bytes = value.bytes();
        let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'));
        let rest_ok = bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if first_ok && rest_ok && value.len() <= 64 {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidName(format!(
                "component {value:?} is not a valid name: it must match {COMPONENT_RULE} (lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters)"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A git branch name, checked with the rules of `git check-ref-format --branch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BranchName(String);

impl BranchName {
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        if value == "HEAD" {
            return Err(InvalidName(
                "branch \"HEAD\" is not a valid branch name: HEAD names the current commit, not a branch".into(),
            ));
        }
        check_ref_format(value)
            .map(|()| Self(value.to_owned()))
            .map_err(|rule| InvalidName(format!("branch {value:?} is not a valid git branch name: {rule}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A git tag name, checked with the rules of `git check-ref-format` for `refs/tags/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagName(String);

impl TagName {
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        check_ref_format(value)
            .map(|()| Self(value.to_owned()))
            .map_err(|rule| InvalidName(format!("tag {value:?} is not a valid git tag name: {rule}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest ref name accepted; git itself allows more, but no forge does.
const MAX_REF_LEN: usize = 255;

/// The rules of `git check-ref-format` (see its manual), plus the refusal of a leading `-`, which git
/// leaves to its callers and which would otherwise turn a ref into a command-line option, and of
/// invisible format characters, which git accepts and which make a name read as another.
fn check_ref_format(name: &str) -> Result<(), String> {
    if let Some(c) = format_character(name) {
        return Err(no_format_characters(c));
    }
    check_git_ref_rules(name).map_err(String::from)
}

/// The first Unicode format character (general category Cf) in `value`: invisible, they reorder or hide
/// what a name shows (`U+202E` right-to-left override, `U+200B` zero width space, `U+FEFF`, tag characters).
pub fn format_character(value: &str) -> Option<char> {
    value.chars().find(|&c| is_format_character(c))
}

/// Whether `c` is in the general category Cf (Unicode 16.0; the list changes rarely, and only by additions).
pub fn is_format_character(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// The rule a name with the format character `c` broke, and what to do.
fn no_format_characters(c: char) -> String {
    format!(
        "it must not contain invisible Unicode format characters (such as U+200B zero width space or U+202E \
         right-to-left override): remove the U+{:04X} it contains",
        c as u32
    )
}

fn check_git_ref_rules(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_REF_LEN {
        return Err("it is longer than 255 bytes");
    }
    if name.starts_with('-') {
        return Err("it must not start with '-'");
    }
    if name == "@" {
        return Err("it must not be the single character '@'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("it must not start or end with '/' or contain '//'");
    }
    if name.ends_with('.') {
        return Err("it must not end with '.'");
    }
    if name.contains("..") {
        return Err("it must not contain '..'");
    }
    if name.contains("@{") {
        return Err("it must not contain '@{'");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err("it must not contain white space, control characters or any of ~ ^ : ? * [ \\");
    }
    if name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
        return Err("no '/'-separated part may start with '.' or end with '.lock'");
    }
    Ok(())
}

/// A CPU architecture the service builds for, as a Docker platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Architecture {
    Amd64,
    Arm64,
    ArmV7,
    I386,
}

/// What clients may write, with or without a `linux/` prefix.
pub const ACCEPTED_ARCHITECTURES: &[&str] = &["amd64", "x86_64", "arm64", "aarch64", "arm/v7", "armv7l", "386", "i686"];

impl Architecture {
    pub const ALL: [Architecture; 4] = [Self::Amd64, Self::Arm64, Self::ArmV7, Self::I386];

    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let lower = value.to_ascii_lowercase();
        let bare = lower.strip_prefix("linux/").unwrap_or(&lower);
        match bare {
            "amd64" | "x86_64" => Ok(Self::Amd64),
            "arm64" | "aarch64" | "arm64/v8" => Ok(Self::Arm64),
            "arm/v7" | "armv7l" | "arm-v7" => Ok(Self::ArmV7),
            "386" | "i686" | "i386" => Ok(Self::I386),
            _ => Err(InvalidName(format!(
                "architecture {value:?} is not supported: use one of {} (optionally prefixed with 'linux/')",
                ACCEPTED_ARCHITECTURES.join(", ")
            ))),
        }
    }

    /// The Docker platform, e.g. `linux/arm/v7`.
    pub fn platform(self) -> &'static str {
        match self {
            Self::Amd64 => "linux/amd64",
            Self::Arm64 => "linux/arm64",
            Self::ArmV7 => "linux/arm/v7",
            Self::I386 => "linux/386",
        }
    }

    /// The form used in image tags, URLs, subjects and keys, e.g. `arm-v7`.
    /// The `architecture` of an OCI platform (a manifest list's entry, an image's configuration).
    pub fn oci_architecture(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
            Self::ArmV7 => "arm",
            Self::I386 => "386",
        }
    }

    /// The `variant` of an OCI platform, where the architecture has one.
    pub fn oci_variant(self) -> Option<&'static str> {
        match self {
            Self::ArmV7 => Some("v7"),
            _ => None,
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
            Self::ArmV7 => "arm-v7",
            Self::I386 => "386",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.platform())
    }
}

impl From<Architecture> for String {
    fn from(value: Architecture) -> Self {
        value.platform().to_owned()
    }
}

impl TryFrom<String> for Architecture {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

macro_rules! string_newtype_conversions {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
string_newtype_conversions!(ComponentName, BranchName, TagName);

string_schema!(ComponentName, "Component name.", pattern = COMPONENT_RULE, example = "libfoo");
string_schema!(
    BranchName,
    "Git branch name (rules of `git check-ref-format --branch`; must not start with '-').",
    example = "main"
);
string_schema!(
    TagName,
    "Git tag or branch to build (rules of `git check-ref-format`; must not start with '-').",
    example = "v1.2.0"
);
string_schema!(
    Architecture,
    "Target architecture: amd64, x86_64, arm64, aarch64, arm/v7, armv7l, 386 or i686, optionally prefixed with 'linux/'. Answers use the Docker platform form (linux/amd64, linux/arm64, linux/arm/v7, linux/386).",
    example = "linux/amd64"
);

/// A user name from the identity headers (`linux_username`, `github_username`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(header: &str, value: &str) -> Result<Self, InvalidName> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'$'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidName(format!(
                "{header} must be 1 to 64 characters of letters, digits, '.', '_', '-', '@' or '$'"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A git URL a component may be cloned from.
///
/// Refused: anything starting with `-` (it would reach git as an option), transport helpers such as
/// `ext::sh -c ...` (they run commands), hosts starting with `-` (`ssh://-oProxyCommand=...`), white
/// space and control characters, and every scheme not in `git.allowed_schemes`. `user@host:path` counts
/// as `ssh`, a bare path as `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    url: String,
    scheme: String,
}

impl GitUrl {
    pub fn parse(value: &str, allowed_schemes: &[String]) -> Result<Self, InvalidName> {
        let refuse = |why: &str| Err(InvalidName(format!("url is not an acceptable git URL: {why}")));
        if value.is_empty() {
            return refuse("it is empty");
        }
        if value.len() > 2048 {
            return refuse("it is longer than 2048 characters");
        }
        if value.starts_with('-') {
            return refuse("it must not start with '-'");
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return refuse("it must not contain white space or control characters");
        }
        if let Some(c) = format_character(value) {
            return refuse(&no_format_characters(c));
        }
        let transport_helper = value.find("::").is_some_and(|at| value.find("://").is_none_or(|s| at < s));
        if transport_helper {
            return refuse("transport helper URLs such as ext::... are not allowed");
        }
        let (scheme, host) = if let Some((scheme, rest)) = value.split_once("://") {
            let authority = rest.split('/').next().unwrap_or("");
            (scheme.to_ascii_lowercase(), authority.rsplit('@').next().unwrap_or("").to_owned())
        } else if let Some((before, _)) = value.split_once(':').filter(|(before, _)| !before.contains('/')) {
            ("ssh".to_owned(), before.rsplit('@').next().unwrap_or("").to_owned())
        } else {
            ("file".to_owned(), String::new())
        };
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-')) {
            return refuse("its scheme is malformed");
        }
        if host.starts_with('-') {
            return refuse("its host must not start with '-'");
        }
        if !allowed_schemes.iter().any(|allowed| allowed.eq_ignore_ascii_case(&scheme)) {
            return Err(InvalidName(format!(
                "url scheme {scheme:?} is not allowed: use one of {} (setting git.allowed_schemes)",
                allowed_schemes.join(", ")
            )));
        }
        Ok(Self { url: value.to_owned(), scheme })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }
}

/// The registry repository of a component's images on one branch:
/// `<component>-<branch-slug>-image`.
///
/// Docker repository names are stricter than git branches, so the branch is slugged (and the component
/// too, in the rare case Docker would refuse it as written); whenever slugging changed a part, a hash of
/// the original is appended, which keeps `feature/x` and `feature-x` in different repositories.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRepository(String);

impl ImageRepository {
    pub fn new(component: &ComponentName, branch: &BranchName) -> Self {
        let branch = slug_with_hash(branch.as_str());
        let raw = format!("{component}-{branch}-image");
        if is_docker_path_component(&raw) {
            return Self(raw);
        }
        // The few component names Docker refuses here (`a..b`, `a._b`, `x.` before the dash) are slugged too.
        Self(format!("{}-{branch}-image", slug_with_hash(component.as_str())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Docker's rule for a repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_docker_path_component(name: &str) -> bool {
    let mut run = String::new();
    let mut seen_alphanumeric = false;
    for c in name.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !run.is_empty() && (!seen_alphanumeric || docker_separator(&run) != run) {
                return false;
            }
            run.clear();
            seen_alphanumeric = true;
        } else if matches!(c, '.' | '_' | '-') {
            run.push(c);
        } else {
            return false;
        }
    }
    seen_alphanumeric && run.is_empty()
}

/// Slugs longer than this are cut (and so get the hash suffix), keeping repository names well under
/// Docker's 255-character limit.
const MAX_SLUG_LEN: usize = 100;

/// Lower-cases `value`, replaces every run of characters outside `[a-z0-9._-]` (and every run of
/// separators Docker would refuse, such as `._` or `-.`) by `-`, trims separators from both ends, and
/// appends `-<8 hex digits of SHA-256(value)>` when the result differs from `value`.
pub fn slug_with_hash(value: &str) -> String {
    let mut slug = String::with_capacity(value.len());
    let mut pending_separators = String::new();
    for c in value.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !slug.is_empty() && !pending_separators.is_empty() {
                slug.push_str(docker_separator(&pending_separators));
            }
            pending_separators.clear();
            slug.push(c);
        } else if matches!(c, '.' | '_' | '-') {
            pending_separators.push(c);
        } else {
            pending_separators.push('#');
        }
    }
    slug.truncate(MAX_SLUG_LEN);
    while slug.ends_with(['.', '_', '-']) {
        slug.pop();
    }
    if slug == value {
        return slug;
    }
    let hash = hex::encode(&Sha256::digest(value.as_bytes())[..4]);
    if slug.is_empty() {
        hash
    } else {
        format!("{slug}-{hash}")
    }
}

/// Docker accepts `.`, `_`, `__` or any run of `-` between alphanumerics; anything else becomes `-`.
fn docker_separator(run: &str) -> &str {
    match run {
        "." | "_" | "__" => run,
        _ if run.bytes().all(|b| b == b'-') => run,
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_rule() {
        for ok in ["a", "libfoo", "0lib", "a.b_c-d", &"a".repeat(64)] {
            assert!(ComponentName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "A", "a/b", "a b", &"a".repeat(65), "é"] {
            let err = ComponentName::parse(bad).unwrap_err();
            assert!(err.0.contains(COMPONENT_RULE), "{err}");
        }
    }

    #[test]
    fn branch_rules_follow_git() {
        for ok in ["main", "feature/x", "release-1.0", "a@b", "ümlaut", "v1._x"] {
            assert!(BranchName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-rf",
            "HEAD",
            "@",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "/a",
            "a/",
            "a//b",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a.",
            "a@{1}",
            "a\u{7f}",
            "a\tb",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(TagName::parse("v1.2.0").is_ok());
        assert!(TagName::parse("--upload-pack=x").is_err());
    }

    /// Invisible format characters (general category Cf) make a name read as another: `main\u{202e}` shows
    /// as a different branch, `v1\u{200b}` as `v1`.
    #[test]
    fn names_refuse_unicode_format_characters() {
        let format_characters =
            "\u{ad}\u{600}\u{61c}\u{6dd}\u{70f}\u{890}\u{8e2}\u{180e}\u{200b}\u{200c}\u{200d}\u{200e}\
            \u{200f}\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2060}\u{2064}\u{2066}\u{2067}\u{2068}\u{2069}\
            \u{206f}\u{feff}\u{fff9}\u{fffb}\u{110bd}\u{13430}\u{1bca0}\u{1d173}\u{e0001}\u{e0020}\u{e007f}";
        for c in format_characters.chars() {
            let name = format!("ma{c}in");
            for err in [BranchName::parse(&name).unwrap_err(), TagName::parse(&name).unwrap_err()] {
                assert!(err.0.contains("invisible Unicode format characters"), "{err}");
                assert!(err.0.contains(&format!("U+{:04X}", c as u32)), "the message names the character: {err}");
            }
            let url = format!("https://example.com/te{c}am/repo.git");
            let err = GitUrl::parse(&url, &["https".to_owned()]).unwrap_err();
            assert!(err.0.contains("invisible Unicode format characters"), "{err}");
        }
        // Visible non-ASCII letters and marks stay allowed.
        for ok in ["ümlaut", "日本", "cafe\u{301}"] {
            assert!(BranchName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn architectures_normalise_to_docker_platforms() {
        for (input, platform) in [
            ("amd64", "linux/amd64"),
            ("x86_64", "linux/amd64"),
            ("linux/amd64", "linux/amd64"),
            ("arm64", "linux/arm64"),
            ("aarch64", "linux/arm64"),
            ("linux/arm64", "linux/arm64"),
            ("arm/v7", "linux/arm/v7"),
            ("armv7l", "linux/arm/v7"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("386", "linux/386"),
            ("i686", "linux/386"),
            ("AMD64", "linux/amd64"),
        ] {
            assert_eq!(Architecture::parse(input).unwrap().platform(), platform, "{input}");
        }
        let err = Architecture::parse("sparc").unwrap_err();
        assert!(err.0.contains("amd64, x86_64, arm64"), "{err}");
    }

    #[test]
    fn image_repository_names() {
        let c = ComponentName::parse("libfoo").unwrap();
        let main = BranchName::parse("main").unwrap();
        assert_eq!(ImageRepository::new(&c, &main).as_str(), "libfoo-main-image");
        let slash = ImageRepository::new(&c, &BranchName::parse("feature/x").unwrap());
        let dash = ImageRepository::new(&c, &BranchName::parse("feature-x").unwrap());
        assert_eq!(dash.as_str(), "libfoo-feature-x-image");
        assert!(slash.as_str().starts_with("libfoo-feature-x-"), "{slash}");
        assert_ne!(slash, dash);
        let upper = ImageRepository::new(&c, &BranchName::parse("Feature-X").unwrap());
        assert_ne!(upper, dash);
        // The component stays as written unless Docker would refuse the name.
        let trailing = ComponentName::parse("libfoo-").unwrap();
        assert_eq!(ImageRepository::new(&trailing, &main).as_str(), "libfoo--main-image");
        let dots = ImageRepository::new(&ComponentName::parse("a..b").unwrap(), &main);
        assert!(dots.as_str().starts_with("a-b-") && dots.as_str().ends_with("-main-image"), "{dots}");
        assert!(is_docker_path_component(dots.as_str()));
    }

    #[test]
    fn slugs_are_valid_docker_path_components() {
        let docker_component = |s: &str| {
            // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
            let parts: Vec<&str> = s.split(|c: char| !c.is_ascii_alphanumeric()).collect();
            !s.is_empty()
                && parts.first().is_some_and(|p| !p.is_empty())
                && parts.last().is_some_and(|p| !p.is_empty())
                && !s.contains("._")
                && !s.contains("_.")
                && !s.contains("-.")
                && !s.contains(".-")
                && !s.contains("..")
                && !s.contains("___")
        };
        for input in ["a._b", "x.-y", "@@", "ünï/cödé", "v1..2", "a___b", "-a-", &"x/".repeat(200)] {
            let slug = slug_with_hash(input);
            assert!(docker_component(&slug), "{input:?} -> {slug:?}");
            assert!(slug.len() <= MAX_SLUG_LEN + 9);
        }
    }

    #[test]
    fn git_urls_are_checked_before_git_sees_them() {
        let https = vec!["https".to_owned()];
        let all: Vec<String> = ["https", "file", "ssh"].map(String::from).to_vec();
        assert_eq!(GitUrl::parse("https://example.com/o/r.git", &https).unwrap().scheme(), "https");
        assert_eq!(GitUrl::parse("file:///tmp/repo", &all).unwrap().scheme(), "file");
        assert_eq!(GitUrl::parse("git@example.com:o/r.git", &all).unwrap().scheme(), "ssh");
        for bad in [
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "ssh://-oProxyCommand=touch /tmp/x/r",
            "ssh://-oProxyCommand=x/r",
            "-oProxyCommand=x:r",
            "https://exa mple.com/r",
            "",
        ] {
            assert!(GitUrl::parse(bad, &all).is_err(), "{bad:?} should be refused");
        }
        let err = GitUrl::parse("file:///tmp/repo", &https).unwrap_err();
        assert!(err.0.contains("git.allowed_schemes"), "{err}");
        assert!(GitUrl::parse("/tmp/repo", &https).is_err());
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("linux_username", "alice").is_ok());
        assert!(Username::parse("github_username", "octo-cat").is_ok());
        assert!(Username::parse("linux_username", "a b").is_err());
        assert!(Username::parse("linux_username", &"a".repeat(65)).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn component_names_hold_only_valid_values(name in "\\PC{0,80}") {
            if let Ok(component) = ComponentName::parse(&name) {
                prop_assert!(component.as_str().len() <= 64);
                prop_assert!(component.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
                prop_assert!(!component.as_str().starts_with(['.', '_', '-']));
            }
        }

        #[test]
        fn valid_component_names_are_accepted(name in "[a-z0-9][a-z0-9._-]{0,63}") {
            prop_assert!(ComponentName::parse(&name).is_ok());
        }

        #[test]
        fn refs_never_become_options_or_escape(name in "\\PC{0,40}") {
            let parsed = [BranchName::parse(&name).map(String::from), TagName::parse(&name).map(String::from)];
            for value in parsed.into_iter().flatten() {
                prop_assert!(!value.starts_with('-'));
                prop_assert!(!value.contains(".."));
                prop_assert!(!value.chars().any(|c| c.is_whitespace() || c.is_control()));
                prop_assert!(format_character(&value).is_none());
            }
        }

        #[test]
        fn slugs_are_docker_safe_and_distinct(a in "\\PC{1,60}", b in "\\PC{1,60}") {
            let (slug_a, slug_b) = (slug_with_hash(&a), slug_with_hash(&b));
            for slug in [&slug_a, &slug_b] {
                prop_assert!(!slug.is_empty() && slug.len() <= MAX_SLUG_LEN + 9);
                prop_assert!(slug.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c)));
                prop_assert!(slug.as_bytes()[0].is_ascii_alphanumeric() && slug.as_bytes()[slug.len() - 1].is_ascii_alphanumeric());
            }
            if a != b {
                prop_assert_ne!(slug_a, slug_b);
            }
        }

        #[test]
        fn architectures_normalise_to_one_platform(input in prop::sample::select(ACCEPTED_ARCHITECTURES), prefixed in any::<bool>()) {
            let text = if prefixed { format!("linux/{input}") } else { input.to_owned() };
            let architecture = Architecture::parse(&text).unwrap();
            prop_assert_eq!(Architecture::parse(architecture.platform()).unwrap(), architecture);
            prop_assert_eq!(Architecture::parse(architecture.short()).unwrap(), architecture);
        }
    }
}
