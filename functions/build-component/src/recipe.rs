//! How to build a component, from its repository: `artifact.toml` at the root, else an executable
//! `build.sh` run with `ARTIFACT_OUT=/out`.
//!
//! ```toml
//! [build]
//! image = "builder-image:tag"      # optional; `build.builder_image` otherwise
//! command = ["sh", "-c", "make && make install DESTDIR=/out"]
//! output = "/out"                  # the directory that becomes the artifact
//! secrets = ["npm-token"]          # optional; each at /run/secrets/<name>, read-only, in memory
//!
//! [[depends]]                       # unpacked under /deps/<component>/ before the command runs
//! component = "libfoo"
//! tag = "v1.2.0"
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use serde::Deserialize;

use artifacts_schemas::{ComponentName, TagName};

pub const MANIFEST: &str = "artifact.toml";
pub const SCRIPT: &str = "build.sh";
const DEFAULT_OUTPUT: &str = "/out";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The builder image named by the repository, if any.
    pub image: Option<String>,
    pub command: Vec<String>,
    /// Absolute path inside the container.
    pub output: String,
    pub depends: Vec<Dependency>,
    /// Build secrets the command reads at `/run/secrets/<name>` (names checked, each once).
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub component: ComponentName,
    pub tag: TagName,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    build: BuildSection,
    #[serde(default)]
    depends: Vec<Dependency>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSection {
    image: Option<String>,
    command: Vec<String>,
    output: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
}

/// Reads the instructions from a checkout. The error says what the repository must fix.
pub fn read(checkout: &Path) -> Result<Recipe, String> {
    if let Some(text) = regular_file(&checkout.join(MANIFEST))? {
        return parse_manifest(&text);
    }
    let script = checkout.join(SCRIPT);
    match std::fs::symlink_metadata(&script) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(Recipe {
            image: None,
            command: vec![format!("./{SCRIPT}")],
            output: DEFAULT_OUTPUT.into(),
            depends: Vec::new(),
            secrets: Vec::new(),
        }),
        Ok(meta) if meta.is_file() => Err(format!("{SCRIPT} is not executable: `chmod +x {SCRIPT}` and commit it")),
        _ => Err(format!("the repository has neither {MANIFEST} nor an executable {SCRIPT} at its root")),
    }
}

/// The file's text if it is a regular file (a symlink could point at the worker's own files).
fn regular_file(path: &Path) -> Result<Option<String>, String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() <= 64 * 1024 => {
            std::fs::read_to_string(path).map(Some).map_err(|_| format!("{MANIFEST} is not UTF-8 text"))
        }
        Ok(meta) if meta.is_file() => Err(format!("{MANIFEST} is larger than 64 KiB")),
        Ok(_) => Err(format!("{MANIFEST} must be a regular file, not a link or directory")),
        Err(_) => Ok(None),
    }
}

pub fn parse_manifest(text: &str) -> Result<Recipe, String> {
    let manifest: Manifest = toml::from_str(text).map_err(|err| format!("{MANIFEST} is invalid: {}", err.message()))?;
    let BuildSection { image, command, output, secrets: listed } = manifest.build;
    let mut secrets = Vec::new();
    for name in listed {
        artifacts_schemas::messages::secrets::check_secret_name(&name)
            .map_err(|err| format!("{MANIFEST}: build.secrets: {}", err.0))?;
        if !secrets.contains(&name) {
            secrets.push(name);
        }
    }
    if command.is_empty() || command[0].is_empty() {
        return Err(format!("{MANIFEST}: build.command must name a program, e.g. [\"sh\", \"-c\", \"make\"]"));
    }
    let output = output.unwrap_or_else(|| DEFAULT_OUTPUT.into());
    let path = Path::new(&output);
    let clean = path.is_absolute() && path.components().skip(1).all(|c| matches!(c, Component::Normal(_)));
    if !clean || path.components().count() < 2 {
        return Err(format!(
            "{MANIFEST}: build.output must be an absolute directory below / without '..', e.g. \"/out\""
        ));
    }
    if let Some(image) = &image {
        let ok = !image.is_empty()
            && !image.starts_with('-')
            && image.len() <= 255
            && image.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@'));
        if !ok {
            return Err(format!("{MANIFEST}: build.image {image:?} is not an image reference"));
        }
    }
    Ok(Recipe { image, command, output, depends: manifest.depends, secrets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_parse_and_explain_their_mistakes() {
        let recipe = parse_manifest(
            "[build]\ncommand = [\"sh\", \"-c\", \"make\"]\noutput = \"/out\"\n[[depends]]\ncomponent = \"libfoo\"\ntag = \"v1.2.0\"\n",
        )
        .unwrap();
        assert_eq!(recipe.command, vec!["sh", "-c", "make"]);
        assert_eq!(recipe.depends[0].component.as_str(), "libfoo");
        assert!(recipe.secrets.is_empty());
        let recipe = parse_manifest("[build]\ncommand = [\"x\"]\nsecrets = [\"tok\", \"npm.rc\", \"tok\"]\n").unwrap();
        assert_eq!(recipe.secrets, vec!["tok", "npm.rc"]);

        for (text, says) in [
            ("[build]\ncommand = []\n", "build.command"),
            ("[build]\ncommand = [\"x\"]\noutput = \"out\"\n", "build.output"),
            ("[build]\ncommand = [\"x\"]\noutput = \"/a/../etc\"\n", "build.output"),
            ("[build]\ncommand = [\"x\"]\noutput = \"/\"\n", "build.output"),
            ("[build]\ncommand = [\"x\"]\nimage = \"--privileged\"\n", "build.image"),
            ("[build]\ncommand = [\"x\"]\n[[depends]]\ncomponent = \"Bad\"\ntag = \"v1\"\n", "invalid"),
            ("[build]\ncommand = [\"x\"]\nunknown = 1\n", "invalid"),
            ("[build]\ncommand = [\"x\"]\nsecrets = [\"../etc\"]\n", "build.secrets: secret name"),
            ("[build]\ncommand = [\"x\"]\nsecrets = [\"..\"]\n", "build.secrets: secret name"),
        ] {
            let err = parse_manifest(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
