//! Issue 15: the `artifacts` client, as a person or a script runs it: the real binary against a real
//! stack (NATS, Docker, registry, git). Before, it had `up` and `keys` only.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use artifacts_tests::{
    allow_local_repositories, manifest, require_docker, unique_name, workspace_binary, GitRepo, Registry, TestApp,
    ADMIN_KEY,
};

/// The CLI as a user with a home of their own (`XDG_CONFIG_HOME`) runs it.
struct Cli {
    home: tempfile::TempDir,
    url: String,
}

impl Cli {
    async fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut command = Command::new(workspace_binary("artifacts"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .current_dir(self.home.path())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the artifacts binary runs");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("the command ends")
            .expect("its output")
    }

    /// Runs a command that must succeed and answers its `--json` output.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.run(&all, &[], None).await;
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("{args:?}: not JSON ({err}): {}", String::from_utf8_lossy(&output.stdout)))
    }
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn every_command_works_against_a_real_stack() {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|settings| {
        settings.registry.address = address;
        allow_local_repositories(settings);
    })
    .await;
    let cli = Cli { home: tempfile::tempdir().unwrap(), url: app.url("") };

    // Not logged in: a usage hint, exit 1; a bad argument: exit 2.
    let output = cli.run(&["whoami"], &[], None).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("artifacts login"), "{}", text(&output).1);
    assert_eq!(cli.run(&["builds", "ls", "--limit", "many"], &[], None).await.status.code(), Some(2));

    // login reads the key from standard input and saves it for its owner only.
    let output = cli.run(&["login", &cli.url], &[], Some(&format!("{ADMIN_KEY}\n"))).await;
    assert!(output.status.success(), "{:?}", text(&output));
    let saved = cli.home.path().join("config/artifacts/login.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(cli.json(&["whoami"]).await["keyId"], "admin");

    // A read key limited to one component: whoami shows its patterns; a build is refused saying why.
    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"], "components": ["cli-*"]})).await;
    let output = cli.run(&["whoami"], &[("ARTIFACTS_KEY", &reader)], None).await;
    assert!(text(&output).0.contains("cli-*"), "{:?}", text(&output));
    let output = cli.run(&["gc"], &[("ARTIFACTS_KEY", &reader)], None).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("artifacts whoami"),
        "a 403 says how to see the key's rights: {:?}",
        text(&output)
    );
    let output = cli.run(&["whoami"], &[("ARTIFACTS_KEY", "ak_0000000000000000_wrong")], None).await;
    assert!(text(&output).1.contains("artifacts login"), "a 401 says how to log in: {:?}", text(&output));

    // image build: the context honours .dockerignore, the log streams, the exit status is the build's.
    let context = cli.home.path().join("context");
    std::fs::create_dir_all(context.join("sub")).unwrap();
    std::fs::write(context.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(context.join("secret.txt"), "not for the image\n").unwrap();
    std::fs::write(context.join("sub/keep.txt"), "kept\n").unwrap();
    std::fs::write(context.join(".dockerignore"), "secret.txt\n").unwrap();
    // Packed whole: a file over several upload chunks whose size is no multiple of tar's blocks, a path
    // longer than a tar header holds, a symbolic link.
    std::fs::write(context.join("big.bin"), vec![7u8; 2_500_001]).unwrap();
    let long = format!("sub/{}", "d".repeat(120));
    std::fs::create_dir_all(context.join(&long)).unwrap();
    std::fs::write(context.join(&long).join("deep.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("hello.txt", context.join("link.txt")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM busybox\nARG WORD\nCOPY . /ctx\nRUN test ! -e /ctx/secret.txt && test -e /ctx/sub/keep.txt \
             && test \"$(wc -c < /ctx/big.bin)\" -eq 2500001 && grep -q deep /ctx/{long}/deep.txt \
             && test \"$(readlink /ctx/link.txt)\" = hello.txt && echo \"word=$WORD\"\n"
        ),
    )
    .unwrap();
    let image = unique_name("cli-image");
    let context_arg = context.to_str().unwrap();
    let args = ["image", "build", context_arg, "--component", &image, "--branch", "main", "--build-arg", "WORD=bird"];
    let output = cli.run(&args, &[], None).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("word=bird"), "the log streamed: {stdout}");
    assert!(stdout.contains("succeeded"), "{stdout}");

    std::fs::write(context.join("Dockerfile.bad"), "FROM busybox\nRUN echo going-down && exit 3\n").unwrap();
    let bad = context.join("Dockerfile.bad");
    let args = ["image", "build", context_arg, "-f", bad.to_str().unwrap(), "--component", &image, "--branch", "bad"];
    let output = cli.run(&args, &[], None).await;
    assert_eq!(output.status.code(), Some(1), "a failing build exits 1: {:?}", text(&output));
    assert!(text(&output).1.contains("non-zero code: 3"), "and says why: {:?}", text(&output));

    let found = cli.json(&["image", "get", &image, "--branch", "main"]).await;
    assert_eq!(found["status"], "found");
    assert!(found["pullCommand"].as_str().unwrap().starts_with("docker pull "), "{found}");
    let listed = cli.json(&["image", "ls", &image]).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // component build, get (file, extract, resume, digest mismatch), ls.
    let repo = GitRepo::new().await;
    let recipe = manifest("mkdir -p /out/bin && echo hi > /out/bin/hi && head -c 300000 /dev/urandom > /out/blob", &[]);
    repo.commit_and_tag(&[("artifact.toml", &recipe, false)], "v1").await;
    let component = unique_name("cli-lib");
    let output =
        cli.run(&["component", "build", &repo.url(), "--component", &component, "--tag", "v1"], &[], None).await;
    assert!(output.status.success(), "{:?}", text(&output));
    let reference = format!("{component}@v1");
    let archive = cli.home.path().join("lib.tar.gz");
    let got = cli.json(&["component", "get", &reference, "-o", archive.to_str().unwrap()]).await;
    let whole = std::fs::read(&archive).unwrap();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&whole)));
    assert_eq!(got["digest"], digest.as_str());

    // An interrupted download: the first part is on disk; the next run asks for the rest (Range).
    let resumed = cli.home.path().join("resumed.tar.gz");
    std::fs::write(format!("{}.part", resumed.display()), &whole[..whole.len() / 3]).unwrap();
    let got = cli.json(&["component", "get", &reference, "-o", resumed.to_str().unwrap()]).await;
    assert_eq!(std::fs::read(&resumed).unwrap(), whole, "{got}");
    assert_eq!(got["resumedFrom"], whole.len() / 3, "only the rest was asked for: {got}");
    assert!(!Path::new(&format!("{}.part", resumed.display())).exists());

    // A part of other bytes makes the whole a different digest: refused, nothing kept.
    let corrupt = cli.home.path().join("corrupt.tar.gz");
    std::fs::write(format!("{}.part", corrupt.display()), vec![0u8; 1000]).unwrap();
    let output = cli.run(&["component", "get", &reference, "-o", corrupt.to_str().unwrap()], &[], None).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("digest mismatch"), "{:?}", text(&output));
    assert!(!corrupt.exists() && !Path::new(&format!("{}.part", corrupt.display())).exists());

    let extracted = cli.home.path().join("extracted");
    cli.json(&["component", "get", &reference, "-x", extracted.to_str().unwrap()]).await;
    assert_eq!(std::fs::read_to_string(extracted.join("bin/hi")).unwrap(), "hi\n");
    let listed = cli.json(&["component", "ls", &component]).await;
    assert_eq!(listed["items"][0]["tag"], "v1", "{listed}");

    // builds ls, show, logs, cancel; gc.
    let builds = cli.json(&["builds", "ls", "--component", &image]).await;
    let ids: Vec<&str> = builds["builds"].as_array().unwrap().iter().map(|b| b["buildId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{builds}");
    let shown = cli.json(&["builds", "show", ids[1]]).await;
    assert_eq!(shown["status"], "succeeded");
    let output = cli.run(&["builds", "logs", ids[1]], &[], None).await;
    assert!(text(&output).0.contains("word=bird"), "{:?}", text(&output));
    repo.commit_and_tag(&[("artifact.toml", &manifest("sleep 60", &[]), false)], "slow").await;
    let accepted = cli
        .json(&[
            "component",
            "build",
            &repo.url(),
            "--component",
            &unique_name("cli-slow"),
            "--tag",
            "slow",
            "--detach",
        ])
        .await;
    let slow = accepted["buildId"].as_str().unwrap();
    let cancelled = cli.json(&["builds", "cancel", slow]).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let report = cli.json(&["gc", "--dry-run"]).await;
    assert_eq!(report["dryRun"], true, "{report}");

    let output = cli.run(&["completions", "bash"], &[], None).await;
    assert!(output.status.success() && text(&output).0.contains("_artifacts"), "{:?}", text(&output));
}

/// A download killed half-way leaves its `.part`; the same command then asks for the rest only.
#[tokio::test]
async fn a_download_killed_half_way_resumes_where_it_stopped() {
    let app = TestApp::spawn().await;
    let payload = artifacts_tests::noise(48 << 20, 5);
    let record = app.store_archive("cli-big", "v1", &payload).await;
    let cli = Cli { home: tempfile::tempdir().unwrap(), url: app.url("") };
    let file = cli.home.path().join("big.tar.gz");
    let part = std::path::PathBuf::from(format!("{}.part", file.display()));
    let env = [("ARTIFACTS_URL", cli.url.as_str()), ("ARTIFACTS_KEY", ADMIN_KEY)];
    let mut child = Command::new(workspace_binary("artifacts"))
        .args(["component", "get", "cli-big@v1", "-o"])
        .arg(&file)
        .envs(env)
        .env("XDG_CONFIG_HOME", cli.home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut at_kill = 0;
    for _ in 0..3000 {
        at_kill = std::fs::metadata(&part).map_or(0, |m| m.len());
        if at_kill > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().await.unwrap();
    let left = std::fs::metadata(&part).map_or(0, |m| m.len());
    assert!(left > 0 && left < record.size, "killed half-way: {left} of {} bytes on disk", record.size);
    let output = cli.run(&["component", "get", "cli-big@v1", "-o", file.to_str().unwrap(), "--json"], &env, None).await;
    assert!(output.status.success(), "{:?}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["resumedFrom"], left, "it asked for the rest only ({at_kill} bytes seen at the kill)");
    assert_eq!(std::fs::read(&file).unwrap(), payload, "the resumed file is whole");
    assert!(!part.exists());
}

/// The archive route answers ranges, so downloads resume (issue 15).
#[tokio::test]
async fn the_archive_route_answers_a_range_and_refuses_one_past_the_end() {
    let app = TestApp::spawn().await;
    let payload: Vec<u8> = (0..10_000u32).flat_map(|n| n.to_le_bytes()).collect();
    let record = app.store_archive("ranged", "v1", &payload).await;
    let url = app.url("/api/v1/components/ranged/v1/amd64/archive");
    let answer = app.http.get(&url).bearer_auth(ADMIN_KEY).header("Range", "bytes=1000-").send().await.unwrap();
    assert_eq!(answer.status(), 206);
    assert_eq!(
        answer.headers()["content-range"],
        format!("bytes 1000-{}/{}", payload.len() - 1, payload.len()).as_str()
    );
    assert_eq!(answer.bytes().await.unwrap().as_ref(), &payload[1000..]);
    let etag = format!("\"{}\"", record.digest);
    let other_version = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_KEY)
        .header("Range", "bytes=1000-")
        .header("If-Range", "\"sha256:other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other_version.status(), 200, "If-Range of another version: the whole archive");
    let same = app.http.get(&url).bearer_auth(ADMIN_KEY).header("Range", "bytes=0-9").header("If-Range", etag).send();
    assert_eq!(same.await.unwrap().bytes().await.unwrap().as_ref(), &payload[..10]);
    let past = app.http.get(&url).bearer_auth(ADMIN_KEY).header("Range", "bytes=999999-").send().await.unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], format!("bytes */{}", payload.len()).as_str());
    let body: Value = past.json().await.unwrap();
    assert!(body["errorMessage"].as_str().unwrap().contains("bytes=N-"), "{body}");
}
