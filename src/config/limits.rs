//! Validating a listener's `[listener.limits]` table into `LimitsConfig`.

use super::raw::RawLimits;
use super::validate::Validator;
use super::{ConfigError, LimitsConfig};
use crate::limits::{PartnerLimits, Rate, SourceLimits};

impl Validator<'_> {
    /// A rate and its burst: the burst defaults to one second's worth.
    fn rate(
        &self,
        key: &str,
        rate: Option<f64>,
        burst: Option<u32>,
    ) -> Result<Option<Rate>, ConfigError> {
        let Some(per_second) = rate else {
            if burst.is_some() {
                return Err(self.err(format!("{key}.burst"), "needs a request rate to apply to"));
            }
            return Ok(None);
        };
        if !per_second.is_finite() || per_second <= 0.0 {
            return Err(self.err(
                key,
                format!("{per_second}: must be a number of requests per second above 0"),
            ));
        }
        let burst = match burst {
            Some(0) => return Err(self.err(format!("{key}.burst"), "must be at least 1")),
            Some(b) => b,
            None => (per_second.ceil() as u32).max(1),
        };
        Ok(Some(Rate { per_second, burst }))
    }

    fn count(&self, key: &str, v: Option<u32>) -> Result<Option<u32>, ConfigError> {
        match v {
            Some(0) => Err(self.err(key, "must be at least 1 (leave it out for no limit)")),
            v => Ok(v),
        }
    }

    pub(super) fn limits(
        &self,
        i: usize,
        raw: Option<RawLimits>,
    ) -> Result<LimitsConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(LimitsConfig::default());
        };
        let key = |k: &str| format!("listener[{i}].limits.{k}");
        let default = PartnerLimits {
            max_connections: self.count(
                &key("max_connections_per_partner"),
                raw.max_connections_per_partner,
            )?,
            rate: self.rate(
                &key("requests_per_second_per_partner"),
                raw.requests_per_second_per_partner,
                raw.burst,
            )?,
        };
        let mut partners = std::collections::BTreeMap::new();
        for (j, p) in raw.partner.into_iter().enumerate() {
            let pk = |k: &str| format!("listener[{i}].limits.partner[{j}].{k}");
            if p.identity.is_empty() {
                return Err(self.err(
                    pk("identity"),
                    "must not be empty (a SPIFFE ID or a subject)",
                ));
            }
            let l = PartnerLimits {
                max_connections: self.count(&pk("max_connections"), p.max_connections)?,
                rate: self.rate(&pk("requests_per_second"), p.requests_per_second, p.burst)?,
            };
            if partners.insert(p.identity.clone(), l).is_some() {
                return Err(self.err(pk("identity"), format!("{:?} has limits twice", p.identity)));
            }
        }
        let source = SourceLimits {
            max_handshakes_per_source: self.count(
                &key("max_handshakes_per_source"),
                raw.max_handshakes_per_source,
            )?,
        };
        Ok(LimitsConfig {
            default,
            partners,
            source,
        })
    }
}
