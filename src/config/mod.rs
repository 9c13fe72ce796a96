//! Configuration: read the TOML file, then validate it into a typed `Config`.
//!
//! Two stages (as ripgrep does with flags): `raw` mirrors the file, this module
//! turns it into values the rest of the gateway can use without re-checking.
//! TLS material (certificates, keys, CAs, CRLs) is loaded by `tls::material`,
//! which reports errors in the same `ConfigError` form.

mod limits;
pub mod raw;
mod server_tls;
mod types;
mod validate;

pub use types::*;

use crate::tune::profile::Knobs;
use raw::RawConfig;
use std::path::Path;
use validate::Validator;

/// Reads and validates `path`. TLS files are only checked for existence here.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read config file: {e}")))?;
    parse(path, &text)
}

/// Validates config text as if read from `path` (relative paths resolve beside it).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, &Knobs::default())
}

/// Like `load`, with a tuning profile's knobs as defaults (explicit keys win).
pub fn load_with(path: &Path, knobs: &Knobs) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read config file: {e}")))?;
    parse_with(path, &text, knobs)
}

pub fn parse_with(path: &Path, text: &str, knobs: &Knobs) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let key = key_of_toml_error(text, e.span());
        match line {
            Some(l) => ConfigError::new(path, key, format!("line {l}: {msg}")),
            None => ConfigError::new(path, key, msg),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Validator {
        file: path,
        base,
        knobs,
    }
    .config(raw)
}

/// Best-effort name of the key a toml error points at: the key on the error's line.
fn key_of_toml_error(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(start) = span.map(|s| s.start.min(text.len())) else {
        return String::new();
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) => k.trim().to_string(),
        None => line.trim().trim_matches(['[', ']']).to_string(),
    }
}
