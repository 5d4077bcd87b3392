//! The NATS connection every process opens, and the JetStream resources they share.
//!
//! Each process ensures the resources at start (creating a stream or bucket whose configuration is
//! unchanged is a no-op), so the stack starts in any order and a fresh server needs no set-up step.
//! `nats/README.md` documents every stream, bucket and subject.

use std::time::{Duration, Instant};

use async_nats::jetstream;

use artifacts_schemas::{RequestError, Subjects};
use artifacts_store::{StorageCaps, Store};

use crate::configuration::{redact_url, Settings};

/// A connected process: the client, JetStream, the subject names and the stack's state.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub subjects: Subjects,
    /// Every record, index and object of the stack ([`artifacts_store`]).
    pub store: Store,
    /// The key of build secrets (`secrets.key_file`), loaded when first needed ([`crate::secrets`]).
    pub secrets: std::sync::Arc<crate::secrets::Keyring>,
    /// The key that signs provenance (`provenance.key_file`), loaded when first needed.
    pub provenance: std::sync::Arc<crate::provenance::Signer>,
    /// The connection's losses and reconnections, so that a request in flight on a lost connection is
    /// sent again at once ([`crate::service::call`]).
    pub link: crate::service::Link,
}

/// The inbox prefix of the stack's own processes. Clients may subscribe only to `_INBOX_<their key id>.>`
/// (key ids are hex), so no client can read the replies the stack receives: records, key hashes, chunks.
pub const SERVICE_INBOX_PREFIX: &str = "_INBOX_service";

/// Connects, retrying until `nats.connect_timeout_secs` has passed, then ensures the resources.
pub async fn connect(settings: &Settings, process_name: &str) -> anyhow::Result<Nats> {
    let url = &settings.nats.url;
    let deadline = Instant::now() + Duration::from_secs(settings.nats.connect_timeout_secs);
    // async-nats 0.51 ignores credentials in the URL: take them out and pass them as options.
    let (servers, credentials) = split_credentials(url);
    let (link, on_event) = crate::service::Link::new(settings.request_timeout());
    let client = loop {
        let options = match &credentials {
            Some((user, password)) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            None => async_nats::ConnectOptions::new(),
        };
        let attempt = options
            .name(process_name)
            .custom_inbox_prefix(SERVICE_INBOX_PREFIX)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(settings.request_timeout()))
            // The first node listed that answers, not a random one: the stack's processes on one host
            // then share a node (list the host's own first), and a request does not cross routes twice.
            .retain_servers_order()
            .event_callback(on_event.clone())
            .connect(servers.as_slice())
            .await;
        match attempt {
            Ok(client) => break client,
            Err(err) if Instant::now() < deadline => {
                tracing::warn!(url = %redact_url(url), %err, "NATS is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => anyhow::bail!(
                "cannot reach NATS at {} after {}s: {err}. Start nats-server with JetStream (`artifacts up` does) or set nats.url / NATS_URL",
                redact_url(url),
                settings.nats.connect_timeout_secs
            ),
        }
    };
    tracing::info!(url = %redact_url(url), "connected to NATS");
    let version = client.server_info().version;
    if settings.nats.replicas > 1 && !checks_writes_in_consensus(&version) {
        tracing::warn!(
            %version,
            "nats-server before 2.9.21 lets compare-and-sets of one key from two processes at the same moment both succeed on a cluster (nats-server#4320): this process takes turns for its own writes, but run 2.9.21 or later on a cluster"
        );
    }
    wait_for_jetstream(&client, deadline).await;
    let jetstream = jetstream::new(client.clone());
    let subjects = settings.subjects();
    let caps = &settings.storage;
    let caps = StorageCaps {
        archives_bytes: caps.archives_bytes,
        uploads_bytes: caps.uploads_bytes,
        logs_bytes: caps.logs_bytes,
        jobs_bytes: caps.jobs_bytes,
        events_bytes: caps.events_bytes,
        bucket_bytes: caps.bucket_bytes,
    };
    let store = Store::open(client.clone(), subjects.clone(), settings.nats.replicas, &caps, &redact_url(url)).await?;
    let secrets = std::sync::Arc::new(crate::secrets::Keyring::new(settings.secrets.key_file.clone()));
    let provenance = std::sync::Arc::new(crate::provenance::Signer::new(settings.provenance.key_file.clone()));
    Ok(Nats { client, jetstream, subjects, store, secrets, provenance, link })
}

/// Whether nats-server `version` checks a replicated write's expected revision as part of the write
/// (2.9.21 and later: nats-server#4320).
fn checks_writes_in_consensus(version: &str) -> bool {
    let numbers: Vec<u64> = version.split(['.', '-']).take(3).map_while(|part| part.parse().ok()).collect();
    numbers.as_slice() >= [2, 9, 21].as_slice()
}

/// Waits, until `deadline` at most, for JetStream to answer: a cluster that has not elected its metadata
/// leader yet leaves API requests unanswered, and each set-up request would wait out the whole request
/// timeout. Any answer but "temporarily unavailable" (10008) ends the wait, "no responders" (a server
/// without JetStream) too: the set-up reports the rest.
async fn wait_for_jetstream(client: &async_nats::Client, deadline: Instant) {
    use async_nats::RequestErrorKind;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(1), client.request("$JS.API.INFO", "".into())).await;
        let unavailable = match &answer {
            Ok(Ok(reply)) => String::from_utf8_lossy(&reply.payload).contains("\"err_code\":10008"),
            Ok(Err(err)) => err.kind() != RequestErrorKind::NoResponders,
            Err(_) => true,
        };
        if !unavailable || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `nats://user:password@host:port,...` -> ([`nats://host:port`, ...], (user, password)); the first
/// server's credentials apply to all.
fn split_credentials(url: &str) -> (Vec<String>, Option<(String, String)>) {
    let mut credentials = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            let server = server.trim();
            let (scheme, rest) = server.split_once("://").unwrap_or(("nats", server));
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    credentials.get_or_insert_with(|| (user.to_owned(), password.to_owned()));
                    format!("{scheme}://{host}")
                }
                None => format!("{scheme}://{rest}"),
            }
        })
        .collect();
    (servers, credentials)
}

/// A JetStream failure as the 503 a client gets.
pub fn unavailable(err: impl std::fmt::Display) -> RequestError {
    RequestError::unavailable(format!("JetStream is unavailable: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_before_2_9_21_do_not_check_replicated_writes() {
        for older in ["2.9.10", "2.9.20", "2.8.4", "1.0.0", "unknown"] {
            assert!(!checks_writes_in_consensus(older), "{older}");
        }
        for newer in ["2.9.21", "2.10.0", "2.11.8-alpine", "3.0.0"] {
            assert!(checks_writes_in_consensus(newer), "{newer}");
        }
    }

    #[test]
    fn credentials_come_out_of_urls() {
        assert_eq!(
            split_credentials("nats://service:pw@127.0.0.1:4222"),
            (vec!["nats://127.0.0.1:4222".to_owned()], Some(("service".into(), "pw".into())))
        );
        assert_eq!(split_credentials("nats://127.0.0.1:4222"), (vec!["nats://127.0.0.1:4222".to_owned()], None));
        assert_eq!(split_credentials("localhost:4222").0, ["nats://localhost:4222"]);
        // A cluster: every node, the first one's credentials for all.
        assert_eq!(
            split_credentials("nats://service:pw@a:4222, nats://b:4223,c:4224"),
            (
                vec!["nats://a:4222".to_owned(), "nats://b:4223".to_owned(), "nats://c:4224".to_owned()],
                Some(("service".into(), "pw".into()))
            )
        );
    }
}
