//! Progress of a copy, per kind: an `indicatif` bar (objects, content bytes, rate, ETA) when
//! stderr is a terminal, else a plain line every few seconds (logs and CI keep those).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    multi: MultiProgress,
    terminal: bool,
    verb: &'static str,
}

impl Progress {
    pub fn new(verb: &'static str) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let target = if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            terminal,
            verb,
        }
    }

    /// A bar for one kind; `total` objects when known, `done` already copied (a resume).
    pub fn kind(&self, name: &'static str, total: Option<u64>, done: u64, bytes: u64) -> KindBar {
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        let template = if total.is_some() {
            "{prefix:>18} [{bar:30}] {human_pos}/{human_len} {msg} {per_sec} ETA {eta}"
        } else {
            "{prefix:>18} {spinner} {human_pos} {msg} {per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(name);
        bar.set_position(done);
        bar.reset_eta();
        let k = KindBar {
            bar,
            name,
            total,
            bytes,
            terminal: self.terminal,
            verb: self.verb,
            last_line: Instant::now(),
            started: Instant::now(),
            started_at: done,
        };
        k.show_bytes();
        k
    }
}

pub struct KindBar {
    bar: ProgressBar,
    name: &'static str,
    total: Option<u64>,
    bytes: u64,
    terminal: bool,
    verb: &'static str,
    last_line: Instant,
    started: Instant,
    started_at: u64,
}

impl KindBar {
    fn show_bytes(&self) {
        if self.bytes > 0 {
            self.bar
                .set_message(format!("({})", HumanBytes(self.bytes)));
        }
    }

    pub fn advance(&mut self, objects: u64, bytes: u64) {
        self.bar.inc(objects);
        self.bytes += bytes;
        self.show_bytes();
        if !self.terminal && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let pos = self.bar.position();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (pos.saturating_sub(self.started_at)) as f64 / secs;
        let of = self.total.map(|t| format!("/{t}")).unwrap_or_default();
        let bytes = if self.bytes > 0 {
            format!(", {}", HumanBytes(self.bytes))
        } else {
            String::new()
        };
        format!(
            "{} {}: {pos}{of} objects{bytes}, {rate:.0}/s",
            self.verb, self.name
        )
    }

    pub fn finish(self) {
        if self.terminal {
            self.bar.finish();
        } else {
            eprintln!("{} (done)", self.line());
        }
    }
}
