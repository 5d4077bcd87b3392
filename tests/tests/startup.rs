//! Every process ensures the JetStream streams and buckets at start; under `artifacts up` they all start
//! at once on a fresh server and must not trip over each other (the server refuses a create that races
//! another: "subjects overlap with an existing stream"), nor crash it: nats-server 2.9.10 died of a nil
//! pointer in `updateWithAdvisory` when one process's stream update reached a stream another was
//! creating (2 of 144 fresh servers here, one in CI).

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;

use artifacts_tests::{workspace_binary, NatsServer};

#[tokio::test]
async fn processes_starting_together_on_a_fresh_server_all_come_up() {
    const PROCESSES: usize = 8;
    for _ in 0..10 {
        let mut server = NatsServer::start().await;
        let mut children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                tokio::process::Command::new(workspace_binary("artifacts-lookup"))
                    .env("ARTIFACTS__NATS__URL", server.url())
                    .env("ARTIFACTS__LOG__FILTER", "error")
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Nine connections arrive at once on a server that has just said it listens; one of them being
        // reset (seen once in CI) is retried, and a server that died says so.
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match async_nats::connect(server.url()).await {
                    Ok(client) => return client,
                    Err(err) => {
                        eprintln!("the test's connection failed ({err}); again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .await;
        let Ok(client) = connected else {
            panic!("the test cannot connect: {}", server.exited().unwrap_or_else(|| "nats-server still runs".into()))
        };
        // Eight debug builds starting at once share two cores with whatever else runs: give them a minute.
        let mut answered = 0;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let inbox = client.new_inbox();
            let mut pongs = client.subscribe(inbox.clone()).await.unwrap();
            client.publish_with_reply("$SRV.PING.artifacts-lookup", inbox, "".into()).await.unwrap();
            answered = 0;
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), pongs.next()).await {
                answered += 1;
            }
            if answered == PROCESSES {
                break;
            }
        }
        if let Some(death) = server.exited() {
            panic!("{death}");
        }
        for child in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).await.unwrap();
                panic!("a process exited ({status}): {stderr}");
            }
        }
        assert_eq!(answered, PROCESSES, "every process registered");
    }
}
