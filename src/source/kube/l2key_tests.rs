//! The L2 key Secret against the fake API server: created once with 32 random bytes, read by
//! every later agent, and a create that loses the race reads the winner's key.

use ferrite_fakeapi::{Fault, Sandbox};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{KeyState, Origin, SECRET_FIELD, SECRET_NAME, create_or_read, get_or_create};
use crate::l2::membership::Key;
use crate::source::kube::{ClientOptions, ConfigOrigin, config};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn client(api: &Sandbox, name: &str) -> kube::Client {
    let path = api.client_kubeconfig(name).expect("kubeconfig");
    config::client_from(&ConfigOrigin::File(path), ClientOptions::default())
        .await
        .expect("client")
}

/// The key text stored in the fake server's Secret.
fn stored(api: &Sandbox) -> String {
    let secret = api
        .get("v1", "Secret", "kube-system", SECRET_NAME)
        .expect("the Secret exists");
    let b64 = secret["data"][SECRET_FIELD].as_str().expect("data field");
    let bytes = base64_decode(b64);
    String::from_utf8(bytes).expect("text")
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value: k8s_openapi::ByteString =
        serde_json::from_value(serde_json::Value::String(text.to_owned())).expect("base64");
    value.0
}

fn secret_creates(api: &Sandbox) -> Vec<u16> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/secrets"))
        .map(|r| r.status)
        .collect()
}

#[test]
fn the_first_agent_creates_a_32_byte_key_and_the_next_reads_it() {
    let api = Sandbox::start("l2key-first").expect("fake API");
    runtime().block_on(async {
        let (text, origin) = get_or_create(client(&api, "node-1").await, "kube-system")
            .await
            .expect("created");
        assert_eq!(origin, Origin::Created);
        assert_eq!(text.trim().len(), 64, "32 bytes in hex: {text}");
        Key::parse(&text, "test").expect("a valid key");
        assert_eq!(stored(&api), text);
        let (again, origin) = get_or_create(client(&api, "node-2").await, "kube-system")
            .await
            .expect("read");
        assert_eq!(origin, Origin::Read);
        assert_eq!(again, text);
        assert_eq!(secret_creates(&api), [201], "one create");
    });
}

#[test]
fn a_create_that_loses_the_race_reads_the_winners_key() {
    let api = Sandbox::start("l2key-race").expect("fake API");
    runtime().block_on(async {
        // Both agents found no Secret and made a key; the first create wins.
        let a: Api<Secret> = Api::namespaced(client(&api, "node-1").await, "kube-system");
        let b: Api<Secret> = Api::namespaced(client(&api, "node-2").await, "kube-system");
        let key_a = Key::generate_text().unwrap();
        let key_b = Key::generate_text().unwrap();
        assert_ne!(key_a, key_b);
        let (won, how_a) = create_or_read(&a, "kube-system", key_a.clone())
            .await
            .expect("a");
        let (lost, how_b) = create_or_read(&b, "kube-system", key_b).await.expect("b");
        assert_eq!((how_a, how_b), (Origin::Created, Origin::LostRace));
        assert_eq!(won, key_a);
        assert_eq!(lost, key_a, "the loser uses the winner's key");
        assert_eq!(secret_creates(&api), [201, 409]);
    });
}

#[test]
fn agents_racing_from_the_start_end_with_one_key() {
    let api = Sandbox::start("l2key-start").expect("fake API");
    runtime().block_on(async {
        let clients = [
            client(&api, "node-1").await,
            client(&api, "node-2").await,
            client(&api, "node-3").await,
        ];
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|c| tokio::spawn(async move { get_or_create(c, "kube-system").await }))
            .collect();
        let mut keys = Vec::new();
        for t in tasks {
            keys.push(t.await.expect("task").expect("key").0);
        }
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        assert_eq!(stored(&api), keys[0]);
        let creates = secret_creates(&api);
        assert_eq!(
            creates.iter().filter(|c| **c == 201).count(),
            1,
            "exactly one create succeeded: {creates:?}"
        );
    });
}

#[test]
fn failures_are_retried_and_reported_until_the_key_is_had() {
    let api = Sandbox::start("l2key-retry").expect("fake API");
    api.fail_next(Fault {
        method: Some("GET".into()),
        path_contains: "/secrets/".into(),
        code: 403,
        count: 1,
    });
    runtime().block_on(async {
        let mut rx = super::spawn(client(&api, "node-1").await, "kube-system".into());
        let mut saw_error = false;
        let ready = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match rx.borrow_and_update().clone() {
                    KeyState::Ready { text, from } => return (text, from),
                    KeyState::Pending { error } => saw_error |= error.is_some(),
                }
                rx.changed().await.expect("sender alive");
            }
        })
        .await
        .expect("the key within 10 s");
        assert!(saw_error, "the 403 was reported while pending");
        assert_eq!(ready.0, stored(&api));
        assert!(
            ready.1.contains("kube-system/ferrite-l2-key"),
            "{}",
            ready.1
        );
        assert!(
            !format!(
                "{:?}",
                KeyState::Ready {
                    text: ready.0.clone(),
                    from: ready.1
                }
            )
            .contains(&ready.0),
            "Debug never prints the key"
        );
    });
}
