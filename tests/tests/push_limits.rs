//! Push events carry their sender's limits (issue 27, item 4): a key limited to `team-a*` published NATS
//! push events for another team's repository with made-up commit ids, and each one rebuilt the other
//! team's component, the record carrying the made-up commit. A raw NATS client, connected as the key's
//! own NATS user, replays that on real nats-server, git and Docker engine.

use std::time::Duration;

use serde_json::{json, Value};

use artifacts_tests::{
    allow_local_repositories, connect_as_key, key_header, manifest, require_docker, unique_name as name, GitRepo,
    TestApp,
};

/// Publishes a push event as a CI system holding `key` would, and checks it was accepted.
async fn push(client: &async_nats::Client, key: &str, repository: &str, git_ref: &str, after: &str) {
    let event = json!({"repository": repository, "ref": git_ref, "after": after});
    let answer = client
        .request_with_headers("artifacts.git.push", key_header(key), event.to_string().into())
        .await
        .expect("the push endpoint answers");
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
}

/// Waits until the git trigger has taken every push event from its stream, and the builds the pushes
/// queued have ended.
async fn pushes_handled(app: &TestApp, components: &[&str]) {
    let mut handled = false;
    for _ in 0..600 {
        // JetStream may answer nothing for a moment while nats-server reloads its users (issue 27, item 9).
        let info = async {
            let stream = app.nats.jetstream.get_stream("ARTIFACTS_PUSH").await.ok()?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer("git-trigger").await.ok()?;
            consumer.info().await.ok().cloned()
        }
        .await;
        if info.is_some_and(|i| i.num_pending == 0 && i.num_ack_pending == 0 && i.delivered.stream_sequence > 0) {
            handled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(handled, "the git trigger did not handle the pushes within 60 s");
    for component in components {
        for _ in 0..1200 {
            let builds = app.triggered_builds(component).await;
            if builds.iter().all(|b| matches!(b["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_keys_push_events_rebuild_only_its_components_at_the_commit_the_ref_names() {
    require_docker().await;
    let app = TestApp::spawn_with_nats_users(allow_local_repositories).await;
    let (victim, own) = (name("victim-lib"), name("team-a-lib"));
    let (victim_repo, own_repo) = (GitRepo::new().await, GitRepo::new().await);
    victim_repo.commit_and_tag(&[("artifact.toml", &manifest("echo victim > /out/v", &[]), false)], "v1").await;
    own_repo.commit_and_tag(&[("artifact.toml", &manifest("echo own > /out/v", &[]), false)], "v1").await;
    app.build_component(&victim_repo.url(), &victim, "main").await;
    let first = app.build_component(&own_repo.url(), &own, "main").await;
    // The victim's branch has moved: a push from someone who may build it would rebuild it.
    victim_repo.commit_and_tag(&[("artifact.toml", &manifest("echo victim2 > /out/v", &[]), false)], "v2").await;

    let (secret, key_id) =
        app.create_key(json!({"name": "team-a", "scopes": ["build"], "components": ["team-a*"]})).await;
    let (client, _) = connect_as_key(&app.nats_server.address(), &key_id, &secret).await;

    // The attack: three events for the other team's repository, with made-up commits.
    for made_up in ["1", "2", "3"] {
        push(&client, &secret, &victim_repo.url(), "refs/heads/main", &made_up.repeat(40)).await;
    }
    // And three for its own repository, whose branch has not moved, with made-up commits.
    for made_up in ["4", "5", "6"] {
        push(&client, &secret, &own_repo.url(), "refs/heads/main", &made_up.repeat(40)).await;
    }
    pushes_handled(&app, &[&victim, &own]).await;
    let victims = app.triggered_builds(&victim).await;
    assert!(victims.is_empty(), "a key limited to team-a* rebuilt {victim}: {victims:#?}");
    let owns = app.triggered_builds(&own).await;
    assert!(owns.is_empty(), "made-up commits of an unmoved branch rebuilt {own}: {owns:#?}");

    // Its own branch moves: an event (even one naming a made-up commit) builds the commit the ref names,
    // once, and the record says which.
    own_repo.commit_and_tag(&[("artifact.toml", &manifest("echo own2 > /out/v", &[]), false)], "v2").await;
    let head = own_repo.head().await;
    assert_ne!(head, first["result"]["commit"].as_str().unwrap());
    push(&client, &secret, &own_repo.url(), "refs/heads/main", &"7".repeat(40)).await;
    pushes_handled(&app, &[&own]).await;
    push(&client, &secret, &own_repo.url(), "refs/heads/main", &head).await;
    push(&client, &secret, &own_repo.url(), "refs/heads/main", &"8".repeat(40)).await;
    pushes_handled(&app, &[&own]).await;
    let owns = app.triggered_builds(&own).await;
    assert_eq!(owns.len(), 1, "one build of the new commit, however many events name it: {owns:#?}");
    assert_eq!(owns[0]["status"], "succeeded", "{owns:#?}");
    assert_eq!(owns[0]["request"]["trigger"]["commit"], head.as_str(), "the record names the real commit");
    assert_eq!(owns[0]["result"]["commit"], head.as_str(), "it built the commit the ref names");
    assert_eq!(owns[0]["request"]["trigger"]["apiKeyId"], key_id.as_str());

    // The admin key is not limited: its event rebuilds the victim's component at its real commit.
    let victim_head = victim_repo.head().await;
    app.publish_push(&json!({"repository": victim_repo.url(), "ref": "refs/heads/main", "after": "9".repeat(40)}))
        .await;
    pushes_handled(&app, &[&victim]).await;
    let victims = app.triggered_builds(&victim).await;
    assert_eq!(victims.len(), 1, "{victims:#?}");
    assert_eq!(victims[0]["status"], "succeeded", "{victims:#?}");
    assert_eq!(victims[0]["request"]["trigger"]["commit"], victim_head.as_str());
    assert_eq!(victims[0]["result"]["commit"], victim_head.as_str());
}
