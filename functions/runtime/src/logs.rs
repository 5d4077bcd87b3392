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

/// `text` as a terminal cannot misread it: escape sequences go whole, then every other C0 and C1 control
/// but tab and newline (a carriage return, a backspace or a lone U+009B would let a build's output
/// rewrite the lines `artifacts builds logs` prints). Sequences removed: CSI (`ESC [` or U+009B, its
/// parameters and final character: colours, cursor moves), the strings OSC, DCS, SOS, PM and APC (`ESC ]`,
/// `ESC P`, `ESC X`, `ESC ^`, `ESC _` or their one-character forms, up to BEL, `ESC \\` or U+009C: titles,
/// links) and two-character escapes.
///
/// Written by hand rather than with `strip-ansi-escapes`: of the C0 controls that crate keeps only the
/// newline (tabs would go), and the C1 controls written as characters need a pass of their own anyway.
pub fn strip_terminal_codes(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_dropped_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let sequence = match c {
            '\u{1b}' => match chars.next_if(|c| (' '..='~').contains(c)) {
                Some('[') => Some(Sequence::Csi),
                Some(']' | 'P' | 'X' | '^' | '_') => Some(Sequence::String),
                // Character set designations take one more character.
                Some('(' | ')' | '*' | '+') => Some(Sequence::OneMore),
                // A two-character escape (`ESC 7`, `ESC c`), or a lone ESC.
                _ => None,
            },
            '\u{9b}' => Some(Sequence::Csi),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => Some(Sequence::String),
            c if is_dropped_control(c) => None,
            c => {
                out.push(c);
                None
            }
        };
        match sequence {
            Some(Sequence::Csi) => {
                // Parameters and intermediates, then one final character in '@'..='~'; a sequence broken off
                // by anything else ends there.
                while chars.next_if(|c| (' '..='?').contains(c)).is_some() {}
                chars.next_if(|c| ('@'..='~').contains(c));
            }
            Some(Sequence::String) => {
                while let Some(c) = chars.next() {
                    if matches!(c, '\u{7}' | '\u{9c}') || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            Some(Sequence::OneMore) => {
                chars.next_if(|c| (' '..='~').contains(c));
            }
            None => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

enum Sequence {
    Csi,
    String,
    /// A character set designation, whose last character is still to come.
    OneMore,
}

/// Every C0 and C1 control (and DEL) but tab and newline.
fn is_dropped_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n')
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

    /// A carriage return or a C1 control would let a build's output rewrite what `artifacts builds logs`
    /// shows on a terminal: only tab and newline are kept of every C0 and C1 control.
    #[test]
    fn controls_but_tab_and_newline_are_dropped() {
        assert_eq!(strip_terminal_codes("ok\rFAKE: all tests passed"), "okFAKE: all tests passed");
        assert_eq!(strip_terminal_codes("a\tb\nc"), "a\tb\nc");
        // U+009B is the one-character CSI: with its parameters, it is a colour or a cursor move.
        assert_eq!(strip_terminal_codes("x\u{9b}2K\u{9b}1Ay"), "xy");
        assert_eq!(strip_terminal_codes("\u{9d}0;title\u{9c}z"), "z");
        assert_eq!(strip_terminal_codes("bell\u{7}\u{8}\u{0}\u{7f}\u{85}\u{9c}!"), "bell!");
        // U+009F starts an application program command, which runs to its terminator.
        assert_eq!(strip_terminal_codes("a\u{9f}hidden\u{9c}b"), "ab");
        assert_eq!(strip_terminal_codes("\u{1b}P1$r\u{1b}\\dcs gone"), "dcs gone");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let kept = strip_terminal_codes(&format!("<{c}>")).into_owned();
            let expected = if matches!(c, '\t' | '\n') { format!("<{c}>") } else { "<>".to_owned() };
            // ESC and the C1 introducers take what follows as their parameters: here only '>'.
            assert!(kept == expected || kept == "<", "U+{:04X} gave {kept:?}", c as u32);
        }
        // Text outside the controls stays as it is.
        assert_eq!(strip_terminal_codes("é ü 日本 \u{a0}"), "é ü 日本 \u{a0}");
    }

    /// What a worker publishes: a carriage return inside a line no longer hides its start.
    #[test]
    fn a_written_line_cannot_overwrite_itself() {
        let line = "build ok\r\u{1b}[2Kbuild FAILED";
        assert_eq!(strip_terminal_codes(line), "build okbuild FAILED");
    }
}
