//! The build container: the builder image, the source and dependencies copied in (no host mounts), the
//! network off by default, every capability dropped, `no-new-privileges`, and limits on memory, CPU and
//! processes. The container is labelled with its build id; the attempt loop removes it however the
//! build ends (`artifacts_engine::leftovers`).
//!
//! Build secrets (`[build] secrets` of `artifact.toml`) are files in a tmpfs at `/run/secrets`: in the
//! container's memory, never in a layer, an upload or the output. An archive copied into a container
//! lands beneath its tmpfs mounts, on disk, so each value is written from inside once the container
//! runs: an exec as root (`head -c <size>` reading the value from its standard input) makes
//! `/run/secrets/<name>` (root's, mode 0444: readable by the build, writable by nobody but root, and the
//! command does not run as root unless `build.user` is empty) and the command waits for the files before
//! it starts. The builder image needs `/bin/sh` and `head` for this (busybox and every distribution
//! image have them).

use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, LogsOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_util::io::ReaderStream;

use artifacts_engine::attempt::BuildFailure;
use artifacts_engine::docker::{engine_answered, engine_away, engine_unanswered};
use artifacts_engine::leftovers;
use artifacts_runtime::archive::{self, ArchiveError, Limits};
use artifacts_runtime::configuration::BuildSettings;
use artifacts_runtime::logs::BuildLog;
use artifacts_schemas::{BuildId, ComponentName};

use crate::recipe::Recipe;

/// The Docker engine (`artifacts_engine::docker::connect`), its failure to answer classified as an
/// outage ([`engine_away`]).
pub async fn connect_engine(settings: &artifacts_runtime::Settings) -> Result<Docker, BuildFailure> {
    let docker = artifacts_engine::docker::connect(settings).await.map_err(engine_away)?;
    engine_answered();
    Ok(docker)
}

/// Where the source is inside the container (the command's working directory).
const SOURCE_DIR: &str = "/src";

/// Where build secrets are, each a file named after it.
pub const SECRETS_DIR: &str = "/run/secrets";

pub struct Container {
    docker: Docker,
    id: String,
}

/// What one build's container runs: the builder image, the recipe, for which platform, as whom, and
/// the secrets it may read.
pub struct ContainerSpec<'a> {
    pub image: &'a str,
    pub recipe: &'a Recipe,
    pub platform: &'a str,
    pub user: Option<(u64, u64)>,
    pub build_id: &'a BuildId,
    pub secrets: &'a [(String, Vec<u8>)],
}

impl Container {
    pub async fn create(
        docker: &Docker,
        settings: &BuildSettings,
        spec: ContainerSpec<'_>,
    ) -> Result<Self, BuildFailure> {
        let ContainerSpec { image, recipe, platform, user, build_id, secrets } = spec;
        let (entrypoint, tmpfs) = if secrets.is_empty() {
            (Vec::new(), None)
        } else {
            // Whole pages per file, and room for the directory.
            let bytes: usize = secrets.iter().map(|(_, value)| value.len().div_ceil(4096) * 4096 + 4096).sum();
            let options = format!("rw,nosuid,nodev,noexec,mode=0755,size={}", bytes + 64 * 1024);
            // Names are [a-z0-9._-]: safe in a shell word as they are.
            let names: Vec<&str> = secrets.iter().map(|(name, _)| name.as_str()).collect();
            let wait = format!(
                "for s in {}; do until [ -e {SECRETS_DIR}/$s ]; do sleep 0.1 2>/dev/null || sleep 1; done; done; exec \"$@\"",
                names.join(" ")
            );
            let entrypoint = vec!["/bin/sh".to_owned(), "-c".to_owned(), wait, "artifacts-secrets".to_owned()];
            (entrypoint, Some([(SECRETS_DIR.to_owned(), options)].into_iter().collect()))
        };
        let host_config = HostConfig {
            network_mode: Some(settings.network.clone()),
            memory: Some(settings.memory_bytes.min(i64::MAX as u64) as i64),
            nano_cpus: Some((settings.cpus * 1e9) as i64),
            pids_limit: Some(settings.pids_limit),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            tmpfs,
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(recipe.command.clone()),
            entrypoint: Some(entrypoint),
            working_dir: Some(SOURCE_DIR.into()),
            env: Some(vec![format!("ARTIFACT_OUT={}", recipe.output)]),
            network_disabled: Some(settings.network == "none"),
            user: user.map(|(uid, gid)| format!("{uid}:{gid}")),
            labels: Some(leftovers::container_labels(build_id)),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().platform(platform).build();
        let created = docker.create_container(Some(options), body).await.map_err(|err| match err {
            bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => BuildFailure::Permanent(format!(
                "the builder image {image} is not on this worker's Docker engine (for {platform}): load it, or name another in artifact.toml"
            )),
            other if engine_unanswered(&other) => engine_away(format!("cannot create the build container: {other}")),
            other => BuildFailure::Passing(format!("cannot create the build container: {other}")),
        })?;
        Ok(Self { docker: docker.clone(), id: created.id })
    }

    /// Copies a tar (from [`pack_inputs`]) into the container's root.
    pub async fn upload(&self, tar: &Path) -> Result<(), BuildFailure> {
        let file = tokio::fs::File::open(tar).await.map_err(|err| BuildFailure::Passing(err.to_string()))?;
        let body = bollard::body_try_stream(ReaderStream::with_capacity(file, 128 * 1024));
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker.upload_to_container(&self.id, Some(options), body).await.map_err(|err| {
            match engine_unanswered(&err) {
                true => engine_away(format!("cannot copy the source into the build container: {err}")),
                false => BuildFailure::Passing(format!("cannot copy the source into the build container: {err}")),
            }
        })
    }

    /// Writes each secret into the running container's `/run/secrets` (see the module's comment).
    async fn put_secrets(&self, secrets: &[(String, Vec<u8>)]) -> Result<(), BuildFailure> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        use tokio::io::AsyncWriteExt as _;
        for (name, value) in secrets {
            let failed = |why: String| {
                BuildFailure::Permanent(format!(
                    "cannot put secret {name} at {SECRETS_DIR}/{name} in the build container ({why}): the builder image needs /bin/sh and head"
                ))
            };
            // Written aside, then moved: the command's wait sees a file only once it is whole.
            let script = format!(
                "umask 0222 && head -c {} > {SECRETS_DIR}/.{name}.part && mv {SECRETS_DIR}/.{name}.part {SECRETS_DIR}/{name}",
                value.len()
            );
            let exec = self
                .docker
                .create_exec(
                    &self.id,
                    CreateExecOptions {
                        attach_stdin: Some(true),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script]),
                        user: Some("0:0".to_owned()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|err| failed(err.to_string()))?;
            let started = self.docker.start_exec(&exec.id, Some(StartExecOptions::default())).await;
            let Ok(StartExecResults::Attached { mut output, mut input }) = started else {
                return Err(failed("the exec did not attach".into()));
            };
            input.write_all(value).await.map_err(|err| failed(err.to_string()))?;
            input.flush().await.map_err(|err| failed(err.to_string()))?;
            // Its output is a shell's complaint at most (never the value, which goes to the file).
            let mut said = String::new();
            while let Some(Ok(chunk)) = output.next().await {
                said.push_str(&chunk.to_string());
            }
            drop(input);
            let inspected = self.docker.inspect_exec(&exec.id).await.map_err(|err| failed(err.to_string()))?;
            if inspected.exit_code != Some(0) {
                return Err(failed(format!("exit code {:?}: {}", inspected.exit_code, said.trim())));
            }
        }
        Ok(())
    }

    /// Runs the command to its end, every output line into the log; the secrets go in first.
    pub async fn run(&self, log: &mut BuildLog, secrets: &[(String, Vec<u8>)]) -> Result<(), BuildFailure> {
        self.docker.start_container(&self.id, None).await.map_err(|err| match engine_unanswered(&err) {
            true => engine_away(format!("cannot start the build container: {err}")),
            false => BuildFailure::Permanent(format!("the build command cannot start: {err}")),
        })?;
        if !secrets.is_empty() {
            self.put_secrets(secrets).await?;
        }
        let options = LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).build();
        let mut output = self.docker.logs(&self.id, Some(options));
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(chunk) => log.write_output(&chunk.to_string()).await,
                Err(err) if engine_unanswered(&err) => {
                    return Err(engine_away(format!("lost the Docker engine during the build: {err}")))
                }
                Err(err) => return Err(BuildFailure::Passing(format!("lost the build container's output: {err}"))),
            }
        }
        log.flush().await;
        let exit = self.docker.wait_container(&self.id, None).next().await;
        let code = match exit {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(err)) if engine_unanswered(&err) => {
                return Err(engine_away(format!("lost the Docker engine during the build: {err}")))
            }
            Some(Err(err)) => return Err(BuildFailure::Passing(format!("lost the build container: {err}"))),
            None => return Err(BuildFailure::Passing("lost the build container".into())),
        };
        if code != 0 {
            return Err(BuildFailure::Permanent(format!(
                "the build command exited with code {code}\nlast log lines:\n{}",
                log.tail()
            )));
        }
        Ok(())
    }

    /// The directory as Docker streams it: a tar whose top directory is the path's base name.
    pub fn download(
        &self,
        path: &str,
    ) -> impl Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + Unpin + 'static {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        Box::pin(self.docker.download_from_container(&self.id, Some(options)))
    }
}

/// Writes the container's inputs into a tar at `dest`: the checkout under `src/` (without `.git`, links
/// kept as links, never followed), each dependency's archive under `deps/<component>/`, and an empty
/// output directory; all owned by `owner` (`uid`, `gid`), the user the command runs as.
///
/// The dependencies together hold at most `limits.max_bytes` (`build.max_dependency_bytes`), every file
/// counted at its declared size: a sparse file stored whole is written out whole, holes included, so a
/// small compressed archive can stand for gigabytes on the worker's disk. Their files lose the setuid,
/// setgid and sticky bits.
pub fn pack_inputs(
    checkout: &Path,
    dependencies: &[(ComponentName, PathBuf)],
    output: &str,
    limits: Limits,
    owner: (u64, u64),
    dest: &Path,
) -> Result<(), ArchiveError> {
    let mut builder = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(dest)?));
    directory(&mut builder, Path::new("src"), owner)?;
    append_tree(&mut builder, checkout, Path::new("src"), owner)?;
    let (mut unpacked, mut over_cap) = (0u64, None);
    for (component, tarball) in dependencies {
        let root = Path::new("deps").join(component.as_str());
        directory(&mut builder, &root, owner)?;
        // The bytes are counted here, across dependencies, so that the refusal names the setting.
        let each = Limits { max_bytes: u64::MAX, ..limits };
        let packed = archive::for_each_entry(std::fs::File::open(tarball)?, each, 0, |path, entry| {
            let size = archive::apparent_size(entry)?;
            unpacked = unpacked.saturating_add(size);
            if unpacked > limits.max_bytes {
                over_cap = Some(format!(
                    "the dependencies of this build exceed build.max_dependency_bytes ({} bytes) at dependency \
                     \"{component}\" (file {:?}, {size} bytes; files count at their declared size, sparse ones \
                     holes included): depend on less, or raise the setting",
                    limits.max_bytes,
                    path.display(),
                ));
                return Err(std::io::Error::other("the dependencies exceed their byte cap"));
            }
            let mut header = entry.header().clone();
            header.set_uid(owner.0);
            header.set_gid(owner.1);
            // Only the permission bits: a setuid file would run as its owner in the build container.
            header.set_mode(header.mode()? & 0o777);
            // What is written: a PAX size record may override the header's.
            header.set_size(entry.size());
            builder.append_data(&mut header, root.join(path), entry)
        });
        if let Some(why) = over_cap.take() {
            return Err(ArchiveError::TooLarge(why));
        }
        packed?;
    }
    directory(&mut builder, Path::new(output.trim_start_matches('/')), owner)?;
    builder.into_inner()?.into_inner().map_err(|err| err.into_error())?;
    Ok(())
}

/// Appends a directory's contents (but `.git`) under `inside`, links as links.
fn append_tree(
    builder: &mut tar::Builder<impl std::io::Write>,
    dir: &Path,
    inside: &Path,
    owner: (u64, u64),
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let (path, name) = (entry.path(), inside.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        if meta.file_type().is_symlink() {
            builder.append_link(&mut header, &name, std::fs::read_link(&path)?)?;
        } else if meta.is_dir() {
            builder.append_data(&mut header, &name, std::io::empty())?;
            append_tree(builder, &path, &name, owner)?;
        } else if meta.is_file() {
            builder.append_data(&mut header, &name, std::fs::File::open(&path)?)?;
        }
    }
    Ok(())
}

fn directory(builder: &mut tar::Builder<impl std::io::Write>, path: &Path, owner: (u64, u64)) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_uid(owner.0);
    header.set_gid(owner.1);
    builder.append_data(&mut header, path, std::io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_entries: 1000 };

    /// A dependency's tarball in `dir`: (path, mode, bytes) files, written as a component's output is.
    fn dependency(dir: &Path, name: &str, files: &[(&str, u32, u64)]) -> (ComponentName, PathBuf) {
        let path = dir.join(format!("{name}.tar"));
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for &(file, mode, size) in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(mode);
            header.set_size(size);
            if file.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, file, std::io::empty()).unwrap();
            } else {
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, file, std::io::Read::take(std::io::repeat(0), size)).unwrap();
            }
        }
        builder.finish().unwrap();
        (ComponentName::parse(name).unwrap(), path)
    }

    fn pack(dir: &Path, dependencies: &[(ComponentName, PathBuf)]) -> Result<Vec<(String, u32)>, ArchiveError> {
        let checkout = dir.join("checkout");
        std::fs::create_dir_all(&checkout).unwrap();
        let dest = dir.join("inputs.tar");
        pack_inputs(&checkout, dependencies, "/out", LIMITS, (65534, 65534), &dest)?;
        let mut archive = tar::Archive::new(std::fs::File::open(&dest).unwrap());
        let entries = archive.entries().unwrap().map(|entry| {
            let entry = entry.unwrap();
            (entry.path().unwrap().display().to_string(), entry.header().mode().unwrap())
        });
        Ok(entries.collect())
    }

    /// A setuid file in a dependency would be setuid in the build container: the special bits are dropped.
    #[test]
    fn dependencies_lose_setuid_setgid_and_sticky_bits() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dependency(
            dir.path(),
            "lib",
            &[("bin/", 0o3777, 0), ("bin/su", 0o4755, 16), ("bin/group", 0o2750, 16), ("plain", 0o640, 16)],
        );
        let packed = pack(dir.path(), &[lib]).unwrap();
        let mode = |path: &str| packed.iter().find(|(p, _)| p.trim_end_matches('/') == path).map(|(_, m)| *m);
        assert_eq!(mode("deps/lib/bin"), Some(0o777));
        assert_eq!(mode("deps/lib/bin/su"), Some(0o755));
        assert_eq!(mode("deps/lib/bin/group"), Some(0o750));
        assert_eq!(mode("deps/lib/plain"), Some(0o640));
    }

    /// Each dependency within the cap, together past it: the build's dependencies are capped as a whole,
    /// every file counted at the size it declares (a sparse file stored whole counts its holes).
    #[test]
    fn dependencies_together_stay_within_the_build_cap() {
        let dir = tempfile::tempdir().unwrap();
        let a = dependency(dir.path(), "a", &[("zeros", 0o644, 600 << 10)]);
        let b = dependency(dir.path(), "b", &[("zeros", 0o644, 600 << 10)]);
        assert!(pack(dir.path(), std::slice::from_ref(&a)).is_ok());
        let refused = pack(dir.path(), &[a, b]);
        let Err(ArchiveError::TooLarge(why)) = refused else { panic!("two dependencies past the cap: {refused:?}") };
        assert!(why.contains("build.max_dependency_bytes") && why.contains(&LIMITS.max_bytes.to_string()), "{why}");
        assert!(why.contains("\"b\""), "the message names the dependency that went past the cap: {why}");
    }
}
