//! A lost NATS node is a blip: on the 3-node cluster, the node every process of the stack is connected to
//! is killed (SIGKILL, as a host that loses power) ten times during builds, and started again after each
//! kill. Lookups run all along; a lookup in flight when its connection dies is sent again on the next node
//! at once (`artifacts_runtime::service::call`), so none waits more than 2 s and every one answers right,
//! with the gateway's request timeout at its default 10 s. Every build submitted meanwhile succeeds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use artifacts_tests::cluster::{cluster_app_with, finished, submit, worker};
use artifacts_tests::ADMIN_KEY;

const KILLS: usize = 10;
const READERS: usize = 4;
const LOOKUP_LIMIT: Duration = Duration::from_secs(2);

/// One lookup: how long it took and how it ended (`None`: answered right).
type Asked = (Duration, Option<String>);

#[tokio::test]
async fn killing_the_connected_node_ten_times_pauses_no_lookup_over_2_s_and_answers_every_one_right() {
    let (mut app, _registry) = cluster_app_with(|settings| settings.nats.request_timeout_secs = 10).await;
    let _worker = worker(&app, None, "amd64").await;
    let run = std::process::id();
    let component = format!("nodeloss-{run}");
    let stored = app.store_component(&component, "v1", "https://example.com/x.git", &[], true).await;
    let build_id = stored.build_id.to_string();

    // Readers, each one lookup after another.
    let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (http, url, asked, stop, build_id) = (
            app.http.clone(),
            app.url(&format!("/api/v1/components?component={component}&tag=v1&architecture=amd64")),
            Arc::clone(&asked),
            stop.clone(),
            build_id.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let started = Instant::now();
                let answer = http.get(&url).bearer_auth(ADMIN_KEY).timeout(Duration::from_secs(15)).send().await;
                let wrong = match answer {
                    Ok(answer) if answer.status() == 200 => {
                        let body: Value = answer.json().await.unwrap_or_default();
                        (body["status"] != "found" || body["buildId"] != build_id.as_str())
                            .then(|| format!("200 but {body}"))
                    }
                    Ok(answer) => Some(format!("{}: {}", answer.status(), answer.text().await.unwrap_or_default())),
                    Err(err) => Some(format!("no answer: {err}")),
                };
                asked.lock().unwrap().push((started.elapsed(), wrong));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    let mut builds = Vec::new();
    let mut killed = Vec::new();
    for kill in 0..KILLS {
        // Builds in hand: each kill lands while one runs.
        let name = format!("nodeloss{kill}-{run}");
        builds.push(submit(&app, &name, &format!("FROM busybox\nRUN sleep 2 && echo {name} > /x\n"), "amd64").await);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The node the stack's processes are on: they all list the nodes in one order and take the first
        // that answers, as the test's own connection does.
        let connected = app.nats.client.server_info().server_name;
        let node = app.nodes_mut().find(|node| node.name() == connected).expect("connected to one of the nodes");
        node.stop().await;
        killed.push(connected.clone());
        // Down long enough for every process to move to another node, then back, as an operator's
        // supervisor would start it; the next kill waits until it has caught up.
        tokio::time::sleep(Duration::from_secs(2)).await;
        node.restart().await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_ne!(app.nats.client.server_info().server_name, connected, "the stack left node {connected}");
    }
    stop.cancel();
    for reader in readers {
        reader.await.unwrap();
    }
    for build_id in &builds {
        let record = finished(&app, build_id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }

    // What was sent again, and why (every process of the test counts into one recorder).
    let metrics = app.http.get(app.url("/metrics")).bearer_auth(ADMIN_KEY).send().await.unwrap().text().await.unwrap();
    for line in metrics.lines().filter(|line| line.starts_with("artifacts_nats_requests_resent_total")) {
        println!("{line}");
    }
    let asked = asked.lock().unwrap();
    let longest = asked.iter().map(|(took, _)| *took).max().unwrap_or_default();
    let over: Vec<_> = asked.iter().filter(|(took, _)| *took > LOOKUP_LIMIT).collect();
    let wrong: Vec<_> = asked.iter().filter_map(|(_, wrong)| wrong.as_ref()).collect();
    println!(
        "{KILLS} kills of the connected node ({}): {} lookups, longest {:.2} s, {} over {LOOKUP_LIMIT:?}, {} not right; {} builds succeeded",
        killed.join(", "),
        asked.len(),
        longest.as_secs_f64(),
        over.len(),
        wrong.len(),
        builds.len()
    );
    assert!(wrong.is_empty(), "lookups not answered right: {wrong:?}");
    assert!(over.is_empty(), "lookups that waited over {LOOKUP_LIMIT:?}: {over:?}");
    assert!(asked.len() > 100, "lookups answered: {}", asked.len());
}

/// The other ways a request loses its answer, on one server, against stand-in functions under a prefix
/// of their own: a function process that died with the request in hand (a point read is sent a second
/// time after 2 s and another instance answers), and one that is starting (a request that reached no
/// one is sent again until it does, for 3 s at most, then answers 503).
#[tokio::test]
async fn a_read_lost_with_its_function_is_answered_by_another_and_one_that_reached_no_one_is_sent_again() {
    use artifacts_runtime::service::{self, Reply};
    use artifacts_schemas::Endpoint;
    use futures::StreamExt as _;

    let server = artifacts_tests::NatsServer::start().await;
    let mut settings = artifacts_tests::test_settings(&server.url());
    settings.nats.prefix = format!("resend{}", std::process::id());
    settings.nats.request_timeout_secs = 10;
    let nats = artifacts_runtime::nats::connect(&settings, "test-resend").await.expect("NATS connects");
    // Answers the handle of the task that serves `subject`, once it is subscribed.
    #[allow(clippy::async_yields_async)]
    let answering = |subject: String| {
        let client = nats.client.clone();
        async move {
            let mut requests = client.queue_subscribe(subject, "q".into()).await.unwrap();
            client.flush().await.unwrap();
            tokio::spawn(async move {
                while let Some(request) = requests.next().await {
                    client.publish(request.reply.unwrap(), "{\"live\":true}".into()).await.unwrap();
                }
            })
        }
    };
    let call = |endpoint: Endpoint| {
        let nats = nats.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply: Reply = service::call(&nats, endpoint, Default::default(), "{}".into()).await;
            (reply, started.elapsed())
        })
    };

    // Taken by an instance that dies with it; another serves the endpoint.
    let subject = nats.subjects.endpoint(Endpoint::ImageGet);
    let mut dying = nats.client.queue_subscribe(subject.clone(), "q".into()).await.unwrap();
    nats.client.flush().await.unwrap();
    let asked = call(Endpoint::ImageGet);
    dying.next().await.expect("the first instance takes the request");
    dying.unsubscribe().await.unwrap();
    let live = answering(subject).await;
    let (reply, took) = asked.await.unwrap();
    println!("a read whose function died with it: {} after {:.2} s", reply.code, took.as_secs_f64());
    assert_eq!(reply.code, 200, "{reply:?}");
    assert!(took >= service::HEDGE_AFTER && took < Duration::from_secs(3), "{took:?}");
    live.abort();

    // Nobody serves it yet; a process starts a second later. Even a delete: it reached no one.
    let subject = nats.subjects.endpoint(Endpoint::ImageDelete);
    let asked = call(Endpoint::ImageDelete);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live = answering(subject).await;
    let (reply, took) = asked.await.unwrap();
    println!("a request that reached no one for 1 s: {} after {:.2} s", reply.code, took.as_secs_f64());
    assert_eq!(reply.code, 200, "{reply:?}");
    assert!(took < Duration::from_millis(1600), "{took:?}");
    live.abort();

    // Nobody at all: a clean 503 once the wait is over, not at the request timeout.
    let (reply, took) = call(Endpoint::ComponentDelete).await.unwrap();
    println!("a request nobody serves: {} after {:.2} s", reply.code, took.as_secs_f64());
    assert_eq!(reply.code, 503, "{reply:?}");
    assert!(String::from_utf8_lossy(&reply.body).contains("no service answers"), "{reply:?}");
    assert!(took <= service::NO_RESPONDERS_WAIT && took > Duration::from_secs(2), "{took:?}");
}
