//! 200 concurrent ADD/DEL against one IPAM store while plugin processes are killed with
//! SIGKILL at random moments: no address is ever held twice, and after GC nothing is leaked.

mod cni_common;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cni_common::{Env, FERRITE, addresses, ferrite, links, require};
use ferrite_lab::{Netns, Ns};
use serde_json::{Value, json};

const WORKERS: usize = 200;

/// xorshift64*: deterministic per worker, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Outcome {
    Done(cni_common::Reply),
    Killed,
}

/// Runs the plugin in `node`; with `kill_after`, SIGKILLs it then (if still running).
fn run(node: &Ns, env: &Env, conf: &Value, kill_after: Option<Duration>) -> Outcome {
    let Some(after) = kill_after else {
        return Outcome::Done(ferrite(node, env, conf));
    };
    let mut cmd = Command::new(FERRITE);
    node.enter_on_spawn(&mut cmd).unwrap();
    cmd.env_clear()
        .env("CNI_COMMAND", &env.command)
        .env("CNI_CONTAINERID", env.container_id.clone().unwrap())
        .env("CNI_IFNAME", env.ifname.clone().unwrap())
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some(n) = &env.netns {
        cmd.env("CNI_NETNS", n);
    }
    let mut child = cmd.spawn().unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes());
    std::thread::sleep(after);
    let killed = child.try_wait().unwrap().is_none() && child.kill().is_ok();
    let out = child.wait_with_output().unwrap();
    if killed {
        Outcome::Killed
    } else {
        Outcome::Done(cni_common::Reply {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::new(),
        })
    }
}

/// What one worker's attachment ended as.
#[derive(Debug, Default)]
struct Record {
    /// IPs from a successful ADD and the window it surely held them: (ADD done, DEL start).
    held: Option<(Vec<String>, Instant, Option<Instant>)>,
    live: bool,
    add_killed: bool,
}

fn store_ips(state: &Path) -> Vec<(String, Value)> {
    let Ok(bytes) = std::fs::read(state.join("stress").join("state.json")) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&bytes).expect("state.json is never torn");
    v["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["ip"].as_str().unwrap().to_owned(), a.clone()))
        .collect()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn concurrent_add_del_with_kill9_never_duplicates_and_gc_leaves_nothing() {
    require(&[("ip", "iproute2")]);
    let node = Netns::new("cnik").unwrap();
    let pods: Vec<Netns> = (0..WORKERS).map(|_| Netns::new("cnik").unwrap()).collect();
    let work = common::TempDir::new("cni-stress");
    let conf = cni_common::conf("1.1.0", "stress", work.path(), &["10.66.0.0/24"]);
    let ipam: PathBuf = work.path().join("ipam");

    // Sampler: the store never lists an address twice, at any moment.
    let stop = Arc::new(AtomicBool::new(false));
    let dup_seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sampler = {
        let (stop, dup_seen, ipam) = (stop.clone(), dup_seen.clone(), ipam.clone());
        std::thread::spawn(move || {
            let mut samples = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let ips = store_ips(&ipam);
                let mut seen = BTreeSet::new();
                for (ip, _) in &ips {
                    if !seen.insert(ip.clone()) {
                        dup_seen.lock().unwrap().push(ip.clone());
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        })
    };

    let barrier = Arc::new(Barrier::new(WORKERS));
    let records: Vec<Record> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (barrier, conf, node) = (barrier.clone(), conf.clone(), node.ns().clone());
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1000_0001));
                    let cid = format!("stress-{i}");
                    let add = Env::attach("ADD", &cid, &pod.ns().path(), "eth0");
                    let del = Env::attach("DEL", &cid, &pod.ns().path(), "eth0");
                    let mut rec = Record::default();
                    barrier.wait();
                    let kill = (rng.below(100) < 35).then(|| Duration::from_millis(rng.below(60)));
                    match run(&node, &add, &conf, kill) {
                        Outcome::Killed => rec.add_killed = true,
                        Outcome::Done(r) => {
                            let v = r.ok();
                            let ips = v["ips"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|ip| {
                                    ip["address"]
                                        .as_str()
                                        .unwrap()
                                        .trim_end_matches("/32")
                                        .to_owned()
                                })
                                .collect();
                            rec.held = Some((ips, Instant::now(), None));
                            rec.live = true;
                        }
                    }
                    // Half the attachments are deleted again (a killed ADD is followed by a DEL
                    // only sometimes: the other times the runtime "crashed" and GC must clean).
                    let delete = rng.below(2) == 0;
                    if delete {
                        let started = Instant::now();
                        if let Some(h) = rec.held.as_mut() {
                            h.2 = Some(started);
                        }
                        // A DEL may be killed too; the runtime retries until one succeeds.
                        let kill =
                            (rng.below(100) < 30).then(|| Duration::from_millis(rng.below(30)));
                        let _ = run(&node, &del, &conf, kill);
                        ferrite(&node, &del, &conf).ok();
                        rec.live = false;
                    }
                    rec
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    stop.store(true, Ordering::Relaxed);
    let sample_count = sampler.join().unwrap();
    assert!(
        dup_seen.lock().unwrap().is_empty(),
        "store listed an address twice: {:?}",
        dup_seen.lock().unwrap()
    );
    assert!(sample_count > 10, "the sampler hardly ran ({sample_count})");

    // Windows in which two attachments surely held the same address must not overlap.
    let mut by_ip: HashMap<String, Vec<(Instant, Option<Instant>, usize)>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some((ips, from, to)) = &r.held {
            for ip in ips {
                by_ip.entry(ip.clone()).or_default().push((*from, *to, i));
            }
        }
    }
    for (ip, mut holders) in by_ip {
        holders.sort_by_key(|h| h.0);
        for pair in holders.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.1.is_some_and(|end| end <= b.0),
                "{ip} held by workers {} and {} at once",
                a.2,
                b.2
            );
        }
    }

    // Every netns: no address in two of them (killed ADDs included).
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, pod) in pods.iter().enumerate() {
        for a in addresses(pod.ns(), "eth0") {
            if let Some(prev) = owner.insert(a.clone(), i) {
                panic!("{a} configured in pods {prev} and {i}");
            }
        }
    }
    let killed = records.iter().filter(|r| r.add_killed).count();
    eprintln!(
        "{killed} ADDs killed, {} live attachments",
        records.iter().filter(|r| r.live).count()
    );
    assert!(killed > 20, "too few kills to mean anything ({killed})");

    // GC with the attachments the "runtime" still has: exactly those remain, nothing else.
    let valid: Vec<Value> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.live)
        .map(|(i, _)| json!({"containerID": format!("stress-{i}"), "ifname": "eth0"}))
        .collect();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!(valid);
    ferrite(node.ns(), &Env::new("GC"), &gc).ok();
    let left = store_ips(&ipam);
    let live_ips: BTreeSet<String> = records
        .iter()
        .filter(|r| r.live)
        .flat_map(|r| r.held.as_ref().unwrap().0.clone())
        .collect();
    let stored_ips: BTreeSet<String> = left.iter().map(|(ip, _)| ip.clone()).collect();
    assert_eq!(
        stored_ips, live_ips,
        "after GC the store holds exactly the live attachments"
    );
    assert!(
        left.iter().all(|(_, a)| a.get("pending").is_none()),
        "a pending reservation survived GC"
    );
    let host_veths: BTreeSet<String> = links(node.ns())
        .into_iter()
        .filter(|l| l.starts_with("fer"))
        .collect();
    let expected_veths: BTreeSet<String> = left
        .iter()
        .map(|(_, a)| a["hostIfname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(host_veths, expected_veths, "host veths after GC");
    for (i, pod) in pods.iter().enumerate() {
        assert_eq!(
            !addresses(pod.ns(), "eth0").is_empty(),
            records[i].live,
            "pod {i} after GC"
        );
    }

    // And the survivors still DEL cleanly, leaving an empty node.
    for (i, r) in records.iter().enumerate().filter(|(_, r)| r.live) {
        let env = Env::attach("DEL", &format!("stress-{i}"), &pods[i].ns().path(), "eth0");
        ferrite(node.ns(), &env, &conf).ok();
        assert!(r.held.is_some());
    }
    assert!(store_ips(&ipam).is_empty());
    assert!(!links(node.ns()).iter().any(|l| l.starts_with("fer")));
}
