//! Access policy as plain data: allow-lists matched against a `PeerId`.

use crate::identity::PeerId;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `uri:spiffe://x/*` — prefix before the trailing `*`.
    UriPrefix(String),
    UriExact(String),
    /// `dns:name`, lower-cased (DNS names compare case-insensitively).
    Dns(String),
    /// `sha256:hex`, lower-case, colons removed.
    Sha256(String),
    /// `cn:Name`: the subject has exactly one CN and it is `Name`. A subject
    /// with several CNs matches no `cn:` rule: which one names the partner is
    /// ambiguous, and the partner chose them all in its CSR.
    Cn(String),
}

/// A list of rules; a peer is allowed if any rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
    text: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

impl AllowList {
    /// Parses entries such as `uri:spiffe://partner.example/*`, `dns:a.example`,
    /// `sha256:<64 hex>`, `cn:Partner C`.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut rules = Vec::new();
        for e in entries {
            let (kind, v) = e
                .split_once(':')
                .ok_or_else(|| format!("{e:?}: expected kind:value (uri:, dns:, sha256:, cn:)"))?;
            if v.is_empty() {
                return Err(format!("{e:?}: empty value"));
            }
            let rule = match kind {
                "uri" => match v.find('*') {
                    None => Rule::UriExact(v.to_string()),
                    Some(i) if i == v.len() - 1 => Rule::UriPrefix(v[..i].to_string()),
                    Some(_) => {
                        return Err(format!("{e:?}: '*' is only allowed as the last character"))
                    }
                },
                "dns" => {
                    if v.contains('*') {
                        return Err(format!("{e:?}: wildcards are not supported in dns rules"));
                    }
                    Rule::Dns(v.to_ascii_lowercase())
                }
                "sha256" => {
                    let h: String = v
                        .chars()
                        .filter(|c| *c != ':')
                        .collect::<String>()
                        .to_ascii_lowercase();
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("{e:?}: sha256 needs 64 hex digits"));
                    }
                    Rule::Sha256(h)
                }
                "cn" => Rule::Cn(v.to_string()),
                k => {
                    return Err(format!(
                        "{e:?}: unknown kind {k:?} (use uri, dns, sha256 or cn)"
                    ))
                }
            };
            rules.push(rule);
        }
        Ok(AllowList {
            rules,
            text: entries.to_vec(),
        })
    }

    pub fn matches(&self, p: &PeerId) -> bool {
        self.rules.iter().any(|r| match r {
            Rule::UriPrefix(pre) => p.uris.iter().any(|u| u.starts_with(pre.as_str())),
            Rule::UriExact(x) => p.uris.iter().any(|u| u == x),
            Rule::Dns(d) => p.dns.iter().any(|n| n == d),
            Rule::Sha256(h) => p.sha256 == *h,
            Rule::Cn(c) => matches!(p.cns.as_slice(), [only] if only == c),
        })
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.text.join(", "))
    }
}

/// Applies one allow-list (`None` = any verified client) to an optional
/// identity. `scope` names the list in a denial and is only called then.
pub fn decide(
    list: Option<&AllowList>,
    peer: Option<&PeerId>,
    scope: impl FnOnce() -> String,
) -> Decision {
    let Some(list) = list else {
        return Decision::Allow;
    };
    match peer {
        None => Decision::Deny(format!("{} requires a client certificate", scope())),
        Some(p) if list.matches(p) => Decision::Allow,
        Some(_) => Decision::Deny(format!("identity not in {} allow-list {list}", scope())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId {
            subject: "CN=Partner C,O=C".into(),
            cns: vec!["Partner C".into()],
            uris: vec!["spiffe://partner.example/ns/a".into()],
            dns: vec!["api.partner-b.example".into()],
            sha256: "ab".repeat(32),
            not_after: 0,
            not_before: 0,
            serial: "01".into(),
            issuer: "CN=Test CA".into(),
        }
    }

    fn list(v: &[&str]) -> AllowList {
        AllowList::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn trailing_star_matches_uri_prefix_only() {
        assert!(list(&["uri:spiffe://partner.example/*"]).matches(&peer()));
        assert!(!list(&["uri:spiffe://other.example/*"]).matches(&peer()));
        assert!(AllowList::parse(&["uri:spiffe://*/x".into()]).is_err());
    }

    #[test]
    fn dns_and_sha256_compare_case_insensitively_and_cn_exactly() {
        assert!(list(&["dns:API.partner-b.example"]).matches(&peer()));
        assert!(list(&[&format!("sha256:{}", "AB".repeat(32))]).matches(&peer()));
        assert!(list(&["cn:Partner C"]).matches(&peer()));
        assert!(!list(&["cn:partner c"]).matches(&peer()));
    }

    #[test]
    fn a_cn_rule_matches_only_a_subject_with_exactly_one_cn() {
        let mut two = peer();
        two.cns = vec!["Partner C".into(), "Partner D".into()];
        assert!(!list(&["cn:Partner C"]).matches(&two));
        assert!(!list(&["cn:Partner D"]).matches(&two));
        two.cns.truncate(1);
        assert!(list(&["cn:Partner C"]).matches(&two));
    }

    #[test]
    fn missing_identity_is_denied_when_a_list_exists() {
        assert_eq!(decide(None, None, || "route".into()), Decision::Allow);
        assert!(matches!(
            decide(Some(&list(&["cn:x"])), None, || "route".into()),
            Decision::Deny(_)
        ));
    }
}
