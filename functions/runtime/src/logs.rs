//! Build logs: every line is published to JetStream on `<prefix>.logs.<buildId>` as it arrives, so a
//! log outlives the worker that wrote it and anyone can replay it from the start. The last message of a
//! build carries the header `Artifacts-Log-End` with the final status.
//!
//! A build keeps at most [`MAX_LOG_BYTES_PER_BUILD`] of log: past it one marker line says where the log
//! was cut, and later lines go only to the tail kept for a failed build's `errorMessage`.

use std::collections::VecDeque;

use artifacts_schemas::{BuildId, BuildStatus};

use crate::nats::Nats;

pub const END_HEADER: &str = "Artifacts-Log-End";

/// Lines kept for a failed build's `errorMessage`.
const TAIL_LINES: usize = 15;

/// Bytes of log lines one build publishes; the marker line comes on top.
pub const MAX_LOG_BYTES_PER_BUILD: usize = 8 * 1024 * 1024;

/// The line that replaces everything past the cap.
pub const CUT_MARKER: &str = "[log cut: this build wrote more than 8 MiB of log; later lines are not kept]";

pub struct BuildLog {
    jetstream: async_nats::jetstream::Context,
    subject: String,
    tail: VecDeque<String>,
    /// Bytes published so far; `None` once the log was cut.
    published: Option<usize>,
}

impl BuildLog {
    pub fn new(nats: &Nats, build_id: &BuildId) -> Self {
        Self {
            jetstream: nats.jetstream.clone(),
            subject: nats.subjects.build_log(build_id),
            tail: VecDeque::new(),
            published: Some(0),
        }
    }

    /// Publishes each line of `text` (trailing line breaks dropped; empty lines kept).
    pub async fn write(&mut self, text: &str) {
        // Colour and cursor codes are for terminals: logs are read in browsers, files and error messages.
        let text = strip_terminal_codes(text);
        // Docker sends a step's line and its newline apart: a bare newline is no line of its own.
        if text.trim_end_matches(['\n', '\r']).is_empty() {
            return;
        }
        for line in text.trim_end_matches(['\n', '\r']).split('\n') {
            let line = line.trim_end_matches('\r');
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line.to_owned());
            let Some(published) = self.published else { continue };
            let line = if published + line.len() <= MAX_LOG_BYTES_PER_BUILD {
                self.published = Some(published + line.len());
                line
            } else {
                self.published = None;
                CUT_MARKER
            };
            // Acks are not awaited line by line: ordering holds on one connection and the end marker's ack
            // is awaited, which confirms everything before it.
            if let Err(err) = self.jetstream.publish(self.subject.clone(), line.to_owned().into()).await {
                tracing::warn!(%err, subject = %self.subject, "could not publish a log line");
            }
        }
    }

    /// The last lines written, for an error message.
    pub fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub async fn end(&mut self, status: BuildStatus) {
        let status = status.as_str();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(END_HEADER, status);
        let line = format!("build {status}");
        let published = async {
            self.jetstream.publish_with_headers(self.subject.clone(), headers, line.into()).await?.await?;
            Ok::<_, async_nats::Error>(())
        };
        if let Err(err) = published.await {
            tracing::warn!(%err, subject = %self.subject, "could not publish the end of a log");
        }
    }
}

/// `text` without terminal escape sequences: CSI (`ESC [ … final`, colours and cursor moves), OSC
/// (`ESC ] … BEL` or `ESC \\`, titles and links) and two-byte escapes.
pub fn strip_terminal_codes(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\u{1b}') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in '@'..='~'.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // Character set designations take one more character.
            Some('(' | ')' | '*' | '+') => {
                chars.next();
            }
            _ => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_codes_are_stripped() {
        let coloured = "\u{1b}[1;31merror\u{1b}[0m: \u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\ done\u{1b}(B";
        assert_eq!(strip_terminal_codes(coloured), "error: link done");
        assert_eq!(strip_terminal_codes("plain"), "plain");
        assert_eq!(strip_terminal_codes("cut \u{1b}[1;3"), "cut ");
    }
}
