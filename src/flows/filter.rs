//! Which flows a query asks for: the `/v1/flows` query parameters (the `ferrite observe` flags,
//! named after `hubble observe`'s), parsed and matched without IO.

use std::net::IpAddr;

use super::Flow;

/// Most flows one answer carries.
/// The largest `after` (a JSON-safe integer: seqs count flows, they never get there).
pub const MAX_SEQ: u64 = (1 << 53) - 1;
pub const MAX_LAST: usize = 10_000;

/// A parsed `/v1/flows` query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowQuery {
    /// Only flows with a `seq` above this (following: the last one seen).
    pub after: Option<u64>,
    /// The newest `last` matching flows (default 100).
    pub last: Option<usize>,
    pub filter: FlowFilter,
}

/// Every set field must match (AND); `not` inverts the whole filter (Hubble's `--not`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub verdict: Option<String>,
    pub kind: Option<String>,
    pub protocol: Option<String>,
    /// Source, destination or translated port.
    pub port: Option<u16>,
    pub from_ip: Option<IpAddr>,
    /// Destination or translated address.
    pub to_ip: Option<IpAddr>,
    /// Any address of the flow.
    pub ip: Option<IpAddr>,
    /// `namespace/name`, or a name in any namespace.
    pub service: Option<String>,
    /// The source pod: `[namespace/]name-prefix` (no namespace: `default`, as Hubble has it).
    pub from_pod: Option<String>,
    /// The destination pod, the same way.
    pub to_pod: Option<String>,
    /// The source or the destination pod.
    pub pod: Option<String>,
    /// The source pod's namespace.
    pub from_namespace: Option<String>,
    pub to_namespace: Option<String>,
    /// The source or the destination pod's namespace.
    pub namespace: Option<String>,
    /// The source pod's labels: `k=v` or `k` (has the key), comma-separated, all required.
    pub from_label: Option<Labels>,
    pub to_label: Option<Labels>,
    /// The source's or the destination's labels.
    pub label: Option<Labels>,
    pub not: bool,
}

/// `k=v,k2` as a filter: every requirement must hold (a key alone: the key is there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<(String, Option<String>)>);

impl Labels {
    /// Parses `k=v,k2`: keys not empty, no empty requirement (the spec's pattern says the
    /// same).
    pub fn parse(key: &str, text: &str) -> Result<Self, String> {
        text.split(',')
            .map(|req| {
                let (k, v) = match req.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_owned())),
                    None => (req, None),
                };
                if k.is_empty() {
                    return Err(format!(
                        "{key}={text:?}: expected k=v or k, comma-separated"
                    ));
                }
                Ok((k.to_owned(), v))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `labels` (`k=v` each) meet every requirement.
    #[must_use]
    pub fn matches(&self, labels: &[String]) -> bool {
        self.0.iter().all(|(k, v)| {
            labels.iter().any(|l| {
                l.split_once('=')
                    .is_some_and(|(lk, lv)| lk == k && v.as_deref().is_none_or(|want| want == lv))
            })
        })
    }
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(k)?;
            if let Some(v) = v {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

/// Whether `pod` (`namespace/name`) is `want`: `[namespace/]name-prefix`, no namespace being
/// `default` (Hubble's `--pod`).
fn pod_matches(want: &str, pod: Option<&str>) -> bool {
    let (ns, prefix) = want.split_once('/').unwrap_or(("default", want));
    pod.and_then(|p| p.split_once('/'))
        .is_some_and(|(pns, name)| pns == ns && name.starts_with(prefix))
}

fn namespace_of(pod: Option<&str>) -> Option<&str> {
    pod.and_then(|p| p.split_once('/')).map(|(ns, _)| ns)
}

const VERDICTS: [&str; 2] = ["FORWARDED", "DROPPED"];
const KINDS: [&str; 4] = ["sock-lb", "north-south", "masquerade", "l2"];

/// Exactly one of `allowed` (the API is strict; the CLI normalises case first).
fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<String, String> {
    allowed
        .iter()
        .find(|a| **a == value)
        .map(|a| (*a).to_owned())
        .ok_or_else(|| format!("{key}={value:?}: expected one of {}", allowed.join(", ")))
}

fn decode_component(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

fn ip(key: &str, value: &str) -> Result<IpAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value:?}: not an IP address"))
}

impl FlowQuery {
    /// Parses `key=value&…`; an unknown key or a bad value is an error naming it.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut q = Self::default();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_component(key)?;
            let value = decode_component(value)?;
            let f = &mut q.filter;
            match key.as_str() {
                "after" => {
                    let seq: u64 = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_SEQ)
                        .ok_or_else(|| format!("after={value:?}: 0 to {MAX_SEQ}"))?;
                    q.after = Some(seq);
                }
                "last" => {
                    let n: usize = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LAST).contains(n))
                        .ok_or_else(|| format!("last={value:?}: 1 to {MAX_LAST}"))?;
                    q.last = Some(n);
                }
                "verdict" => f.verdict = Some(one_of("verdict", &value, &VERDICTS)?),
                "type" => f.kind = Some(one_of("type", &value, &KINDS)?),
                "protocol" => {
                    f.protocol = Some(one_of(
                        "protocol",
                        &value,
                        &["TCP", "UDP", "ICMP", "ICMPv6", "ARP", "NDP"],
                    )?);
                }
                "port" => {
                    f.port = Some(
                        value
                            .parse()
                            .map_err(|_| format!("port={value:?}: 0 to 65535"))?,
                    );
                }
                "from_ip" => f.from_ip = Some(ip("from_ip", &value)?),
                "to_ip" => f.to_ip = Some(ip("to_ip", &value)?),
                "ip" => f.ip = Some(ip("ip", &value)?),
                "service" => f.service = Some(value).filter(|v| !v.is_empty()),
                "from_pod" => f.from_pod = Some(value).filter(|v| !v.is_empty()),
                "to_pod" => f.to_pod = Some(value).filter(|v| !v.is_empty()),
                "pod" => f.pod = Some(value).filter(|v| !v.is_empty()),
                "from_namespace" => f.from_namespace = Some(value).filter(|v| !v.is_empty()),
                "to_namespace" => f.to_namespace = Some(value).filter(|v| !v.is_empty()),
                "namespace" => f.namespace = Some(value).filter(|v| !v.is_empty()),
                "from_label" => f.from_label = Some(Labels::parse(&key, &value)?),
                "to_label" => f.to_label = Some(Labels::parse(&key, &value)?),
                "label" => f.label = Some(Labels::parse(&key, &value)?),
                "not" => {
                    f.not = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("not={value:?}: true or false")),
                    };
                }
                other => return Err(format!("unknown query parameter {other:?}")),
            }
        }
        Ok(q)
    }

    /// The query string that [`Self::parse`] reads back (for the CLI).
    #[must_use]
    pub fn to_query(&self) -> String {
        let f = &self.filter;
        let mut parts: Vec<String> = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                let v: String = v
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._:".contains(&b) {
                            char::from(b).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                parts.push(format!("{k}={v}"));
            }
        };
        push("after", self.after.map(|a| a.to_string()));
        push("last", self.last.map(|l| l.to_string()));
        push("verdict", f.verdict.clone());
        push("type", f.kind.clone());
        push("protocol", f.protocol.clone());
        push("port", f.port.map(|p| p.to_string()));
        push("from_ip", f.from_ip.map(|i| i.to_string()));
        push("to_ip", f.to_ip.map(|i| i.to_string()));
        push("ip", f.ip.map(|i| i.to_string()));
        push("service", f.service.clone());
        push("from_pod", f.from_pod.clone());
        push("to_pod", f.to_pod.clone());
        push("pod", f.pod.clone());
        push("from_namespace", f.from_namespace.clone());
        push("to_namespace", f.to_namespace.clone());
        push("namespace", f.namespace.clone());
        push("from_label", f.from_label.as_ref().map(ToString::to_string));
        push("to_label", f.to_label.as_ref().map(ToString::to_string));
        push("label", f.label.as_ref().map(ToString::to_string));
        push("not", f.not.then(|| "true".to_owned()));
        parts.join("&")
    }
}

fn same_ip(text: Option<&str>, want: IpAddr) -> bool {
    text.and_then(|t| t.parse::<IpAddr>().ok()) == Some(want)
}

impl FlowFilter {
    fn matches_all(&self, f: &Flow) -> bool {
        let service_ok = self.service.as_ref().is_none_or(|want| {
            f.service.as_deref().is_some_and(|s| {
                s == want || s.rsplit_once('/').is_some_and(|(_, name)| name == want)
            })
        });
        self.verdict.as_ref().is_none_or(|v| *v == f.verdict)
            && self.kind.as_ref().is_none_or(|k| *k == f.kind)
            && self.protocol.as_ref().is_none_or(|p| *p == f.protocol)
            && self.port.is_none_or(|p| {
                f.source_port == Some(p) || f.destination_port == p || f.translated_port == Some(p)
            })
            && self
                .from_ip
                .is_none_or(|ip| same_ip(f.source_ip.as_deref(), ip))
            && self.to_ip.is_none_or(|ip| {
                same_ip(Some(&f.destination_ip), ip) || same_ip(f.translated_ip.as_deref(), ip)
            })
            && self.ip.is_none_or(|ip| {
                same_ip(f.source_ip.as_deref(), ip)
                    || same_ip(Some(&f.destination_ip), ip)
                    || same_ip(f.translated_ip.as_deref(), ip)
            })
            && service_ok
            && self.pods_match(f)
    }

    fn pods_match(&self, f: &Flow) -> bool {
        let (src, dst) = (f.source_pod.as_deref(), f.destination_pod.as_deref());
        let either = |test: &dyn Fn(Option<&str>) -> bool| test(src) || test(dst);
        self.from_pod.as_deref().is_none_or(|w| pod_matches(w, src))
            && self.to_pod.as_deref().is_none_or(|w| pod_matches(w, dst))
            && self
                .pod
                .as_deref()
                .is_none_or(|w| either(&|p| pod_matches(w, p)))
            && self
                .from_namespace
                .as_deref()
                .is_none_or(|w| namespace_of(src) == Some(w))
            && self
                .to_namespace
                .as_deref()
                .is_none_or(|w| namespace_of(dst) == Some(w))
            && self
                .namespace
                .as_deref()
                .is_none_or(|w| either(&|p| namespace_of(p) == Some(w)))
            && self
                .from_label
                .as_ref()
                .is_none_or(|l| src.is_some() && l.matches(&f.source_labels))
            && self
                .to_label
                .as_ref()
                .is_none_or(|l| dst.is_some() && l.matches(&f.destination_labels))
            && self.label.as_ref().is_none_or(|l| {
                (src.is_some() && l.matches(&f.source_labels))
                    || (dst.is_some() && l.matches(&f.destination_labels))
            })
    }

    #[must_use]
    pub fn matches(&self, f: &Flow) -> bool {
        self.matches_all(f) != self.not
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            seq: 1,
            time_unix_ms: 0,
            node: "n1".into(),
            kind: "north-south".into(),
            verdict: "FORWARDED".into(),
            drop_reason: None,
            protocol: "TCP".into(),
            source_ip: Some("192.168.1.9".into()),
            source_port: Some(40000),
            destination_ip: "10.20.30.100".into(),
            destination_port: 80,
            translated_ip: Some("10.244.1.5".into()),
            translated_port: Some(8080),
            service: Some("default/web".into()),
            interface: Some("eth0".into()),
            tcp_flags: vec!["SYN".into()],
            snat: true,
            socket_cookie: None,
            traffic_direction: "ingress".into(),
            source_pod: None,
            source_labels: Vec::new(),
            destination_pod: Some("default/web-1".into()),
            destination_labels: vec!["app=web".into(), "tier=front".into()],
            l2_event: None,
            l2_previous_owner: None,
            l2_failover_ms: None,
            is_reply: Some(false),
        }
    }

    #[test]
    fn every_parameter_parses_and_round_trips() {
        let q = FlowQuery::parse(Some(
            "after=5&last=20&verdict=DROPPED&type=sock-lb&protocol=UDP&port=53&from_ip=10.0.0.1\
             &to_ip=fd00%3A%3A1&ip=1.2.3.4&service=kube-system%2Fdns&not=true",
        ))
        .unwrap();
        assert_eq!(q.after, Some(5));
        assert_eq!(q.last, Some(20));
        assert_eq!(q.filter.verdict.as_deref(), Some("DROPPED"));
        assert_eq!(q.filter.protocol.as_deref(), Some("UDP"));
        assert_eq!(q.filter.to_ip, Some("fd00::1".parse().unwrap()));
        assert_eq!(q.filter.service.as_deref(), Some("kube-system/dns"));
        assert!(q.filter.not);
        assert_eq!(FlowQuery::parse(Some(&q.to_query())).unwrap(), q);
        assert_eq!(FlowQuery::parse(None).unwrap(), FlowQuery::default());
    }

    #[test]
    fn bad_parameters_name_what_is_wrong() {
        for (q, want) in [
            ("last=0", "last"),
            ("last=10001", "last"),
            ("verdict=maybe", "verdict"),
            ("port=70000", "port"),
            ("from_ip=nope", "from_ip"),
            ("color=red", "unknown query parameter"),
            ("not=perhaps", "not"),
            ("not", "not"),
            ("verdict=dropped", "verdict"),
            ("ip=%zz", "percent"),
        ] {
            let e = FlowQuery::parse(Some(q)).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
    }

    #[test]
    fn filters_match_as_hubble_does_and_not_inverts() {
        let f = flow();
        let yes = |q: &str| FlowQuery::parse(Some(q)).unwrap().filter.matches(&f);
        assert!(yes(""));
        assert!(yes("verdict=FORWARDED&type=north-south&protocol=TCP"));
        assert!(yes("port=8080") && yes("port=40000") && yes("port=80"));
        assert!(!yes("port=81"));
        assert!(yes("from_ip=192.168.1.9") && !yes("from_ip=10.20.30.100"));
        assert!(yes("to_ip=10.20.30.100") && yes("to_ip=10.244.1.5"));
        assert!(yes("ip=10.244.1.5") && !yes("ip=1.1.1.1"));
        assert!(yes("service=default/web") && yes("service=web") && !yes("service=other/web"));
        assert!(!yes("verdict=DROPPED"));
        assert!(yes("verdict=DROPPED&not=true"));
        assert!(!yes("protocol=TCP&not=true"));
        assert!(yes("service="));
    }

    #[test]
    fn pod_namespace_and_label_parameters_parse_and_round_trip() {
        let q = FlowQuery::parse(Some(
            "from_pod=kube-system%2Fcoredns&to_pod=web&pod=default%2Fweb-1&from_namespace=a\
             &to_namespace=b&namespace=c&from_label=app%3Dweb%2Ctier&to_label=k&label=x%3D",
        ))
        .unwrap();
        let f = &q.filter;
        assert_eq!(f.from_pod.as_deref(), Some("kube-system/coredns"));
        assert_eq!(f.to_pod.as_deref(), Some("web"));
        assert_eq!(f.namespace.as_deref(), Some("c"));
        assert_eq!(
            f.from_label,
            Some(Labels(vec![
                ("app".into(), Some("web".into())),
                ("tier".into(), None)
            ]))
        );
        assert_eq!(
            f.label,
            Some(Labels(vec![("x".into(), Some(String::new()))]))
        );
        assert_eq!(FlowQuery::parse(Some(&q.to_query())).unwrap(), q);
        for bad in [
            "label=",
            "label=%3Dv",
            "from_label=a%2C%2Cb",
            "to_label=a%2C",
        ] {
            let e = FlowQuery::parse(Some(bad)).unwrap_err();
            assert!(e.contains("k=v or k"), "{bad}: {e}");
        }
    }

    #[test]
    fn pods_match_by_namespace_and_name_prefix_namespaces_and_labels_by_side() {
        let mut f = flow();
        f.source_pod = Some("kube-system/client-abc".into());
        f.source_labels = vec!["app=client".into()];
        let yes = |f: &Flow, q: &str| FlowQuery::parse(Some(q)).unwrap().filter.matches(f);
        // Pods: [namespace/]prefix, no namespace meaning `default`.
        assert!(yes(&f, "to_pod=web") && yes(&f, "to_pod=default/web-1"));
        assert!(!yes(&f, "to_pod=kube-system/web") && !yes(&f, "to_pod=db"));
        assert!(yes(&f, "from_pod=kube-system/client") && !yes(&f, "from_pod=client"));
        assert!(!yes(&f, "from_pod=default/web"), "the source is not web");
        assert!(yes(&f, "pod=web") && yes(&f, "pod=kube-system/cl"));
        assert!(!yes(&f, "pod=other"));
        // Namespaces.
        assert!(yes(&f, "from_namespace=kube-system") && !yes(&f, "from_namespace=default"));
        assert!(yes(&f, "to_namespace=default") && !yes(&f, "to_namespace=kube-system"));
        assert!(yes(&f, "namespace=default") && yes(&f, "namespace=kube-system"));
        assert!(!yes(&f, "namespace=prod"));
        // Labels: k=v or k, every one on the same side.
        assert!(yes(&f, "to_label=app%3Dweb%2Ctier") && yes(&f, "to_label=tier%3Dfront"));
        assert!(!yes(&f, "to_label=app%3Dclient") && !yes(&f, "to_label=app%3Dweb%2Czone"));
        assert!(yes(&f, "from_label=app") && !yes(&f, "from_label=tier"));
        assert!(yes(&f, "label=app%3Dclient") && yes(&f, "label=tier"));
        assert!(!yes(&f, "label=app%3Dclient%2Ctier"), "not on one side");
        assert!(!yes(&f, "label=ap"), "a key is not a prefix");
        // --not inverts them too; a flow without pods matches no pod filter.
        assert!(yes(&f, "to_pod=db&not=true") && !yes(&f, "to_pod=web&not=true"));
        let bare = flow_without_pods();
        assert!(!yes(&bare, "pod=web") && !yes(&bare, "namespace=default"));
        assert!(!yes(&bare, "label=app") && yes(&bare, "label=app&not=true"));
    }

    fn flow_without_pods() -> Flow {
        Flow {
            destination_pod: None,
            destination_labels: Vec::new(),
            ..flow()
        }
    }
}
