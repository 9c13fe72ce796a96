//! Commands that talk to a running gateway over its admin listener:
//! `mtlsgate reload` and `upgrade` ask it to act and report the outcome;
//! `mtlsgate stats` shows it live.

pub mod stats;

use anyhow::Context;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// The admin address: given, or the one the config file names. Only
/// `admin.bind` is read from the file: the rest may be the new, unchecked
/// config the running gateway is about to be asked to load.
pub fn admin_addr(admin: Option<SocketAddr>, config: Option<&Path>) -> anyhow::Result<SocketAddr> {
    if let Some(a) = admin {
        return Ok(a);
    }
    let default = || -> anyhow::Result<SocketAddr> { Ok(crate::config::DEFAULT_ADMIN.parse()?) };
    let Some(path) = config else {
        return default();
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read config file", path.display()))?;
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    match v.get("admin").and_then(|a| a.get("bind")) {
        None => default(),
        Some(toml::Value::String(s)) if s.is_empty() || s == "off" => anyhow::bail!(
            "{}: admin.bind: the admin listener is off, so the running gateway cannot be asked; send SIGHUP instead",
            path.display()
        ),
        Some(toml::Value::String(s)) => s
            .parse()
            .with_context(|| format!("{}: admin.bind: {s:?} is not an address", path.display())),
        Some(_) => anyhow::bail!("{}: admin.bind: must be a string", path.display()),
    }
}

/// One request to the admin listener: (status, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    wait: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("cannot reach the admin listener at {addr}"))?;
    s.set_read_timeout(Some(wait))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .with_context(|| format!("no complete answer from {addr}"))?;
    let text = String::from_utf8_lossy(&out);
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer from {addr}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_string()))
}

/// Asks the gateway at `addr` for a whole-config reload; prints the outcome.
/// Ok(true): applied; Ok(false): refused (the running config stays).
pub fn reload(addr: SocketAddr) -> anyhow::Result<bool> {
    let (code, body) = request(addr, "POST", "/reload", Duration::from_secs(90))?;
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        anyhow::bail!("the gateway answered {code}: {}", body.trim());
    };
    let generation = v["generation"].as_u64().unwrap_or(0);
    let ok = v["result"] == "ok";
    if ok {
        println!("reload applied: generation {generation}");
    } else {
        println!("reload refused: generation {generation} stays in force");
    }
    if let Some(e) = v["error"].as_str() {
        println!("error: {e}");
    }
    for f in v["files"].as_array().into_iter().flatten() {
        let path = f["path"].as_str().unwrap_or("?");
        let key = f["key"].as_str().unwrap_or("?");
        match (f["error"].as_str(), f["sha256"].as_str()) {
            (Some(e), _) => println!("  failed  {key}: {e}"),
            (None, Some(sha)) => println!("  loaded  {key}: {path} sha256:{sha}"),
            (None, None) => println!("  loaded  {key}: {path}"),
        }
    }
    for k in v["restart_needed"].as_array().into_iter().flatten() {
        println!("restart needed for: {}", k.as_str().unwrap_or("?"));
    }
    Ok(ok)
}

/// Upgrades the binary of the gateway at `addr` with no connection lost: asks
/// it (`POST /upgrade`) to start the binary now at its path, which takes over
/// the sockets; answered once the new process serves or failed.
/// Ok(false): the upgrade failed and the old process still serves.
pub fn upgrade(addr: SocketAddr, wait: Duration) -> anyhow::Result<bool> {
    let (code, body) = request(addr, "POST", "/upgrade", wait)?;
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        anyhow::bail!("the gateway answered {code}: {}", body.trim());
    };
    if v["result"] == "ok" {
        println!(
            "upgrade: pid {} serves; pid {} drains its open connections and exits",
            v["pid"], v["old_pid"]
        );
        return Ok(true);
    }
    println!(
        "upgrade failed: {}; pid {} keeps serving",
        v["error"].as_str().unwrap_or("?"),
        v["pid"]
    );
    Ok(false)
}
