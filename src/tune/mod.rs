//! `mtlsgate tune`: compare, verify, apply and revert sysctl profiles against
//! a live kernel (`/proc/sys`) or any other tree (`--root`), like `tuned-adm`.

pub mod profile;
pub mod startup;

use profile::Profile;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where sysctls live: `<root>/proc/sys/...`, state under `<root>/var/lib/mtlsgate`.
pub struct Tree {
    pub root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Differs,
    Missing,
}

pub struct Row {
    pub key: String,
    pub current: Option<String>,
    pub wanted: String,
    pub status: Status,
}

fn norm(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Tree {
    pub fn new(root: &Path) -> Tree {
        Tree {
            root: root.to_path_buf(),
        }
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join("proc/sys").join(key.replace('.', "/"))
    }

    pub fn read(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.path(key))
            .ok()
            .map(|v| norm(&v))
    }

    fn write(&self, key: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(self.path(key), format!("{value}\n"))
    }

    fn saved(&self) -> PathBuf {
        self.root.join("var/lib/mtlsgate/tune-revert.conf")
    }
}

/// Live value against wanted value for every key of the profile.
pub fn diff(tree: &Tree, p: &Profile) -> Vec<Row> {
    p.settings
        .iter()
        .map(|s| {
            let current = tree.read(&s.key);
            let status = match &current {
                None => Status::Missing,
                Some(c) if *c == norm(&s.value) => Status::Ok,
                Some(_) => Status::Differs,
            };
            Row {
                key: s.key.clone(),
                current,
                wanted: s.value.clone(),
                status,
            }
        })
        .collect()
}

pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let st = match r.status {
            Status::Ok => "ok",
            Status::Differs => "differs",
            Status::Missing => "missing",
        };
        let _ = writeln!(
            out,
            "{:<36} current {:<24} wanted {:<24} {st}",
            r.key,
            r.current.as_deref().unwrap_or("-"),
            r.wanted
        ); // ok: String
    }
    out
}

/// What `apply` did; `failed` non-empty means a non-zero exit.
#[derive(Default)]
pub struct Applied {
    pub changed: Vec<String>,
    pub failed: Vec<String>,
}

/// Writes the profile's values, first saving the values it replaces (the
/// first saved value of a key is kept, so `revert` returns to the original).
pub fn apply(tree: &Tree, p: &Profile, dry_run: bool, persist: bool) -> Result<Applied, String> {
    let mut out = Applied::default();
    let rows = diff(tree, p);
    let mut saved = read_saved(tree)?;
    for (r, s) in rows.iter().zip(&p.settings) {
        match r.status {
            Status::Ok => {}
            Status::Missing => {
                let why = format!(
                    "{}: missing on this kernel (no {})",
                    r.key,
                    tree.path(&r.key).display()
                );
                if !s.optional {
                    out.failed.push(why);
                }
            }
            Status::Differs => {
                let cur = r.current.clone().unwrap_or_default();
                let line = format!("{}: {} -> {}", r.key, cur, r.wanted);
                if dry_run {
                    out.changed.push(format!("{line} (dry run)"));
                    continue;
                }
                if !saved.iter().any(|(k, _)| *k == r.key) {
                    saved.push((r.key.clone(), cur));
                }
                match tree.write(&r.key, &r.wanted) {
                    Ok(()) if tree.read(&r.key).as_deref() == Some(norm(&r.wanted).as_str()) => {
                        out.changed.push(line)
                    }
                    Ok(()) => out.failed.push(format!(
                        "{}: written but the kernel kept {:?}",
                        r.key,
                        tree.read(&r.key)
                    )),
                    Err(e) if !s.optional => {
                        out.failed.push(format!("{}: cannot set here: {e}", r.key))
                    }
                    Err(_) => {}
                }
            }
        }
    }
    if !dry_run {
        write_saved(tree, &saved)?;
        if persist {
            let dir = tree.root.join("etc/sysctl.d");
            let file = dir.join(format!("90-mtlsgate-{}.conf", p.name));
            let mut text = format!("# Written by `mtlsgate tune apply {} --persist`.\n", p.name);
            for s in &p.settings {
                let _ = writeln!(
                    text,
                    "{}{} = {}",
                    if s.optional { "-" } else { "" },
                    s.key,
                    s.value
                ); // ok: String
            }
            std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&file, text))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            out.changed.push(format!("persisted to {}", file.display()));
        }
    }
    Ok(out)
}

fn read_saved(tree: &Tree) -> Result<Vec<(String, String)>, String> {
    let p = tree.saved();
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let prof = Profile::parse("saved", &p.display().to_string(), &text)?;
    Ok(prof
        .settings
        .into_iter()
        .map(|s| (s.key, s.value))
        .collect())
}

fn write_saved(tree: &Tree, saved: &[(String, String)]) -> Result<(), String> {
    let p = tree.saved();
    let mut text = String::from(
        "# Values replaced by `mtlsgate tune apply`; `mtlsgate tune revert` restores them.\n",
    );
    for (k, v) in saved {
        let _ = writeln!(text, "{k} = {v}"); // ok: String
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&p, text))
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Restores every value saved by `apply`, then forgets them.
pub fn revert(tree: &Tree) -> Result<Applied, String> {
    let saved = read_saved(tree)?;
    let mut out = Applied::default();
    if saved.is_empty() {
        out.changed.push("nothing to revert".into());
        return Ok(out);
    }
    for (k, v) in &saved {
        match tree.write(k, v) {
            Ok(()) => out.changed.push(format!("{k}: restored {v}")),
            Err(e) => out.failed.push(format!("{k}: cannot restore {v}: {e}")),
        }
    }
    if out.failed.is_empty() {
        let _ = std::fs::remove_file(tree.saved());
    }
    Ok(out)
}

/// `mtlsgate tune` operations.
#[derive(clap::Subcommand, Debug)]
pub enum TuneOp {
    /// List the profiles.
    List,
    /// Print a profile.
    Show { name: String },
    /// Live value against profile value, one line per key.
    Diff { name: String },
    /// Exit 0 only if the live kernel matches the profile (for monitoring).
    Verify { name: String },
    /// Write the profile's values (saving the old ones for `revert`).
    Apply {
        name: String,
        /// Also write /etc/sysctl.d/90-mtlsgate-NAME.conf so it survives a reboot.
        #[arg(long)]
        persist: bool,
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore the values the last `apply` replaced.
    Revert,
}

/// Runs a `tune` operation; returns the process exit code.
pub fn command(op: TuneOp, root: &Path, dir: Option<&Path>) -> Result<u8, String> {
    let tree = Tree::new(root);
    match op {
        TuneOp::List => {
            for n in profile::list(dir)? {
                println!("{n}");
            }
            Ok(0)
        }
        TuneOp::Show { name } => {
            let p = profile::load(&name, dir)?;
            println!("# {} ({})", p.name, p.source);
            println!("{:#?}", p.knobs);
            for s in &p.settings {
                println!(
                    "{}{} = {}",
                    if s.optional { "-" } else { "" },
                    s.key,
                    s.value
                );
            }
            Ok(0)
        }
        TuneOp::Diff { name } => {
            print!("{}", render(&diff(&tree, &profile::load(&name, dir)?)));
            Ok(0)
        }
        TuneOp::Verify { name } => {
            let rows = diff(&tree, &profile::load(&name, dir)?);
            let bad: Vec<&Row> = rows.iter().filter(|r| r.status != Status::Ok).collect();
            if bad.is_empty() {
                println!("{name}: ok ({} keys match)", rows.len());
                Ok(0)
            } else {
                print!("{}", render(&rows));
                println!("{name}: {} of {} keys do not match", bad.len(), rows.len());
                Ok(1)
            }
        }
        TuneOp::Apply {
            name,
            persist,
            dry_run,
        } => {
            let p = profile::load(&name, dir)?;
            let out = apply(&tree, &p, dry_run, persist)?;
            report(&out, &format!("{name}: nothing to change"));
            Ok(u8::from(!out.failed.is_empty()))
        }
        TuneOp::Revert => {
            let out = revert(&tree)?;
            report(&out, "nothing to revert");
            Ok(u8::from(!out.failed.is_empty()))
        }
    }
}

fn report(out: &Applied, nothing: &str) {
    if out.changed.is_empty() && out.failed.is_empty() {
        println!("{nothing}");
    }
    for c in &out.changed {
        println!("changed  {c}");
    }
    for f in &out.failed {
        println!("FAILED   {f}");
    }
}
