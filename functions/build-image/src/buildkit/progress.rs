//! BuildKit's status stream as build log lines, in the style of `docker build --progress=plain`:
//! `#5 [2/3] RUN make`, the step's output as `#5 0.412 <line>`, then `#5 CACHED`, `#5 DONE 0.4s` or
//! `#5 ERROR: <why>`.

use std::collections::HashMap;

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;

/// A timestamp as seconds.
fn seconds(timestamp: &Option<Timestamp>) -> Option<f64> {
    timestamp.as_ref().map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

#[derive(Default)]
struct Step {
    number: usize,
    name: String,
    started: Option<f64>,
    done: bool,
    /// Output not yet ended by a newline.
    partial: Vec<u8>,
}

/// Turns status updates into lines; values of `masked` (build secrets) are shown as `***`.
#[derive(Default)]
pub struct Progress {
    steps: HashMap<String, Step>,
    next: usize,
    masked: Vec<String>,
}

impl Progress {
    pub fn new(masked: Vec<String>) -> Self {
        Self { masked: masked.into_iter().filter(|value| !value.is_empty()).collect(), ..Self::default() }
    }

    fn step(&mut self, digest: &str, name: &str, lines: &mut Vec<String>) -> &mut Step {
        if !self.steps.contains_key(digest) {
            self.next += 1;
            let step = Step { number: self.next, name: name.to_owned(), ..Step::default() };
            lines.push(format!("#{} {}", step.number, step.name));
            self.steps.insert(digest.to_owned(), step);
        }
        self.steps.get_mut(digest).expect("inserted above")
    }

    /// The lines one status update adds.
    pub fn update(&mut self, status: StatusResponse) -> Vec<String> {
        let mut lines = Vec::new();
        for vertex in &status.vertexes {
            let known = self.steps.contains_key(&vertex.digest);
            // A vertex is announced once it starts or is found in the cache, not while it waits.
            if !known && vertex.started.is_none() && !vertex.cached && vertex.completed.is_none() {
                continue;
            }
            let step = self.step(&vertex.digest, &vertex.name, &mut lines);
            if step.started.is_none() {
                step.started = seconds(&vertex.started);
            }
            if step.done {
                continue;
            }
            let number = step.number;
            if vertex.cached {
                step.done = true;
                lines.push(format!("#{number} CACHED"));
            } else if let Some(completed) = seconds(&vertex.completed) {
                step.done = true;
                let partial = std::mem::take(&mut step.partial);
                if !partial.is_empty() {
                    let elapsed = completed - step.started.unwrap_or(completed);
                    lines.push(format!("#{number} {elapsed:.3} {}", String::from_utf8_lossy(&partial)));
                }
                if vertex.error.is_empty() {
                    let took = completed - step.started.unwrap_or(completed);
                    lines.push(format!("#{number} DONE {:.1}s", took.max(0.0)));
                } else {
                    lines.push(format!("#{number} ERROR: {}", vertex.error));
                }
            }
        }
        for status in &status.statuses {
            if status.completed.is_none() {
                continue;
            }
            let Some(step) = self.steps.get(&status.vertex) else { continue };
            let amount = match (status.current, status.total) {
                (0, _) => String::new(),
                (current, total) if total > 0 => format!(" {}/{}", size(current), size(total)),
                (current, _) => format!(" {}", size(current)),
            };
            lines.push(format!("#{} {}{amount} done", step.number, status.id));
        }
        for log in &status.logs {
            let at = seconds(&log.timestamp);
            let step = self.step(&log.vertex, "", &mut lines);
            let elapsed = match (at, step.started) {
                (Some(at), Some(started)) => (at - started).max(0.0),
                _ => 0.0,
            };
            step.partial.extend_from_slice(&log.msg);
            let number = step.number;
            while let Some(end) = step.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = step.partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                lines.push(format!("#{number} {elapsed:.3} {}", text.trim_end_matches('\r')));
            }
        }
        for warning in &status.warnings {
            if let Some(step) = self.steps.get(&warning.vertex) {
                lines.push(format!("#{} WARNING: {}", step.number, String::from_utf8_lossy(&warning.short)));
            }
        }
        if !self.masked.is_empty() {
            for line in &mut lines {
                for value in &self.masked {
                    if line.contains(value.as_str()) {
                        *line = line.replace(value.as_str(), "***");
                    }
                }
            }
        }
        lines
    }
}

/// Bytes as Docker's progress shows them (`2.05kB`, `13.4MB`).
fn size(bytes: i64) -> String {
    let bytes = bytes as f64;
    match bytes {
        b if b < 1e3 => format!("{b}B"),
        b if b < 1e6 => format!("{:.2}kB", b / 1e3),
        b if b < 1e9 => format!("{:.2}MB", b / 1e6),
        b => format!("{:.2}GB", b / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::moby::buildkit::v1::{Vertex, VertexLog};

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    #[test]
    fn steps_output_cache_and_timings_become_lines() {
        let mut progress = Progress::new(vec!["s3cret".into()]);
        let run =
            Vertex { digest: "d2".into(), name: "[2/2] RUN echo hi".into(), started: at(10, 0), ..Vertex::default() };
        let from = Vertex { digest: "d1".into(), name: "[1/2] FROM busybox".into(), cached: true, ..Vertex::default() };
        let waiting = Vertex { digest: "d3".into(), name: "later".into(), ..Vertex::default() };
        let lines =
            progress.update(StatusResponse { vertexes: vec![from, run.clone(), waiting], ..Default::default() });
        assert_eq!(lines, ["#1 [1/2] FROM busybox", "#1 CACHED", "#2 [2/2] RUN echo hi"]);
        let log = |msg: &str, nanos| VertexLog {
            vertex: "d2".into(),
            timestamp: at(10, nanos),
            msg: msg.as_bytes().to_vec(),
            ..VertexLog::default()
        };
        let lines = progress.update(StatusResponse {
            logs: vec![log("hi s3cret\npart", 250_000_000), log("ial\n", 300_000_000)],
            ..Default::default()
        });
        assert_eq!(lines, ["#2 0.250 hi ***", "#2 0.300 partial"]);
        let done = Vertex { completed: at(10, 420_000_000), ..run };
        assert_eq!(progress.update(StatusResponse { vertexes: vec![done], ..Default::default() }), ["#2 DONE 0.4s"]);
    }
}
