//! Tuning profiles: sysctl.d files (what `sysctl -p` reads) whose `# mtlsgate:`
//! comment lines carry the gateway's own knobs. Shipped inside the binary and
//! in `tuning/`; `--profile-dir` points at another set.

use std::path::{Path, PathBuf};

/// Profiles built into the binary (the files in `tuning/`).
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../tuning/default.conf")),
    (
        "handshake-storm",
        include_str!("../../tuning/handshake-storm.conf"),
    ),
    ("throughput", include_str!("../../tuning/throughput.conf")),
    ("low-latency", include_str!("../../tuning/low-latency.conf")),
];

/// Keys whose values are words, not integers.
const STRING_KEYS: &[&str] = &["net.ipv4.tcp_congestion_control", "net.core.default_qdisc"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    /// A leading `-`: sysctl ignores failures to set it.
    pub optional: bool,
    pub line: usize,
}

/// Gateway knobs a profile may set; an explicit config key wins over them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Knobs {
    pub workers: Option<usize>,
    pub backlog: Option<u32>,
    pub max_connections: Option<usize>,
    pub max_handshakes: Option<usize>,
    pub tickets: Option<usize>,
    pub ring_entries: Option<u32>,
    pub sqpoll_idle_ms: Option<u32>,
    pub nofile: Option<u64>,
    pub prefer_client_suites: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub source: String,
    pub settings: Vec<Setting>,
    pub knobs: Knobs,
}

fn num<T: std::str::FromStr>(src: &str, line: usize, key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{src}:{line}: {key}: {v:?} is not a valid number"))
}

impl Profile {
    /// Parses profile text; errors carry `source:line`.
    pub fn parse(name: &str, source: &str, text: &str) -> Result<Profile, String> {
        let mut settings = Vec::new();
        let mut knobs = Knobs::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            if let Some(k) = t
                .strip_prefix('#')
                .map(str::trim)
                .and_then(|c| c.strip_prefix("mtlsgate:"))
            {
                let (key, v) = k.split_once('=').ok_or_else(|| {
                    format!("{source}:{line}: expected `# mtlsgate: key = value`")
                })?;
                let (key, v) = (key.trim(), v.trim());
                match key {
                    "workers" => knobs.workers = Some(num(source, line, key, v)?),
                    "backlog" => knobs.backlog = Some(num(source, line, key, v)?),
                    "max_connections" => knobs.max_connections = Some(num(source, line, key, v)?),
                    "max_handshakes" => knobs.max_handshakes = Some(num(source, line, key, v)?),
                    "tickets" => knobs.tickets = Some(num(source, line, key, v)?),
                    "ring_entries" => knobs.ring_entries = Some(num(source, line, key, v)?),
                    "sqpoll_idle_ms" => knobs.sqpoll_idle_ms = Some(num(source, line, key, v)?),
                    "nofile" => knobs.nofile = Some(num(source, line, key, v)?),
                    "prefer_client_suites" => {
                        knobs.prefer_client_suites = Some(num(source, line, key, v)?)
                    }
                    other => {
                        return Err(format!("{source}:{line}: unknown mtlsgate knob {other:?}"))
                    }
                }
                continue;
            }
            if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                continue;
            }
            let (optional, t) = match t.strip_prefix('-') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, t),
            };
            let (key, value) = t
                .split_once('=')
                .ok_or_else(|| format!("{source}:{line}: expected `key = value`, found {t:?}"))?;
            let key = key.trim().replace('/', ".");
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
            {
                return Err(format!("{source}:{line}: bad key {key:?}"));
            }
            if value.is_empty() {
                return Err(format!("{source}:{line}: {key}: empty value"));
            }
            if !STRING_KEYS.contains(&key.as_str())
                && !value.split(' ').all(|f| f.parse::<i64>().is_ok())
            {
                return Err(format!(
                    "{source}:{line}: {key}: {value:?} is not an integer (or integers)"
                ));
            }
            settings.push(Setting {
                key,
                value,
                optional,
                line,
            });
        }
        Ok(Profile {
            name: name.to_string(),
            source: source.to_string(),
            settings,
            knobs,
        })
    }
}

/// Profile names available: from `dir` if given, else the built-in set.
pub fn list(dir: Option<&Path>) -> Result<Vec<String>, String> {
    match dir {
        None => Ok(BUILTIN.iter().map(|(n, _)| n.to_string()).collect()),
        Some(d) => {
            let mut names: Vec<String> = std::fs::read_dir(d)
                .map_err(|e| format!("{}: {e}", d.display()))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".conf")
                        .map(str::to_string)
                })
                .collect();
            names.sort();
            Ok(names)
        }
    }
}

pub fn load(name: &str, dir: Option<&Path>) -> Result<Profile, String> {
    match dir {
        None => {
            let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                format!(
                    "no profile {name:?}; known: {}",
                    list(None).unwrap_or_default().join(", ")
                )
            })?;
            Profile::parse(name, &format!("tuning/{name}.conf (built in)"), text)
        }
        Some(d) => {
            let p: PathBuf = d.join(format!("{name}.conf"));
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            Profile::parse(name, &p.display().to_string(), &text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse() {
        for (n, t) in BUILTIN {
            Profile::parse(n, n, t).unwrap();
        }
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let e = Profile::parse(
            "x",
            "x.conf",
            "net.core.somaxconn = 10\nnet.core.somaxconn = lots\n",
        )
        .unwrap_err();
        assert!(e.starts_with("x.conf:2:"), "{e}");
        let e = Profile::parse("x", "x.conf", "# mtlsgate: backlog = many\n").unwrap_err();
        assert!(e.starts_with("x.conf:1:"), "{e}");
        assert!(Profile::parse("x", "x.conf", "just words\n")
            .unwrap_err()
            .starts_with("x.conf:1:"));
    }
}
