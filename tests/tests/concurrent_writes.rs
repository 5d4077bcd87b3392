//! Compare-and-sets of one key on a 3-node cluster. nats-server before 2.9.21 (Debian ships 2.9.10)
//! checks a replicated write's expected revision before replicating it, not as part of it
//! (nats-server#4320), so compare-and-sets of one key sent at the same moment can all succeed and all but
//! the last change are lost: 1,000 submissions at once through one build function left 587 to 694 ids
//! out of the list of every build (`bench-submissions`). The store's writers of one key take turns
//! within a process (`functions/store/src/access.rs`).

use std::collections::BTreeSet;

use artifacts_schemas::{BuildKind, BuildStatus};
use artifacts_store::List;
use artifacts_tests::TestApp;
use serde_json::Value;

const BUILDS: usize = 400;

#[tokio::test]
async fn builds_recorded_at_once_on_a_cluster_are_all_listed() {
    let app = TestApp::spawn_on_cluster(|_| {}).await;
    let version = app.nats.client.server_info().version;
    let components: Vec<String> = (0..BUILDS).map(|n| format!("concurrent-{n}")).collect();
    let recorded = futures::future::join_all(
        components.iter().map(|component| app.store_build(BuildKind::Image, BuildStatus::Queued, component)),
    )
    .await;
    let recorded: BTreeSet<String> = recorded.iter().map(|id| id.as_str().to_owned()).collect();
    assert_eq!(recorded.len(), BUILDS);

    let mut walk = app.nats.store.walk_builds(List::All, None).await.unwrap();
    let mut indexed = Vec::new();
    while let Some(id) = walk.next().await.unwrap() {
        indexed.push(id);
    }
    let missing = recorded.iter().filter(|id| !indexed.contains(id)).count();
    println!("nats-server {version}: {BUILDS} builds recorded at once, {missing} missing from the index");
    assert_eq!(missing, 0, "every build recorded is in the list of every build (nats-server {version})");
    assert_eq!(indexed.len(), BUILDS, "and each once");

    // The same through the listing, a page at a time, newest first.
    let (mut listed, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let query = cursor.as_ref().map_or(String::new(), |cursor| format!("&cursor={cursor}"));
        let page: Value = app.get(&format!("/api/v1/builds?limit=100{query}")).await.json().await.unwrap();
        let ids = page["builds"].as_array().unwrap().iter().map(|b| b["buildId"].as_str().unwrap().to_owned());
        listed.extend(ids);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed.iter().collect::<BTreeSet<_>>().len(), BUILDS, "every build listed once");
    let mut newest_first = listed.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, newest_first, "newest first across the shards");
}
