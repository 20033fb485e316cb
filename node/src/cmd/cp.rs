//! `loopsy cp [-r] SRC.. DEST`: copy files to or from a peer, with scp's conventions.

use std::{io::IsTerminal, path::Path, process::ExitCode, time::Duration};

use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use loopsy_client::streams::CopyEvent;
use loopsy_daemon::Home;
use loopsy_wire::control::{Copied, CopiedFile, Copy, Location};
use serde::Serialize;

/// Copy files and directories between this device and a peer. A path on a peer is written
/// PEER:PATH (relative to its first file root, usually its home). Like scp: several sources
/// go into a directory; a single source to a name that is not a directory takes that name
/// (a DEST ending in / must be an existing directory); modes and times are kept; links inside a tree are copied as links. Existing files are
/// replaced unless --no-clobber. An interrupted copy resumes when run again.
#[derive(Debug, Args)]
#[command(override_usage = "loopsy cp [OPTIONS] SRC... DEST")]
pub struct Cmd {
    /// Copy directories and everything in them.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Keep files that already exist at the destination.
    #[arg(short = 'n', long)]
    no_clobber: bool,
    /// Print each file's SHA-256, as sha256sum does (with --json: in the summary).
    #[arg(long)]
    sha256: bool,
    /// Flush each file to disk before renaming it into place (slower; off like scp).
    #[arg(long)]
    fsync: bool,
    /// One JSON document: every file with its outcome and BLAKE3 hash, and the totals.
    #[arg(long)]
    json: bool,
    /// Sources, then the destination; at least one side on a peer (PEER:PATH, where
    /// PEER:~/x is x in its home, as scp has it).
    #[arg(required = true, num_args = 2.., value_name = "SRC... DEST")]
    paths: Vec<String>,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Summary {
    files: Vec<CopiedFile>,
    #[serde(flatten)]
    totals: Copied,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let mut locations = self
            .paths
            .iter()
            .map(|p| location(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dest = locations.pop().unwrap_or_else(|| Location {
            peer: None,
            path: String::new(),
        });
        let request = Copy {
            sources: locations,
            dest,
            recursive: self.recursive,
            no_clobber: self.no_clobber,
            sha256: self.sha256,
            fsync: self.fsync,
        };
        let outcome = self.copy(&home, request).await;
        let (files, totals) = match outcome {
            Ok(done) => done,
            // Under --json a failure is JSON too: what went wrong, and nothing copied.
            Err(error) if self.json => {
                crate::output::json(&serde_json::json!({
                    "error": crate::describe(&error),
                    "files": [],
                    "file_count": 0,
                    "failed": 0,
                    "bytes": 0,
                    "transferred": 0,
                }))?;
                eprintln!("loopsy: {}", crate::describe(&error));
                return Ok(ExitCode::FAILURE);
            }
            Err(error) => return Err(error),
        };
        let failed = totals.failed;
        if !self.json && std::io::stderr().is_terminal() {
            eprintln!("{}", summary(&totals));
        }
        if self.json {
            crate::output::json(&Summary { files, totals })?;
        } else {
            for file in &files {
                match (&file.reason, &file.sha256) {
                    (Some(reason), _) => eprintln!("loopsy: {}: {reason}", file.path),
                    (None, Some(sha)) => println!("{sha}  {}", file.path),
                    (None, None) => {}
                }
            }
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

impl Cmd {
    /// Runs the copy, with a progress bar on a terminal: its files and totals.
    async fn copy(&self, home: &Home, request: Copy) -> anyhow::Result<(Vec<CopiedFile>, Copied)> {
        let mut run = crate::client(home).copy(request).await?;
        let bar = (!self.json && std::io::stderr().is_terminal()).then(progress_bar);
        let mut files = Vec::new();
        let totals = loop {
            let event = match run.next().await {
                Ok(event) => event,
                Err(e) => {
                    clear(&bar);
                    return Err(e.into());
                }
            };
            match event {
                CopyEvent::Progress(now) => {
                    if let Some(bar) = &bar {
                        // Shown once there is something to show: an empty bar, filling.
                        if bar.is_hidden() && now.bytes > 0 {
                            bar.set_draw_target(ProgressDrawTarget::stderr());
                        }
                        bar.set_length(now.bytes);
                        bar.set_position(now.done);
                    }
                }
                CopyEvent::Files(more) => files.extend(more),
                CopyEvent::Done(totals) => break totals,
            }
        };
        clear(&bar);
        Ok((files, totals))
    }
}

fn clear(bar: &Option<ProgressBar>) {
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// One line for a person: `copied 3 files, 12.0 MiB in 0.4 s (30.1 MiB/s); 1 failed`.
fn summary(totals: &Copied) -> String {
    let rate = if totals.seconds > 0.0 {
        format!(
            " ({}/s)",
            HumanBytes((totals.transferred as f64 / totals.seconds) as u64)
        )
    } else {
        String::new()
    };
    let mut line = format!(
        "copied {} file{}, {} in {:.1} s{rate}",
        totals.file_count,
        if totals.file_count == 1 { "" } else { "s" },
        HumanBytes(totals.bytes),
        totals.seconds
    );
    if totals.transferred < totals.bytes {
        line.push_str(&format!(
            "; {} already there",
            HumanBytes(totals.bytes - totals.transferred)
        ));
    }
    if totals.failed > 0 {
        line.push_str(&format!("; {} failed", totals.failed));
    }
    line
}

/// `PEER:PATH` when a colon comes before any slash (scp's rule: write `./a:b` for a local
/// file with a colon); a local path is made absolute here, where the user is.
fn location(text: &str) -> anyhow::Result<Location> {
    if let Some((peer, path)) = text.split_once(':')
        && !peer.is_empty()
        && !peer.contains('/')
    {
        // `~` is the peer's home, where relative paths start (its first file root).
        let path = match path {
            "~" => "",
            home_relative if home_relative.starts_with("~/") => &home_relative[2..],
            other => other,
        };
        return Ok(Location {
            peer: Some(peer.to_owned()),
            path: path.to_owned(),
        });
    }
    let path = std::path::absolute(Path::new(text))?;
    let path = path
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{}: only UTF-8 paths can be named here", path.display()))?;
    Ok(Location {
        peer: None,
        path: path.to_owned(),
    })
}

/// A bar drawn only once the copy's size is known, so it never shows full before it starts.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_paths_follow_scp() {
        let at = |t: &str| location(t).unwrap();
        assert_eq!(at("laptop:notes/a.txt").peer.as_deref(), Some("laptop"));
        assert_eq!(at("laptop:").path, "");
        assert_eq!(at("laptop:~/notes").path, "notes", "as scp has it");
        assert_eq!(at("laptop:~").path, "");
        assert_eq!(at("./a:b").peer, None);
        assert_eq!(at("/abs/a:b").peer, None);
        assert!(at("rel").path.starts_with('/'));
    }
}
