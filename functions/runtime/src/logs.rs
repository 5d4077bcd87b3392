//! Build logs: every line is published to JetStream on `<prefix>.logs.<buildId>` as it arrives, so a
//! log outlives the worker that wrote it and anyone can replay it from the start. The last message of a
//! build carries the header `Artifacts-Log-End` with the final status.
//!
//! A build keeps at most [`MAX_LOG_BYTES_PER_BUILD`] of log: past it one marker line says where the log
//! was cut, and later lines go only to the tail kept for a failed build's `errorMessage`.
//!
//! A build that can read secrets gives their values to [`BuildLog::mask`]: from then on each value (and
//! each line of a value of several lines) shows as `***` wherever it appears, in the published lines and
//! in the tail alike. Output given with [`BuildLog::write_output`] is then published a whole line at a
//! time (a chunk that ends inside a line waits for the rest), so a value split across two chunks of
//! output is still found.

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

/// What masking puts in place of a secret's value.
pub const MASK: &str = "***";

/// A partial line waits for its end up to this many bytes (past it, it is published as it is).
const MAX_PENDING_BYTES: usize = 256 * 1024;

pub struct BuildLog {
    jetstream: async_nats::jetstream::Context,
    subject: String,
    tail: VecDeque<String>,
    /// Bytes published so far; `None` once the log was cut.
    published: Option<usize>,
    /// Texts shown as [`MASK`], longest first.
    masks: Vec<String>,
    /// The start of a line whose end has not come yet (only while masking).
    pending: String,
}

impl std::fmt::Debug for BuildLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLog")
            .field("subject", &self.subject)
            .field("masks", &self.masks.len())
            .finish_non_exhaustive()
    }
}

impl BuildLog {
    pub fn new(nats: &Nats, build_id: &BuildId) -> Self {
        Self {
            jetstream: nats.jetstream.clone(),
            subject: nats.subjects.build_log(build_id),
            tail: VecDeque::new(),
            published: Some(0),
            masks: Vec::new(),
            pending: String::new(),
        }
    }

    /// From now on, shows each of `values` as `***` wherever it appears in a line (a value of several
    /// lines: the whole value, and each of its lines). Empty values mask nothing.
    pub fn mask<V: AsRef<[u8]>>(&mut self, values: impl IntoIterator<Item = V>) {
        add_masks(&mut self.masks, values);
    }

    /// `text` with every masked value replaced.
    fn masked<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        apply_masks(&self.masks, text)
    }

    /// Publishes each line of `text` (trailing line breaks dropped; empty lines kept): `text` ends at the
    /// end of a line (the worker's own messages). Output that comes in chunks goes to [`Self::write_output`].
    pub async fn write(&mut self, text: &str) {
        self.flush().await;
        // Colour and cursor codes are for terminals: logs are read in browsers, files and error messages.
        let text = strip_terminal_codes(text);
        let text = self.masked(&text).into_owned();
        self.publish(&text).await;
    }

    /// Publishes a chunk of a build's output. While masking, a chunk that ends inside a line waits for
    /// the rest of it (or for [`Self::flush`]), so that a value is never cut in two before it is looked
    /// for; otherwise as [`Self::write`].
    pub async fn write_output(&mut self, text: &str) {
        if self.masks.is_empty() {
            return self.write(text).await;
        }
        self.pending.push_str(&strip_terminal_codes(text));
        let complete = match self.pending.rfind('\n') {
            Some(at) => self.pending.drain(..=at).collect::<String>(),
            None if self.pending.len() > MAX_PENDING_BYTES => std::mem::take(&mut self.pending),
            None => return,
        };
        let complete = self.masked(&complete).into_owned();
        self.publish(&complete).await;
    }

    /// Publishes a line that was waiting for its end.
    pub async fn flush(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let rest = self.masked(&rest).into_owned();
            self.publish(&rest).await;
        }
    }

    async fn publish(&mut self, text: &str) {
        // Docker sends a step's line and its newline apart: a bare newline is no line of its own.
        if text.trim_end_matches(['\n', '\r']).is_empty() {
            return;
        }
        for line in text.trim_end_matches(['\n', '\r']).split('\n') {
            let line = line.trim_end_matches('\r');
            let line = self.masked(line).into_owned();
            let line = line.as_str();
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
        self.flush().await;
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

/// Adds the texts that stand for `values` to `masks` (longest first).
fn add_masks<V: AsRef<[u8]>>(masks: &mut Vec<String>, values: impl IntoIterator<Item = V>) {
    for value in values {
        let text = String::from_utf8_lossy(value.as_ref());
        let whole = text.trim_end_matches(['\n', '\r']);
        let lines = whole.split('\n').map(|line| line.trim_end_matches('\r'));
        for masked in std::iter::once(whole).chain(lines) {
            // What a line of the log can hold: terminal codes are stripped from output before masking.
            let masked = strip_terminal_codes(masked);
            if !masked.trim().is_empty() && !masks.iter().any(|m| *m == masked) {
                masks.push(masked.into_owned());
            }
        }
    }
    masks.sort_by_key(|m| std::cmp::Reverse(m.len()));
}

/// `text` with every one of `masks` replaced by [`MASK`].
fn apply_masks<'a>(masks: &[String], text: &'a str) -> std::borrow::Cow<'a, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for value in masks {
        if out.contains(value.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(value.as_str(), MASK));
        }
    }
    out
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

    #[test]
    fn secret_values_are_masked_whole_and_line_by_line() {
        let mut masks = Vec::new();
        add_masks(
            &mut masks,
            [b"s3cr3t-token\n".as_slice(), b"", b"-----BEGIN KEY-----\nAAAA1234\n-----END KEY-----\n"],
        );
        add_masks(&mut masks, ["s3cr3t"]);
        assert_eq!(apply_masks(&masks, "token=s3cr3t-token; again s3cr3t-token"), "token=***; again ***");
        assert_eq!(apply_masks(&masks, "prefix s3cr3t only"), "prefix *** only");
        assert_eq!(apply_masks(&masks, "line AAAA1234 of the key"), "line *** of the key");
        assert_eq!(apply_masks(&masks, "-----BEGIN KEY-----\nAAAA1234\n-----END KEY-----"), "***");
        assert_eq!(apply_masks(&masks, "nothing here"), "nothing here");
        assert!(!masks.iter().any(|m| m.is_empty()), "an empty value masks nothing");
    }

    /// What a worker publishes: a carriage return inside a line no longer hides its start.
    #[test]
    fn a_written_line_cannot_overwrite_itself() {
        let line = "build ok\r\u{1b}[2Kbuild FAILED";
        assert_eq!(strip_terminal_codes(line), "build okbuild FAILED");
    }
}
