//! The chaos soak (issue 30) for two minutes: `chaos-soak --minutes 2` starts the stack under
//! `artifacts up`, keeps two clients (HTTP and NATS) submitting unique image and component builds, a
//! pusher sending signed tag-push webhooks and a reader looking up a known image and component, while one
//! process of the stack is killed with SIGKILL every 20 s (build-component, nats-server, gateway,
//! build-image, the registry, lookup); then every accepted build must end. Its figures are asserted here:
//! nothing lost, doubled, stuck or failed, no wrong or timed-out lookup, no corrupt archive, no container
//! left over; a lookup is refused only while the gateway itself is down, under 2 s each time.
//!
//! The ten-minute run's figures are in BENCHMARKS.md ("Faults").

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use artifacts_tests::{require_docker, workspace_binary};

#[tokio::test]
async fn two_minutes_of_kills_lose_nothing() {
    require_docker().await;
    let mut soak = tokio::process::Command::new(workspace_binary("chaos-soak"))
        .args(["--minutes", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("chaos-soak starts");
    let mut lines = BufReader::new(soak.stdout.take().expect("piped")).lines();
    let mut output = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15 * 60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
            output.push(line);
        }
    })
    .await;
    let output = output.join("\n");
    assert!(read.is_ok(), "the soak did not end within 15 minutes:\n{output}");
    let status = soak.wait().await.expect("chaos-soak ends");

    let result: Value = output
        .lines()
        .find_map(|line| line.strip_prefix("chaos-soak result: "))
        .map(|json| serde_json::from_str(json).expect("the result is JSON"))
        .unwrap_or_else(|| panic!("no result line:\n{output}"));
    for zero in [
        "lost",
        "stuck",
        "doubled",
        "failed",
        "rejected",
        "neverAccepted",
        "lookupsWrong",
        "lookupsTimedOut",
        "refusedOutsideGatewayOutage",
        "corrupt",
        "imagesWrong",
        "containersLeft",
        "neverBack",
        "defects",
    ] {
        assert_eq!(result[zero], 0, "{zero}:\n{output}");
    }
    assert!(result["refusedLongestMs"].as_u64().unwrap() < 2000, "refused for 2 s or more:\n{output}");
    // The soak did what it says: kills, builds of each kind, pushes, lookups, archives checked.
    assert!(result["kills"].as_u64().unwrap() >= 6, "{output}");
    assert!(result["accepted"].as_u64().unwrap() >= 20, "{output}");
    assert!(result["pushesBuilt"].as_u64().unwrap() >= 10, "{output}");
    assert!(result["lookupsRight"].as_u64().unwrap() >= 500, "{output}");
    assert!(result["archivesChecked"].as_u64().unwrap() >= 10, "{output}");
    assert!(status.success(), "chaos-soak exited with {status}:\n{output}");
}
