//! mtlsgate command line: `run`, `check`, `reload`, `tune`, `ticket-keys`, `demo`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mtlsgate::config::{self, LogFormat};
use mtlsgate::runtime::{self, Gateway};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mtlsgate",
    version,
    about = "Mutual-TLS gateway for B2B APIs (io_uring, thread-per-core)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve with the given config until SIGINT/SIGTERM.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Load and validate the config and every file it names; print a summary.
    Check {
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Ask a running gateway to reload its whole config; prints the outcome
    /// per file. Exit 0: applied; 1: refused (the running config stays);
    /// 2: the gateway could not be asked (or did not answer).
    Reload {
        /// The config file of the running gateway (for its admin address).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The admin listener's address (instead of reading the config).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Replace a running gateway's binary with the one now at its path, with
    /// no connection lost (see README "Upgrade"). Exit 0: the new process
    /// serves; 1: it failed and the old one still serves; 2: could not ask.
    Upgrade {
        /// The config file of the running gateway (for its admin address).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The admin listener's address (instead of reading the config).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// How long to wait for the new process.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// A live view of a running gateway: per listener and top partners,
    /// handshake rates and latency, failures, certificates expiring soon.
    Stats {
        /// The config file of the running gateway (for its admin address).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The admin listener's address (instead of reading the config).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Partners shown per listener.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Redraw at this interval (e.g. 2s) until interrupted.
        #[arg(long, value_parser = humantime::parse_duration)]
        watch: Option<std::time::Duration>,
        /// Print JSON (for scripts) instead of the table.
        #[arg(long)]
        json: bool,
        /// Certificates expiring within this many days are listed.
        #[arg(long, default_value_t = 30)]
        within_days: u64,
    },
    /// sysctl profiles for a gateway host: list, show, diff, verify, apply, revert.
    Tune {
        /// Act on this tree's proc/sys (tests, containers) instead of /.
        #[arg(long, default_value = "/", global = true)]
        root: PathBuf,
        /// Read profiles from this directory instead of the built-in set.
        #[arg(long, global = true)]
        profile_dir: Option<PathBuf>,
        #[command(subcommand)]
        op: mtlsgate::tune::TuneOp,
    },
    /// Manage a session-ticket key file shared by a fleet of gateways.
    TicketKeys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Generate a dev PKI and config, start an echo upstream and the gateway.
    Demo {
        /// Where to write the PKI and config.
        #[arg(long, default_value = "mtlsgate-demo")]
        dir: PathBuf,
        /// Partner-facing port on 127.0.0.1.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// Admin listener address.
        #[arg(long, default_value = config::DEFAULT_ADMIN)]
        admin: std::net::SocketAddr,
    },
}

#[derive(clap::Args)]
struct Tuning {
    /// A tuning profile whose gateway knobs serve as defaults (config keys win).
    #[arg(long)]
    profile: Option<String>,
    /// Read profiles from this directory instead of the built-in set.
    #[arg(long)]
    profile_dir: Option<PathBuf>,
    /// Root of the tree whose proc/sys the start-up checks read.
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

impl Tuning {
    fn knobs(&self) -> anyhow::Result<mtlsgate::tune::profile::Knobs> {
        match &self.profile {
            None => Ok(Default::default()),
            Some(n) => Ok(
                mtlsgate::tune::profile::load(n, self.profile_dir.as_deref())
                    .map_err(anyhow::Error::msg)?
                    .knobs,
            ),
        }
    }
}

/// Raises the fd limit and returns the start-up warnings for this host.
fn host_checks(cfg: &config::Config, t: &Tuning) -> Vec<String> {
    let nofile = mtlsgate::tune::startup::raise_nofile(cfg.nofile);
    mtlsgate::tune::startup::checks(&mtlsgate::tune::Tree::new(&t.root), cfg, nofile)
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key file (next and current keys), mode 0600. Refuses to overwrite.
    New { file: PathBuf },
    /// Move each key one slot along: next → current → previous, and a fresh next.
    Rotate { file: PathBuf },
    /// Print the key ids in each slot (never the keys).
    Show { file: PathBuf },
}

fn ticket_keys(cmd: KeysCmd) -> anyhow::Result<()> {
    use mtlsgate::tls::tickets::KeySet;
    let show = |k: &KeySet| {
        for (slot, id) in k.ids() {
            println!("{slot:8} {id}");
        }
    };
    match cmd {
        KeysCmd::New { file } => {
            anyhow::ensure!(
                !file.exists(),
                "{} exists; use `rotate` to change its keys",
                file.display()
            );
            let k = KeySet::generate().map_err(anyhow::Error::msg)?;
            k.store(&file).map_err(anyhow::Error::msg)?;
            println!("created {}", file.display());
            show(&k);
        }
        KeysCmd::Rotate { file } => {
            let k = KeySet::load(&file)
                .map_err(anyhow::Error::msg)?
                .rotated()
                .map_err(anyhow::Error::msg)?;
            k.store(&file).map_err(anyhow::Error::msg)?;
            println!(
                "rotated {}; gateways reading it pick it up within a second (or on SIGHUP)",
                file.display()
            );
            show(&k);
        }
        KeysCmd::Show { file } => show(&KeySet::load(&file).map_err(anyhow::Error::msg)?),
    }
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config, tuning } => run(&config, &tuning),
        Cmd::Check { config, tuning } => check(&config, &tuning),
        Cmd::Tune {
            root,
            profile_dir,
            op,
        } => {
            return match mtlsgate::tune::command(op, &root, profile_dir.as_deref()) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("mtlsgate: error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::TicketKeys { cmd } => ticket_keys(cmd),
        Cmd::Reload { config, admin } => {
            // 0: applied; 1: refused (the running config stays); 2: could not ask.
            match mtlsgate::ctl::admin_addr(admin, config.as_deref())
                .and_then(mtlsgate::ctl::reload)
            {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("mtlsgate: error: {e:#}");
                    return ExitCode::from(2);
                }
            }
        }
        Cmd::Upgrade {
            config,
            admin,
            wait,
        } => {
            let r = mtlsgate::ctl::admin_addr(admin, config.as_deref())
                .and_then(|a| mtlsgate::ctl::upgrade(a, wait));
            return match r {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("mtlsgate: error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Cmd::Stats {
            config,
            admin,
            top,
            watch,
            json,
            within_days,
        } => {
            let o = mtlsgate::ctl::stats::Opts {
                top,
                watch,
                json,
                within_days,
            };
            mtlsgate::ctl::admin_addr(admin, config.as_deref())
                .and_then(|a| mtlsgate::ctl::stats::run(a, &o).map_err(anyhow::Error::msg))
        }
        Cmd::Demo { dir, port, admin } => {
            init_logs(LogFormat::Text);
            mtlsgate::demo::run(&mtlsgate::demo::DemoOpts {
                dir: &dir,
                port,
                admin,
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtlsgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, t: &Tuning) -> anyhow::Result<()> {
    // First, before any thread: what an upgrading predecessor handed over.
    let successor = runtime::upgrade::inherited().map_err(anyhow::Error::msg)?;
    let knobs = t.knobs()?;
    let cfg = config::load_with(path, &knobs)?;
    init_logs(cfg.log_format);
    for w in host_checks(&cfg, t) {
        tracing::warn!("{w}");
    }
    let mut gw = Gateway::build(&cfg)?.with_knobs(knobs);
    if let (None, Some(k)) = (&cfg.tickets.key_file, &successor.keys) {
        // The predecessor's in-memory keys: tickets it issued still resume.
        gw.keys = std::sync::Arc::new(k.clone());
    }
    runtime::run(gw, successor)
}

fn check(path: &std::path::Path, t: &Tuning) -> anyhow::Result<()> {
    let cfg = config::load_with(path, &t.knobs()?)?;
    let gw = Gateway::build(&cfg).context("TLS material")?;
    println!("{}: ok", path.display());
    println!("workers: {}", cfg.workers);
    match cfg.admin_bind {
        Some(a) => println!("admin: {a}"),
        None => println!("admin: off"),
    }
    for l in &cfg.listeners {
        println!(
            "listener {:?}: {} mode={:?} upstream={} routes={} backlog={} max_connections={} tickets={}",
            l.name,
            l.bind,
            l.mode,
            l.upstream.as_deref().unwrap_or("-"),
            l.routes.len(),
            l.backlog,
            l.max_connections,
            l.tls.tickets
        );
    }
    for u in cfg.upstreams.values() {
        let addrs: Vec<String> = u.addrs.iter().map(|a| a.to_string()).collect();
        println!(
            "upstream {:?}: {} tls={}",
            u.name,
            addrs.join(","),
            u.tls.is_some()
        );
    }
    for line in &gw.summary {
        println!("  {line}");
    }
    for w in host_checks(&cfg, t) {
        println!("warning: {w}");
    }
    Ok(())
}
