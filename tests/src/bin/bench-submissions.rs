//! Benchmark: N concurrent submissions of distinct image builds through the gateway on a 3-node NATS
//! cluster (every stream, bucket and object store with 3 replicas), against N concurrent raw JetStream
//! publishes of the same count, in one run on one cluster:
//!
//! 1. N image builds (distinct Dockerfiles `FROM scratch` + `LABEL n=<i>`, distinct components
//!    `bench-sub-<i>`, so that no per-build or per-component key is shared) are posted to
//!    `POST /api/v1/images` all at once (one HTTP client, N requests in flight); each request's latency
//!    and the wall time of the whole are measured. Accepted: 202 with a build id; refused: any other
//!    answer (the first few bodies are printed, and every refusal counted by status and message).
//! 2. Nothing lost: every accepted id must have its record (`GET /api/v1/builds/{id}` 200), and walking
//!    the listing (`GET /api/v1/builds?limit=100`, following `nextCursor`) must find every accepted id
//!    once; builds listed twice, components with two builds, and builds recorded for a submission that
//!    was answered with a refusal are counted too.
//! 3. The raw baseline: N concurrent JetStream publishes of a ~1 KiB payload to a stream of the
//!    benchmark's own (3 replicas, file storage) on the same cluster, each awaiting its ack, over the
//!    stack's own kind of NATS connection (the `service` user, every node's URL).
//!
//! The stack is `cluster_app_without_engine`'s (3-node cluster, `nats.request_timeout_secs = 5`,
//! `build.ack_wait_secs = 3`, a registry of its own; no Docker engine, which nothing here uses); the
//! rate limit is off (`gateway.rate_limit_per_minute = 0`).
//!
//! The builder. A submission is answered by the build-image function (`<prefix>.image.build`), and
//! `ensure_buildable` accepts an architecture that the answering process's own `build.architectures`
//! holds, so one build-image process runs, as `worker_with` starts it, building `amd64` with
//! `build.slots = 1`. Its Docker engine (`docker.host`) is a Unix socket that this benchmark opens
//! only once the worker has registered (so its start-up sweep finds no engine and goes on) and that
//! accepts connections and never answers, as a hung `dockerd`: the worker takes one job, marks it
//! running and waits on the engine (at least 120 s, bollard's timeout), and takes no other. So the
//! measurement is of acceptance alone: no build runs, fails or is retried while it lasts.
//!
//! The index is also read directly from the `build_index` bucket (every page of the lists of every
//! build, `all` and `all.<n>`, and of each component): so a listing that misses a build can be told
//! from an append the index lost, and the run says how many lists of every build it found (one before
//! that list was sharded, sixteen after), so a run at either commit says which it measured. It also
//! prints the nats-server version: before 2.9.21, two concurrent compare-and-sets of one key of a
//! replicated stream could both succeed (nats-server#4320), and appends to a list many submissions
//! share are lost.
//!
//! Prints Markdown for BENCHMARKS.md.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p artifacts-tests --bin bench-submissions [-- N]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};

use artifacts_tests::cluster::{cluster_app_without_engine, worker_with};
use artifacts_tests::{raw_bucket, TestApp, ADMIN_KEY};

/// Submissions of the benchmark's own, before the measurement: connections open, first writes done.
const WARM_UP: usize = 3;

/// Requests in flight while the records and the listing are checked (not measured).
const CHECK_CONCURRENCY: usize = 32;

/// The raw baseline's stream and subject.
const RAW_STREAM: &str = "BENCH_RAW_SUBMISSIONS";
const RAW_SUBJECT: &str = "bench.raw.submissions";

/// About the size of a submission's body with its headers.
const RAW_PAYLOAD_BYTES: usize = 1024;

#[tokio::main]
async fn main() {
    let submissions: usize =
        std::env::args().nth(1).map(|n| n.parse().expect("N: a number of submissions")).unwrap_or(1000);

    let (app, registry) = cluster_app_without_engine(|settings| settings.gateway.rate_limit_per_minute = 0).await;
    let request_timeout = app.settings.nats.request_timeout_secs;

    // The builder: one build-image process whose engine never answers (see the module's comment).
    let engine_dir = tempfile::tempdir().expect("a temporary directory");
    let socket = engine_dir.path().join("docker.sock");
    let _worker = worker_with(
        &app,
        None,
        "amd64",
        &[("ARTIFACTS__DOCKER__HOST", &format!("unix://{}", socket.display())), ("ARTIFACTS__BUILD__SLOTS", "1")],
    )
    .await;
    let engine = tokio::net::UnixListener::bind(&socket).expect("the engine's socket");
    let _hung_engine = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = engine.accept().await {
            held.push(connection);
        }
    });

    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("an HTTP client");
    let mut warm_ids = HashSet::new();
    for n in 0..WARM_UP {
        let (status, answer) = post_image(&http, &app, &format!("bench-warm-{n}"), n).await;
        assert_eq!(status, Some(202), "a warm-up submission: {answer}");
        warm_ids.insert(answer["buildId"].as_str().expect("a build id").to_owned());
    }

    // 1. N submissions at once.
    eprintln!("submitting {submissions} image builds at once");
    let started = Instant::now();
    let answers = futures::future::join_all((0..submissions).map(|n| {
        let (http, app) = (&http, &app);
        async move {
            let sent = Instant::now();
            let (status, answer) = post_image(http, app, &component(n), WARM_UP + n).await;
            (n, sent.elapsed(), status, answer)
        }
    }))
    .await;
    let wall = started.elapsed();

    let mut latencies = Vec::with_capacity(submissions);
    let mut accepted: Vec<(usize, String)> = Vec::new();
    let mut refusals = BTreeMap::<String, usize>::new();
    let mut refused_bodies = Vec::new();
    for (n, latency, status, answer) in answers {
        latencies.push(latency);
        match (status, answer["buildId"].as_str()) {
            (Some(202), Some(build_id)) => accepted.push((n, build_id.to_owned())),
            _ => {
                let status = status.map_or("no answer".to_owned(), |s| s.to_string());
                let message = answer["errorMessage"].as_str().or(answer["transportError"].as_str()).unwrap_or("");
                *refusals.entry(format!("{status}: {message}")).or_default() += 1;
                if refused_bodies.len() < 5 {
                    refused_bodies.push(format!("{} ({status}, {:.0} ms): {answer}", component(n), ms(latency)));
                }
            }
        }
    }
    let distinct_ids: HashSet<&str> = accepted.iter().map(|(_, id)| id.as_str()).collect();
    let submitted = Rate::of(submissions, wall, &mut latencies);
    eprintln!("submitted: {} accepted in {:.2} s", accepted.len(), wall.as_secs_f64());

    // 2. None lost: every accepted id has its record, and the listing finds each once.
    let no_record = missing_records(&http, &app, &accepted).await;
    let listed = walk_listing(&http, &app).await;
    let mut listed_times = HashMap::<&str, usize>::new();
    for build_id in &listed {
        *listed_times.entry(build_id.as_str()).or_default() += 1;
    }
    let missing_from_listing: Vec<String> =
        distinct_ids.iter().filter(|id| !listed_times.contains_key(**id)).map(|id| id.to_string()).collect();
    let listed_twice = listed_times.values().filter(|times| **times > 1).count();
    // Read from the index itself: each component's list has one writer, so it holds every build
    // recorded for the component, whatever the list of every build lost.
    let index = read_index(&app).await;
    let missing_from =
        |list: &HashMap<String, usize>| distinct_ids.iter().filter(|id| !list.contains_key(**id)).count();
    let (not_in_all, not_in_components) = (missing_from(&index.all), missing_from(&index.components));
    let twice_in_index = index.all.values().chain(index.components.values()).filter(|times| **times > 1).count();
    let components_with_two = index.component_lists.values().filter(|ids| ids.len() > 1).count();
    let recorded_though_refused = index
        .components
        .keys()
        .filter(|id| !distinct_ids.contains(id.as_str()) && !warm_ids.contains(id.as_str()))
        .count();

    // 3. The raw baseline: N concurrent JetStream publishes with ack to an R3 file stream.
    let raw = raw_publishes(&app, submissions).await;

    println!(
        "### {submissions} concurrent submissions of distinct image builds, 3-node cluster (R3), against raw \
         JetStream publishes\n"
    );
    println!(
        "| path | submissions | accepted | wall s | per second | p50 ms | p99 ms | vs raw (rate) | vs raw (p99) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| `POST /api/v1/images` through the gateway | {submissions} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.3}x | \
         {:.1}x |",
        accepted.len(),
        submitted.wall.as_secs_f64(),
        submitted.per_second(),
        ms(submitted.p50),
        ms(submitted.p99),
        submitted.per_second() / raw.rate.per_second(),
        submitted.p99.as_secs_f64() / raw.rate.p99.as_secs_f64(),
    );
    println!(
        "| raw JetStream publish + ack, R3 file stream, {RAW_PAYLOAD_BYTES} B | {submissions} | {} | {:.2} | {:.1} | \
         {:.1} | {:.1} | 1.00x | 1.0x |\n",
        raw.acked,
        raw.rate.wall.as_secs_f64(),
        raw.rate.per_second(),
        ms(raw.rate.p50),
        ms(raw.rate.p99),
    );
    println!(
        "Lost: {} accepted without a record, {} missing from the listing ({} builds listed in all); doubled: \
         {} accepted ids answered twice, {} ids listed twice, {} components with two builds in their own list; \
         {} builds in the components' lists that no 202 answered (a submission refused, yet recorded).\n",
        no_record.missing.len(),
        missing_from_listing.len(),
        listed.len(),
        accepted.len() - distinct_ids.len(),
        listed_twice,
        components_with_two,
        recorded_though_refused,
    );
    println!(
        "Per second = submissions / wall time, N requests in flight at once; latencies of every request, \
         refused ones included (slowest {:.1} ms; raw {:.1} ms). `nats.request_timeout_secs` = {request_timeout} \
         (the gateway answers 503 past it).",
        ms(submitted.max),
        ms(raw.rate.max),
    );
    println!(
        "\nThe index itself (the `build_index` bucket's pages, read directly): the list of every build is kept in \
         {} list(s) holding {} ids; of the accepted ids, {not_in_all} are in no list of every build and \
         {not_in_components} in no component's list; {twice_in_index} ids are in one list twice. nats-server {}.",
        index.all_shards,
        index.all.len(),
        app.nats.client.server_info().version,
    );
    if not_in_all > 0 && not_in_components == 0 {
        println!(
            "\nEvery component's list (one writer each) is whole while the lists of every build (many writers) \
             lost ids: compare-and-sets of one key that all succeeded, as nats-server before 2.9.21 lets \
             concurrent writes expecting the same last sequence of a replicated stream's subject do \
             (nats-server#4320)."
        );
    }
    let statuses: Vec<String> = no_record.statuses.iter().map(|(status, n)| format!("{n} {status}")).collect();
    println!("\nThe accepted builds' records when checked: {}.", statuses.join(", "));
    if no_record.unreadable > 0 {
        println!("\n{} records could not be read (no 200 or 404 after retries)", no_record.unreadable);
    }
    if !refusals.is_empty() {
        println!("\nRefused submissions:\n");
        for (refusal, count) in &refusals {
            println!("- {count} x {refusal}");
        }
        println!("\nFirst refusals:\n");
        for body in &refused_bodies {
            println!("- {body}");
        }
    }
    for (what, ids) in [("without a record", &no_record.missing), ("missing from the listing", &missing_from_listing)] {
        if !ids.is_empty() {
            println!("\nFirst accepted ids {what}: {:?}", &ids[..ids.len().min(5)]);
        }
    }
    if raw.failed > 0 {
        println!("\nRaw publishes failed: {} (first: {})", raw.failed, raw.first_error);
    }
    drop(registry);
}

fn component(n: usize) -> String {
    format!("bench-sub-{n}")
}

/// Posts an image build of its own Dockerfile: the status (`None`: no answer) and the JSON answer.
async fn post_image(http: &reqwest::Client, app: &TestApp, component: &str, n: usize) -> (Option<u16>, Value) {
    let body = json!({
        "dockerfile": format!("FROM scratch\nLABEL n={n}\n"),
        "component": component,
        "branch": "main",
        "architecture": "amd64",
    });
    match http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).json(&body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (Some(status), serde_json::from_str(&text).unwrap_or_else(|_| json!({ "body": text })))
        }
        Err(err) => (None, json!({ "transportError": err.to_string() })),
    }
}

struct Rate {
    count: usize,
    wall: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Rate {
    fn of(count: usize, wall: Duration, latencies: &mut [Duration]) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1];
        Self { count, wall, p50: at(0.50), p99: at(0.99), max: at(1.0) }
    }

    fn per_second(&self) -> f64 {
        self.count as f64 / self.wall.as_secs_f64()
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A GET with the admin key, asked again while it answers 503 or nothing (a check, not the measurement).
async fn get(http: &reqwest::Client, app: &TestApp, path: &str, query: &[(&str, &str)]) -> (Option<u16>, Value) {
    let mut last = (None, Value::Null);
    for _ in 0..20 {
        let asked = http.get(app.url(path)).query(query).bearer_auth(ADMIN_KEY).send().await;
        last = match asked {
            Ok(response) => {
                let status = response.status().as_u16();
                (Some(status), response.json().await.unwrap_or_default())
            }
            Err(err) => (None, json!({ "transportError": err.to_string() })),
        };
        if !matches!(last.0, None | Some(503)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

struct Records {
    missing: Vec<String>,
    unreadable: usize,
    /// The records found, by status (`queued` for all but the one the hung worker holds).
    statuses: BTreeMap<String, usize>,
}

/// The accepted ids whose record `GET /builds/{id}` does not find (404), and how many gave no answer.
async fn missing_records(http: &reqwest::Client, app: &TestApp, accepted: &[(usize, String)]) -> Records {
    let reads = futures::stream::iter(accepted)
        .map(
            |(_, build_id)| async move { (build_id, get(http, app, &format!("/api/v1/builds/{build_id}"), &[]).await) },
        )
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut records = Records { missing: Vec::new(), unreadable: 0, statuses: BTreeMap::new() };
    for (build_id, (status, record)) in reads {
        match status {
            Some(200) if record["buildId"] == build_id.as_str() => {
                *records.statuses.entry(record["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1
            }
            Some(404) => records.missing.push(build_id.clone()),
            _ => {
                records.unreadable += 1;
                eprintln!("the record of {build_id}: {status:?} {record}");
            }
        }
    }
    records
}

/// The id of every build the listing shows, newest first, page by page.
async fn walk_listing(http: &reqwest::Client, app: &TestApp) -> Vec<String> {
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "100")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.as_str()));
        }
        let (status, page) = get(http, app, "/api/v1/builds", &query).await;
        assert_eq!(status, Some(200), "the listing after {} builds: {page}", listed.len());
        for build in page["builds"].as_array().expect("builds") {
            listed.push(build["buildId"].as_str().expect("a build id").to_owned());
        }
        eprintln!(
            "listing: {} builds, nextCursor {}",
            page["builds"].as_array().map_or(0, Vec::len),
            page["nextCursor"]
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return listed,
        }
    }
}

/// What the build index's pages hold, read from the `build_index` bucket itself (not through a
/// listing): the lists of every build (`all`, and `all.<n>` where that list is sharded) and of each
/// component (`component/<slug>`), each kept as pages `<list>/<n>` of ids (JSON arrays).
struct Index {
    /// Lists of every build that hold a page.
    all_shards: usize,
    /// Ids in the lists of every build, and how many times each.
    all: HashMap<String, usize>,
    /// Ids in the components' lists, and how many times each.
    components: HashMap<String, usize>,
    /// Each component's list: its distinct ids.
    component_lists: HashMap<String, HashSet<String>>,
}

async fn read_index(app: &TestApp) -> Index {
    let bucket = raw_bucket(&app.nats, "build_index").await;
    let keys: Vec<String> = bucket.keys().await.expect("the index's keys").try_collect().await.expect("keys");
    let pages: Vec<(&str, &str)> =
        keys.iter().filter_map(|key| key.rsplit_once('/')).filter(|(_, page)| page.parse::<u64>().is_ok()).collect();
    let values = futures::stream::iter(&pages)
        .map(|(list, page)| {
            let bucket = &bucket;
            async move {
                let value = bucket.get(format!("{list}/{page}")).await.expect("an index page");
                (*list, value.map(|v| serde_json::from_slice::<Vec<String>>(&v).expect("a page of ids")))
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut index =
        Index { all_shards: 0, all: HashMap::new(), components: HashMap::new(), component_lists: HashMap::new() };
    let mut all_lists = HashSet::new();
    for (list, ids) in values {
        let of_all = list == "all" || list.starts_with("all.");
        if of_all {
            all_lists.insert(list);
        }
        for id in ids.unwrap_or_default() {
            if !of_all {
                index.component_lists.entry(list.to_owned()).or_default().insert(id.clone());
            }
            *(if of_all { &mut index.all } else { &mut index.components }).entry(id).or_default() += 1;
        }
    }
    index.all_shards = all_lists.len();
    index
}

struct Raw {
    rate: Rate,
    acked: usize,
    failed: usize,
    first_error: String,
}

/// `count` publishes at once to an R3 file stream of the benchmark's own, each awaiting its ack.
async fn raw_publishes(app: &TestApp, count: usize) -> Raw {
    use async_nats::jetstream::stream::{Config, StorageType};
    let nats = artifacts_runtime::nats::connect(&app.settings, "bench-raw").await.expect("NATS connects");
    let jetstream = nats.jetstream;
    jetstream
        .create_stream(Config {
            name: RAW_STREAM.into(),
            subjects: vec![RAW_SUBJECT.into()],
            num_replicas: 3,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .expect("the raw stream is created");
    let payload = |n: usize| {
        let mut body = format!(r#"{{"component":"bench-raw-{n}","branch":"main","architecture":"amd64","pad":""#);
        body.push_str(&"x".repeat(RAW_PAYLOAD_BYTES.saturating_sub(body.len() + 2)));
        body.push_str(r#""}"#);
        body
    };
    let publish = |n: usize| {
        let jetstream = &jetstream;
        async move {
            let sent = Instant::now();
            let acked = match jetstream.publish(RAW_SUBJECT, payload(n).into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            (sent.elapsed(), acked)
        }
    };
    for n in 0..WARM_UP {
        publish(count + n).await.1.expect("a warm-up publish");
    }
    eprintln!("publishing {count} messages at once");
    let started = Instant::now();
    let answers = futures::future::join_all((0..count).map(publish)).await;
    let wall = started.elapsed();
    let mut latencies = Vec::with_capacity(count);
    let (mut acked, mut failed, mut first_error) = (0, 0, String::new());
    for (latency, answer) in answers {
        latencies.push(latency);
        match answer {
            Ok(()) => acked += 1,
            Err(err) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = err;
                }
            }
        }
    }
    Raw { rate: Rate::of(count, wall, &mut latencies), acked, failed, first_error }
}
