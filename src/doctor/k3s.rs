//! The k3s settings that matter to ferrite, as k3s itself resolves them: `config.yaml`, then
//! every `config.yaml.d/*.yaml` in lexical order (a later file replaces a key; `key+:` appends
//! to a list), then the flags on the unit's command line, which win.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

/// The resolved settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K3sFlags {
    /// `flannel-backend` (k3s's default: vxlan).
    pub flannel_backend: Option<String>,
    pub disable_network_policy: bool,
    pub disable_kube_proxy: bool,
    /// `disable` (packaged components: servicelb, traefik, …).
    pub disable: BTreeSet<String>,
    /// Where each setting came from last, for the messages.
    pub sources: Vec<String>,
    /// Files that could not be parsed: (path, error).
    pub errors: Vec<(String, String)>,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => false,
    }
}

fn words(v: &Value) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    match v {
        Value::String(s) => split(s),
        Value::Sequence(items) => items
            .iter()
            .filter_map(Value::as_str)
            .flat_map(split)
            .collect(),
        _ => Vec::new(),
    }
}

impl K3sFlags {
    fn set(&mut self, key: &str, value: &Value, origin: &str) {
        let (key, append) = key.strip_suffix('+').map_or((key, false), |k| (k, true));
        match key {
            "flannel-backend" => {
                self.flannel_backend = value.as_str().map(String::from);
            }
            "disable-network-policy" => self.disable_network_policy = truthy(value),
            "disable-kube-proxy" => self.disable_kube_proxy = truthy(value),
            "disable" => {
                if !append {
                    self.disable.clear();
                }
                self.disable.extend(words(value));
            }
            _ => return,
        }
        self.sources.push(format!("{key} from {origin}"));
    }

    /// Applies one config file.
    fn file(&mut self, path: &str, text: &str) {
        let doc: Value = match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push((path.to_owned(), e.to_string()));
                return;
            }
        };
        let Value::Mapping(m) = doc else {
            return;
        };
        for (k, v) in &m {
            if let Some(k) = k.as_str() {
                self.set(k, v, path);
            }
        }
    }

    /// Applies the flags of a `k3s server|agent ...` command line.
    fn command(&mut self, origin: &str, line: &str) {
        let tokens: Vec<&str> = line
            .split_whitespace()
            .map(|t| t.trim_matches(|c| c == '\'' || c == '"' || c == '\\'))
            .filter(|t| !t.is_empty())
            .collect();
        let mut i = 0;
        while i < tokens.len() {
            let Some(flag) = tokens[i].strip_prefix("--") else {
                i += 1;
                continue;
            };
            let (name, inline) = flag
                .split_once('=')
                .map_or((flag, None), |(n, v)| (n, Some(v.to_owned())));
            let takes_value = matches!(name, "flannel-backend" | "disable");
            let value = match (inline, takes_value) {
                (Some(v), _) => Value::String(v),
                (None, true) => {
                    i += 1;
                    Value::String(tokens.get(i).copied().unwrap_or_default().to_owned())
                }
                (None, false) => Value::Bool(true),
            };
            // On the command line a repeated --disable adds to the list.
            let key = if name == "disable" { "disable+" } else { name };
            self.set(key, &value, origin);
            i += 1;
        }
    }
}

/// Resolves the inputs' files and command lines.
#[must_use]
pub fn resolve(inputs: &super::K3sInputs) -> K3sFlags {
    let mut f = K3sFlags::default();
    for (path, text) in &inputs.config_files {
        f.file(path, text);
    }
    for (unit, line) in &inputs.unit_commands {
        f.command(unit, line);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::super::K3sInputs;
    use super::*;

    fn files(list: &[(&str, &str)]) -> K3sInputs {
        K3sInputs {
            installed: true,
            config_files: list
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                .collect(),
            unit_commands: Vec::new(),
        }
    }

    #[test]
    fn drop_ins_override_and_append_like_k3s() {
        let f = resolve(&files(&[
            (
                "/etc/rancher/k3s/config.yaml",
                "flannel-backend: vxlan\ndisable: [traefik]\n",
            ),
            (
                "/etc/rancher/k3s/config.yaml.d/90-ferrite.yaml",
                "flannel-backend: none\ndisable-network-policy: true\ndisable-kube-proxy: true\ndisable+: servicelb\n",
            ),
        ]));
        assert_eq!(f.flannel_backend.as_deref(), Some("none"));
        assert!(f.disable_network_policy && f.disable_kube_proxy);
        assert_eq!(
            f.disable,
            BTreeSet::from(["servicelb".to_owned(), "traefik".to_owned()])
        );
        // Without `+` a later file replaces the list.
        let f = resolve(&files(&[
            ("a.yaml", "disable: [servicelb]"),
            ("b.yaml", "disable: traefik"),
        ]));
        assert_eq!(f.disable, BTreeSet::from(["traefik".to_owned()]));
    }

    #[test]
    fn unit_flags_win_in_both_spellings() {
        let mut i = files(&[("c.yaml", "flannel-backend: none")]);
        i.unit_commands.push((
            "/etc/systemd/system/k3s.service".into(),
            "/usr/local/bin/k3s server '--flannel-backend=vxlan' --disable servicelb \\ \
             --disable=traefik,metrics-server --disable-kube-proxy"
                .into(),
        ));
        let f = resolve(&i);
        assert_eq!(f.flannel_backend.as_deref(), Some("vxlan"));
        assert!(f.disable_kube_proxy && !f.disable_network_policy);
        assert_eq!(f.disable.len(), 3, "{:?}", f.disable);
    }

    #[test]
    fn a_broken_file_is_reported_not_ignored() {
        let f = resolve(&files(&[("bad.yaml", "flannel-backend: [")]));
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.errors[0].0, "bad.yaml");
    }
}
