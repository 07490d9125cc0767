//! The `CNI_*` environment, parsed and validated as spec 1.1 section 2 says.

use std::fmt;
use std::path::PathBuf;

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }

    /// The variables this command cannot run without.
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::Add | Self::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Self::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Self::Gc => &["CNI_PATH"],
            Self::Status | Self::Version => &[],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Gc => "GC",
            Self::Status => "STATUS",
            Self::Version => "VERSION",
        })
    }
}

/// A bad or missing `CNI_*` variable (error code 4); the message names the variables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("CNI_COMMAND is {0:?}; expected ADD, DEL, CHECK, GC, STATUS or VERSION")]
    UnknownCommand(String),
    #[error("{command} needs {}: missing", .missing.join(", "))]
    Missing {
        command: Command,
        missing: Vec<&'static str>,
    },
    #[error(
        "CNI_CONTAINERID {0:?}: must start with a letter or digit, then letters, digits, _ . -"
    )]
    ContainerId(String),
    #[error("CNI_IFNAME {name:?}: {why}")]
    IfName { name: String, why: &'static str },
    #[error("CNI_ARGS {0:?}: expected KEY=VALUE pairs separated by ';'")]
    Args(String),
}

/// One attachment: what ADD created and DEL/CHECK/GC refer to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// The parsed environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    /// Set for ADD, DEL and CHECK.
    pub attachment: Option<Attachment>,
    pub netns: Option<PathBuf>,
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads `CNI_*` through `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let raw = get("CNI_COMMAND").unwrap_or_default();
        let command = Command::parse(&raw).ok_or(EnvError::UnknownCommand(raw))?;
        let missing: Vec<&'static str> = command
            .required()
            .iter()
            .copied()
            .filter(|v| get(v).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::Missing { command, missing });
        }
        let attachment = match (get("CNI_CONTAINERID"), get("CNI_IFNAME")) {
            (Some(container_id), Some(ifname))
                if matches!(command, Command::Add | Command::Del | Command::Check) =>
            {
                validate_container_id(&container_id)?;
                validate_ifname(&ifname)?;
                Some(Attachment {
                    container_id,
                    ifname,
                })
            }
            _ => None,
        };
        let args = match get("CNI_ARGS") {
            Some(a) => parse_args(&a)?,
            None => Vec::new(),
        };
        Ok(Self {
            command,
            attachment,
            netns: get("CNI_NETNS").map(PathBuf::from),
            args,
            path: get("CNI_PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        })
    }

    /// The value of `KEY` in `CNI_ARGS`.
    #[must_use]
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `namespace/name` of the Kubernetes pod, when the runtime passed `K8S_POD_*`.
    #[must_use]
    pub fn pod(&self) -> Option<String> {
        let name = self.arg("K8S_POD_NAME")?;
        Some(match self.arg("K8S_POD_NAMESPACE") {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        })
    }
}

/// Letters/digits first, then letters, digits, `_`, `.`, `-` (the spec's rule for ids and names).
#[must_use]
pub fn valid_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn validate_container_id(id: &str) -> Result<(), EnvError> {
    if valid_name(id) {
        Ok(())
    } else {
        Err(EnvError::ContainerId(id.to_owned()))
    }
}

/// Kernel interface-name rules: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), EnvError> {
    let why = if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains / or : or whitespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(EnvError::IfName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

fn parse_args(text: &str) -> Result<Vec<(String, String)>, EnvError> {
    text.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| EnvError::Args(text.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, EnvError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ADD needs CNI_CONTAINERID, CNI_NETNS: missing"
        );
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1.2_3"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ])
        .unwrap();
        assert_eq!(ok.command, Command::Add);
        assert_eq!(ok.attachment.as_ref().unwrap().container_id, "abc-1.2_3");
        assert_eq!(ok.pod().as_deref(), Some("ns/web"));
        assert_eq!(ok.path.len(), 2);
    }

    #[test]
    fn del_does_not_need_a_netns_and_gc_needs_a_path() {
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "eth0")
            ])
            .is_ok()
        );
        assert!(matches!(
            env(&[("CNI_COMMAND", "GC")]),
            Err(EnvError::Missing { .. })
        ));
        assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(env(&[]), Err(EnvError::UnknownCommand(_))));
        assert!(matches!(
            env(&[("CNI_COMMAND", "add")]),
            Err(EnvError::UnknownCommand(_))
        ));
        let base = [("CNI_COMMAND", "DEL"), ("CNI_IFNAME", "eth0")];
        for bad in ["-abc", "a/b", "a b", "ä"] {
            let mut v = base.to_vec();
            v.push(("CNI_CONTAINERID", bad));
            assert!(matches!(env(&v), Err(EnvError::ContainerId(_))), "{bad}");
        }
        for bad in ["0123456789abcdef", ".", "..", "a/b", "a:b", "a b"] {
            let v = [
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", bad),
            ];
            assert!(matches!(env(&v), Err(EnvError::IfName { .. })), "{bad}");
        }
        let v = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "novalue"),
        ];
        assert!(matches!(env(&v), Err(EnvError::Args(_))));
    }
}
