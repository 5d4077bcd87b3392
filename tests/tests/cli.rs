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
    let why = text(&output).1;
    assert!(why.contains("non-zero code: 3") || why.contains("exit code: 3"), "and says why: {why}");

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

/// Issue 29: the client as people know `gh` and `gcloud`. Each test here failed before.
mod first_hour {
    use super::*;
    use artifacts_schemas::{BuildKind, BuildStatus};

    async fn logged_in(app: &TestApp) -> Cli {
        let cli = Cli { home: tempfile::tempdir().unwrap(), url: app.url("") };
        let output = cli.run(&["login", &cli.url], &[], Some(&format!("{ADMIN_KEY}\n"))).await;
        assert!(output.status.success(), "{:?}", text(&output));
        cli
    }

    /// `keys` used to ignore the saved login (`no admin key: pass --admin-key`), print JSON on a
    /// terminal, and take `.../api/v1` as `--url` where `login` takes the gateway's root.
    #[tokio::test]
    async fn keys_use_the_saved_login_print_tables_and_take_the_gateway_root() {
        let app = TestApp::spawn().await;
        let cli = logged_in(&app).await;
        let output = cli.run(&["keys", "create", "--name", "first-hour", "--scope", "read"], &[], None).await;
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "keys create with the saved login: {stdout}\n{stderr}");
        let secret = stdout.trim();
        assert!(secret.starts_with("ak_") && !secret.contains('{'), "the secret alone, not JSON: {stdout}");
        assert!(stderr.contains("shown this once"), "{stderr}");

        let output = cli.run(&["keys", "list"], &[], None).await;
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        let heading = stdout.lines().next().unwrap_or_default();
        assert!(heading.starts_with("KEY") && heading.contains("NAME") && heading.contains("SCOPES"), "{stdout}");
        assert!(stdout.lines().any(|line| line.contains("first-hour") && line.contains("read")), "{stdout}");
        serde_json::from_str::<Value>(&stdout).expect_err("a table, not JSON");

        // --json, and --url as the gateway's root or its API base.
        for url in [cli.url.clone(), format!("{}/api/v1", cli.url), format!("{}/", cli.url)] {
            let listed = cli.json(&["keys", "list", "--url", &url]).await;
            let keys = listed["keys"].as_array().unwrap_or_else(|| panic!("{url}: {listed}"));
            assert!(keys.iter().any(|key| key["name"] == "first-hour"), "{url}: {listed}");
        }
        // ARTIFACTS_URL / ARTIFACTS_KEY override the saved login.
        let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
        let output = cli.run(&["keys", "list"], &[("ARTIFACTS_KEY", &reader)], None).await;
        assert_eq!(output.status.code(), Some(1), "{:?}", text(&output));
        assert!(text(&output).1.contains("may not"), "a read key is refused: {:?}", text(&output));
        let output =
            cli.run(&["keys", "ls", "--json"], &[("ARTIFACTS_URL", &format!("{}/api/v1", cli.url))], None).await;
        assert!(output.status.success(), "ARTIFACTS_URL with /api/v1 names the saved gateway: {:?}", text(&output));
        let id = serde_json::from_slice::<Value>(&output.stdout).unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|key| key["name"] == "reader")
            .map(|key| key["keyId"].as_str().unwrap().to_owned())
            .unwrap();
        let output = cli.run(&["keys", "revoke", &id], &[], None).await;
        assert!(output.status.success() && text(&output).0.contains("revoked"), "{:?}", text(&output));
    }

    /// `artifacts completions bash | head -3` used to panic (broken pipe).
    #[tokio::test]
    async fn a_closed_pipe_ends_the_command_quietly() {
        for args in [&["completions", "bash"][..], &["--help"][..], &["completions", "zsh"][..]] {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let output = std::process::Command::new(workspace_binary("artifacts"))
                .args(args)
                .stdout(writer)
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(stderr.is_empty(), "{args:?}: quietly: {stderr}");
            assert_ne!(output.status.code(), Some(101), "{args:?}");
        }
        // head reads the first lines and goes away; the command ends quietly however far it got.
        let mut shell = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("set -o pipefail; {} completions bash | head -3", workspace_binary("artifacts").display()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = shell.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(shell.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(status.code() == Some(0) || status.code() == Some(141), "{status:?}: {stderr}");
    }

    /// A mistyped command gets "did you mean" (clap's `suggestions`).
    #[tokio::test]
    async fn a_mistyped_command_gets_a_suggestion() {
        let cli = Cli { home: tempfile::tempdir().unwrap(), url: String::new() };
        let output = cli.run(&["buidls", "ls"], &[], None).await;
        assert_eq!(output.status.code(), Some(2));
        assert!(text(&output).1.contains("similar subcommand exists: 'builds'"), "{:?}", text(&output));
        let output = cli.run(&["registry", "logn"], &[], None).await;
        assert!(text(&output).1.contains("'login'"), "{:?}", text(&output));
    }

    /// A build id prefix as the dashboard shows it (`01a24e73-fa27`) used to be refused as "not a build
    /// id"; any unique prefix names its build, an ambiguous one lists the candidates.
    #[tokio::test]
    async fn builds_are_named_by_any_unique_prefix() {
        let app = TestApp::spawn().await;
        let first = app.store_build(BuildKind::Image, BuildStatus::Succeeded, "prefix-a").await;
        let second = app.store_build(BuildKind::Component, BuildStatus::Failed, "prefix-b").await;
        let (first, second) = (first.as_str().to_owned(), second.as_str().to_owned());
        let cli = logged_in(&app).await;
        let common = first.chars().zip(second.chars()).take_while(|(a, b)| a == b).count();
        assert!(common >= 8, "ids of one moment share their time prefix: {first} {second}");

        for id in [&first, &second] {
            let unique = &id[..common + 1];
            let shown = cli.json(&["builds", "show", unique]).await;
            assert_eq!(shown["buildId"], id.as_str(), "{unique}: {shown}");
            let upper = unique.to_uppercase();
            assert_eq!(cli.json(&["builds", "show", &upper]).await["buildId"], id.as_str());
        }
        // The dashboard's 13 characters, when they are unique.
        if first[..13] != second[..13] {
            assert_eq!(cli.json(&["builds", "show", &first[..13]]).await["buildId"], first.as_str());
        }
        // The dashboard shows an id by its end: `…` and the last 8 hex digits.
        for id in [&first, &second] {
            let shown_by_end = format!("…{}", &id[id.len() - 8..]);
            assert_eq!(cli.json(&["builds", "show", &shown_by_end]).await["buildId"], id.as_str(), "{shown_by_end}");
        }
        let output = cli.run(&["builds", "logs", &second[..common + 1]], &[], None).await;
        assert!(!text(&output).1.contains("not a build id"), "{:?}", text(&output));

        let ambiguous = &first[..common];
        let output = cli.run(&["builds", "show", ambiguous], &[], None).await;
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("ambiguous"), "{stderr}");
        assert!(stderr.contains(&first) && stderr.contains(&second), "the candidates are listed: {stderr}");

        let output = cli.run(&["builds", "cancel", "fffffff"], &[], None).await;
        assert_eq!(output.status.code(), Some(1));
        assert!(text(&output).1.contains("no build"), "{:?}", text(&output));
        let output = cli.run(&["builds", "show", "not-hex"], &[], None).await;
        assert!(text(&output).1.contains("not a build id"), "{:?}", text(&output));
    }

    /// A 100 MiB context used to get `413 ... (gateway.max_body_bytes)` with neither the limit nor the
    /// size. The gateway's 413 names both (the size when the request declares it); the client, knowing
    /// the size, refuses before uploading with the same words.
    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_naming_the_limit_and_the_size() {
        let app = TestApp::spawn_with(|settings| settings.gateway.max_body_bytes = 1 << 20).await;
        let form = || {
            reqwest::multipart::Form::new()
                .part("dockerfile", reqwest::multipart::Part::bytes(b"FROM busybox\n".to_vec()).file_name("Dockerfile"))
                .text("component", "too-large")
                .text("branch", "main")
                .text("architecture", "amd64")
                .part("context", reqwest::multipart::Part::bytes(vec![0u8; 3 << 20]).file_name("context.tar"))
        };
        let answer =
            app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).multipart(form()).send().await.unwrap();
        assert_eq!(answer.status(), 413);
        let body: Value = answer.json().await.unwrap();
        let message = body["errorMessage"].as_str().unwrap();
        assert!(message.contains("1048576 bytes (1.0 MiB)"), "the limit: {message}");
        assert!(message.contains("gateway.max_body_bytes"), "{message}");
        let declared = message.split("the request body is ").nth(1).and_then(|rest| rest.split(' ').next());
        let size: u64 = declared.and_then(|size| size.parse().ok()).unwrap_or_else(|| panic!("the size: {message}"));
        assert!(size > 3 << 20, "{message}");

        // Without a declared length: the limit, and that the body is past it.
        let chunks = futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![0u8; 64 << 10])));
        let streamed = reqwest::multipart::Form::new()
            .part("dockerfile", reqwest::multipart::Part::bytes(b"FROM busybox\n".to_vec()).file_name("Dockerfile"))
            .text("component", "too-large")
            .text("branch", "main")
            .text("architecture", "amd64")
            .part("context", reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("c.tar"));
        let answer = app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).multipart(streamed).send().await;
        if let Ok(answer) = answer {
            assert_eq!(answer.status(), 413);
            let body: Value = answer.json().await.unwrap();
            let message = body["errorMessage"].as_str().unwrap();
            assert!(message.contains("larger than the 1048576 bytes (1.0 MiB)"), "{message}");
        }

        // The client refuses before uploading, with the same message.
        let cli = logged_in(&app).await;
        let context = cli.home.path().join("big-context");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(context.join("Dockerfile"), "FROM busybox\nCOPY . /ctx\n").unwrap();
        std::fs::write(context.join("big.bin"), vec![1u8; 2 << 20]).unwrap();
        let args = ["image", "build", context.to_str().unwrap(), "--component", "too-large", "--branch", "main"];
        let output = cli.run(&args, &[], None).await;
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("1048576 bytes (1.0 MiB)") && stderr.contains("gateway.max_body_bytes"), "{stderr}");
        assert!(stderr.contains(" bytes (2.0 MiB)"), "the context's size: {stderr}");
        assert!(!stderr.contains("uploading the context"), "refused before uploading: {stderr}");
    }

    /// There was no `docker login` helper: `artifacts registry login` gives the Docker engine the key for
    /// the registry the gateway names (token authentication, realm the gateway), and `docker pull` works.
    #[tokio::test]
    async fn registry_login_lets_docker_pull() {
        let (app, registry, _signing) = TestApp::spawn_with_token_registry().await;
        let registry_address = registry.address.clone();
        let component = unique_name("cli-pull");
        let body = json!({"dockerfile": "FROM busybox\nRUN echo pulled > /which\n", "component": component,
                          "branch": "main", "architecture": "amd64"});
        let (_, record) = app.post_image("?wait=120", &body).await;
        assert_eq!(record["status"], "succeeded", "{record}");
        let image = record["result"]["imageName"].as_str().unwrap().to_owned();
        let (reader, _) =
            app.create_key(json!({"name": "puller", "scopes": ["read"], "components": [component]})).await;

        let cli = Cli { home: tempfile::tempdir().unwrap(), url: app.url("") };
        let output = cli.run(&["login", &cli.url], &[], Some(&format!("{reader}\n"))).await;
        assert!(output.status.success(), "{:?}", text(&output));
        let docker_env: Vec<(&str, String)> =
            std::env::var("DOCKER_HOST").map(|host| vec![("DOCKER_HOST", host)]).unwrap_or_default();
        let pull = |config: std::path::PathBuf| {
            let image = image.clone();
            let docker_env = docker_env.clone();
            async move {
                let _ = Command::new("docker").args(["rmi", "-f", &image]).output().await;
                let output = Command::new("docker")
                    .env("DOCKER_CONFIG", &config)
                    .envs(docker_env)
                    .args(["pull", &image])
                    .output()
                    .await
                    .unwrap();
                (output.status.success(), format!("{}{}", text(&output).0, text(&output).1))
            }
        };
        let empty = tempfile::tempdir().unwrap();
        let (pulled, said) = pull(empty.path().to_owned()).await;
        assert!(!pulled, "without credentials the registry refuses: {said}");

        for (name, extra) in [("docker-login", None), ("written", Some("--write-config"))] {
            let config = cli.home.path().join(name);
            let config_text = config.to_str().unwrap();
            let mut env: Vec<(&str, &str)> = vec![("DOCKER_CONFIG", config_text)];
            env.extend(docker_env.iter().map(|(name, value)| (*name, value.as_str())));
            let mut args = vec!["registry", "login", "--json"];
            args.extend(extra);
            let output = cli.run(&args, &env, None).await;
            assert!(output.status.success(), "{name}: {:?}", text(&output));
            let report: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(report["registry"], registry_address.as_str(), "{report}");
            assert_eq!(report["tokenAuthentication"], true, "{report}");
            let saved: Value =
                serde_json::from_str(&std::fs::read_to_string(config.join("config.json")).unwrap()).unwrap();
            assert!(saved["auths"][&registry_address].is_object(), "{name}: {saved}");
            assert!(!text(&output).1.contains(&reader), "the key is never shown");
            let (pulled, said) = pull(config).await;
            assert!(pulled, "{name}: docker pull after `artifacts registry login`: {said}");
        }
    }
}
