//! Which images a Dockerfile makes Docker's classic builder use, worked out without running it, so that
//! the caller's rights over them can be checked before the build is queued ([`referenced_images`]).
//! Whether a reference names the service's own registry or may name an image on the engine by its id is
//! `artifacts_engine::image_access`, which builder images of components share.
//!
//! The rules are those of the classic builder of Docker Engine 20.10 (the parser and shell lexer of
//! `moby/buildkit` v0.8 that it vendors). Where that builder and ours could read a file differently, or
//! where engine versions differ, the answer is an error that says what to change, never a guess.

use std::collections::{BTreeMap, HashMap};
use std::iter::Peekable;
use std::str::Chars;

/// Proxy settings the classic builder substitutes from build arguments without an `ARG` declaring them.
const PROXY_ARGS: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy"];

/// Proxy settings that only some engine versions substitute that way.
const LATER_PROXY_ARGS: [&str; 2] = ["ALL_PROXY", "all_proxy"];

/// Every image reference the classic builder would pull or read from its image store for `dockerfile`
/// built with `build_args`, in order of appearance, each once:
///
/// - the image of each `FROM`, after the substitution Docker does there (the `ARG`s before the first
///   `FROM`, their defaults overridden by `build_args`); not `scratch`, nor an earlier stage's name;
/// - the source of each `COPY --from=` that is neither an earlier stage's name nor a stage index. The
///   classic builder substitutes no variables there, and has no `ADD --from`;
/// - the source of each `ONBUILD COPY --from=` that is not an index, even one naming a stage here: such
///   a trigger runs in whichever build starts `FROM` its stage, this one or a later one, against that
///   build's stages.
///
/// Image ids come back like any reference: see `image_access::may_name_image_id`. Not covered, because a
/// file does not show them: the `ONBUILD` triggers that base images carry, and files `ADD` downloads from
/// URLs.
///
/// An error names the line and says what to change: a variable that has no value where an image is
/// named, a `$` left in a name, a value that differs between engine versions, a malformed instruction.
pub fn referenced_images(dockerfile: &str, build_args: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let (escape, instructions) = parse(dockerfile)?;
    let mut walk = Walk {
        escape,
        args: MetaArgs { declared: HashMap::new(), build_args },
        in_stage: false,
        current: None,
        finished: Vec::new(),
        images: Vec::new(),
    };
    for instruction in &instructions {
        walk.instruction(instruction)?;
    }
    Ok(walk.images)
}

/// One instruction, its continuation lines joined, and the lines it starts and ends on.
struct Instruction {
    line: usize,
    last_line: usize,
    text: String,
}

/// The escape character and the instructions of a file, read as the classic builder's parser does.
fn parse(source: &str) -> Result<(char, Vec<Instruction>), String> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let escape = escape_directive(source)?;
    let mut lines = physical_lines(source).enumerate();
    let mut instructions = Vec::new();
    while let Some((index, line)) = lines.next() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let (first, mut continued) = without_continuation(line, escape);
        if first.is_empty() && !continued {
            continue;
        }
        let mut text = first.to_owned();
        let mut last_line = index + 1;
        while continued {
            let Some((next_index, next)) = lines.next() else { break };
            last_line = next_index + 1;
            // Comments and blank lines inside a continued instruction are skipped; they do not end it.
            let trimmed = next.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (part, again) = without_continuation(next, escape);
            text.push_str(part);
            continued = again;
        }
        instructions.push(Instruction { line: index + 1, last_line, text });
    }
    Ok((escape, instructions))
}

/// Lines as Go's `bufio.ScanLines` yields them.
fn physical_lines(source: &str) -> impl Iterator<Item = &str> {
    source.split_terminator('\n').map(|line| line.strip_suffix('\r').unwrap_or(line))
}

/// The line without a trailing escape character (and the blanks after it), and whether it had one.
fn without_continuation(line: &str, escape: char) -> (&str, bool) {
    match line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
        Some(rest) => (rest, true),
        None => (line, false),
    }
}

/// The escape character set by the parser directives at the top of the file (`\` without one).
fn escape_directive(source: &str) -> Result<char, String> {
    let mut escape = '\\';
    let mut seen = Vec::new();
    let mut lines = physical_lines(source).enumerate();
    while let Some((index, line)) = lines.next() {
        let Some((name, value)) = directive(line) else { break };
        let name = name.to_ascii_lowercase();
        let line = index + 1;
        if seen.contains(&name) {
            return Err(format!("line {line}: the {name} directive appears twice; keep one"));
        }
        match name.as_str() {
            "escape" => {
                escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(format!("line {line}: the escape directive takes ` or \\, not {value}")),
                }
            }
            "syntax" => {}
            // 20.10 stops reading directives at `check`, later engines read on: they would disagree on an
            // escape directive after it.
            "check" => {
                let later_escape = lines
                    .by_ref()
                    .map_while(|(index, line)| directive(line).map(|(name, _)| (index + 1, name)))
                    .find(|(_, name)| name.eq_ignore_ascii_case("escape"));
                return match later_escape {
                    Some((line, _)) => Err(format!(
                        "line {line}: Docker versions disagree on an escape directive after a check directive; \
                         put the escape directive first"
                    )),
                    None => Ok(escape),
                };
            }
            _ => break,
        }
        seen.push(name);
    }
    Ok(escape)
}

/// `# name = value`, as the parser's directive pattern `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`
/// matches it on a line with its leading white space removed.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start_matches(is_regex_space);
    let name_end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    let name = &rest[..name_end];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest[name_end..].trim_start_matches(is_regex_space).strip_prefix('=')?.trim_matches(is_regex_space);
    (!value.is_empty()).then_some((name, value))
}

/// `\s` in Go's regular expressions.
fn is_regex_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// What separates an instruction's keyword from its arguments, and `FROM`'s arguments.
fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

struct Command {
    keyword: String,
    flags: Vec<String>,
    args: String,
}

fn split_command(text: &str, line: usize) -> Result<Command, String> {
    let text = text.trim();
    let (keyword, rest) = match text.find(is_separator) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    // Docker lowercases keywords by Unicode's rules, which turn a few other letters (`İ`, the Kelvin sign)
    // into ASCII ones: a keyword we took for no instruction could be one to Docker.
    if !keyword.is_ascii() {
        return Err(format!("line {line}: `{keyword}` is not an instruction; write instructions in ASCII"));
    }
    let (flags, args) = builder_flags(rest);
    Ok(Command { keyword: keyword.to_ascii_lowercase(), flags, args: args.trim().to_owned() })
}

/// The leading `--flag` words of an instruction (quotes and backslashes removed) and the rest of it.
/// The parser reads these a byte at a time, each byte taken as a Latin-1 character; so do we, so that a
/// value with other characters comes out as mangled as Docker makes it.
fn builder_flags(rest: &str) -> (Vec<String>, String) {
    let bytes = rest.as_bytes();
    let remainder = |pos: usize| String::from_utf8_lossy(&bytes[pos..]).into_owned();
    let mut flags = Vec::new();
    let mut pos = 0;
    loop {
        while bytes.get(pos).is_some_and(|&b| is_latin1_space(b)) {
            pos += 1;
        }
        if !bytes[pos..].starts_with(b"--") {
            return (flags, remainder(pos));
        }
        let mut word = String::new();
        let mut quote = None;
        let mut blank_ok = false;
        loop {
            let Some(&byte) = bytes.get(pos) else {
                if word != "--" && (blank_ok || !word.is_empty()) {
                    flags.push(word);
                }
                return (flags, String::new());
            };
            if quote == Some(byte) {
                quote = None;
                pos += 1;
                continue;
            }
            if quote.is_none() && is_latin1_space(byte) {
                if word == "--" {
                    return (flags, remainder(pos));
                }
                if blank_ok || !word.is_empty() {
                    flags.push(word);
                }
                break;
            }
            if quote.is_none() && (byte == b'\'' || byte == b'"') {
                quote = Some(byte);
                blank_ok = true;
                pos += 1;
                continue;
            }
            if byte == b'\\' {
                pos += 1;
                if let Some(&escaped) = bytes.get(pos) {
                    word.push(char::from(escaped));
                    pos += 1;
                }
                continue;
            }
            word.push(char::from(byte));
            pos += 1;
        }
    }
}

/// Go's `unicode.IsSpace` of a byte taken as a Latin-1 character.
fn is_latin1_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// The words of an `ARG` line, quotes and escapes kept for substitution to remove; `None` when a quote
/// is not closed (engine versions differ on what they do with such a word).
fn arg_words(args: &str, escape: char) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = args.chars();
    let mut word = String::new();
    let mut quote = None;
    let mut blank_ok = false;
    loop {
        let Some(c) = chars.next() else {
            if quote.is_some() {
                return None;
            }
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            return Some(words);
        };
        match quote {
            None if c.is_whitespace() => {
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
            }
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            Some('\'') => word.push(c),
            _ => {
                if quote.is_none() && (c == '\'' || c == '"') {
                    quote = Some(c);
                    blank_ok = true;
                }
                word.push(c);
                if c == escape {
                    // An escape keeps the character after it, to be read by substitution.
                    match chars.next() {
                        Some(escaped) => word.push(escaped),
                        None if quote.is_some() => return None,
                        None => {
                            word.pop();
                        }
                    }
                }
            }
        }
    }
}

/// The `ARG`s before the first `FROM`: the only variables `FROM` can use.
struct MetaArgs<'a> {
    declared: HashMap<String, Option<String>>,
    build_args: &'a BTreeMap<String, String>,
}

impl MetaArgs<'_> {
    fn value(&self, name: &str) -> Result<Option<String>, String> {
        if let Some(default) = self.declared.get(name) {
            return Ok(self.build_args.get(name).or(default.as_ref()).cloned());
        }
        if PROXY_ARGS.contains(&name) {
            return Ok(self.build_args.get(name).cloned());
        }
        if LATER_PROXY_ARGS.contains(&name) && self.build_args.contains_key(name) {
            return Err(format!(
                "only some Docker versions take {name} from buildArgs without an ARG; declare `ARG {name}` \
                 before the first FROM"
            ));
        }
        Ok(None)
    }

    fn why_unset(&self, name: &str) -> String {
        if self.declared.contains_key(name) {
            format!("{name} has no value; pass it in buildArgs or give `ARG {name}` a default")
        } else {
            format!("{name} is not declared; add `ARG {name}` before the first FROM, and pass it in buildArgs or give it a default")
        }
    }
}

struct Expansion {
    text: String,
    /// Variables without a value whose (empty) value made it into the text.
    unset: Vec<String>,
}

/// `word` with quotes, escapes and variables processed, as the builder's shell lexer does.
fn expand(word: &str, escape: char, args: &MetaArgs) -> Result<Expansion, String> {
    // The lexer reads through Go's text/scanner, which skips a byte-order mark at the start.
    let word = word.strip_prefix('\u{feff}').unwrap_or(word);
    let mut expander = Expander { chars: word.chars().peekable(), escape, args, unset: Vec::new() };
    let text = expander.until(None)?;
    Ok(Expansion { text, unset: expander.unset })
}

struct Expander<'a> {
    chars: Peekable<Chars<'a>>,
    escape: char,
    args: &'a MetaArgs<'a>,
    unset: Vec<String>,
}

impl Expander<'_> {
    fn until(&mut self, stop: Option<char>) -> Result<String, String> {
        let mut text = String::new();
        while let Some(c) = self.chars.next() {
            match c {
                _ if Some(c) == stop => return Ok(text),
                '\'' => text.push_str(&self.single_quoted()?),
                '"' => text.push_str(&self.double_quoted()?),
                '$' => text.push_str(&self.substitution()?),
                _ if c == self.escape => text.extend(self.chars.next()),
                _ => text.push(c),
            }
        }
        match stop {
            Some(stop) => Err(format!("`{stop}` is missing")),
            None => Ok(text),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        let mut text = String::new();
        loop {
            match self.chars.next() {
                None => return Err("a single quote is not closed".into()),
                Some('\'') => return Ok(text),
                Some(c) => text.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        let escape = self.escape;
        let mut text = String::new();
        loop {
            match self.chars.next() {
                None => return Err("a double quote is not closed".into()),
                Some('"') => return Ok(text),
                Some('$') => text.push_str(&self.substitution()?),
                Some(c) if c == escape => {
                    text.push(self.chars.next_if(|&next| next == '"' || next == '$' || next == escape).unwrap_or(c))
                }
                Some(c) => text.push(c),
            }
        }
    }

    /// What follows a `$`.
    fn substitution(&mut self) -> Result<String, String> {
        if self.chars.next_if_eq(&'{').is_none() {
            let name = self.name()?;
            return if name.is_empty() { Ok("$".into()) } else { self.variable(&name) };
        }
        match self.chars.peek() {
            None => return Err("`}` is missing".into()),
            Some('{' | '}' | ':') => return Err("`${` must be followed by a variable name".into()),
            Some(_) => {}
        }
        let name = self.name()?;
        match self.chars.next() {
            Some('}') => self.variable(&name),
            None => Err("`}` is missing".into()),
            Some('?') => {
                let mark = self.unset.len();
                self.until(Some('}'))?;
                self.unset.truncate(mark);
                self.args.value(&name)?.ok_or_else(|| self.args.why_unset(&name))
            }
            Some(':') => {
                let modifier = self.chars.next();
                let mark = self.unset.len();
                let word = self.until(Some('}'))?;
                let value = self.args.value(&name)?.unwrap_or_default();
                let word_used = match modifier {
                    Some('-') => value.is_empty(),
                    Some('+') => !value.is_empty(),
                    Some('?') if value.is_empty() => return Err(self.args.why_unset(&name)),
                    Some('?') => false,
                    _ => return Err(format!("`${{{name}:` must be followed by `-`, `+` or `?`")),
                };
                if word_used {
                    return Ok(word);
                }
                self.unset.truncate(mark);
                Ok(value)
            }
            _ => Err(format!("`${{{name}` must be followed by `}}`, `:-`, `:+`, `:?` or `?`")),
        }
    }

    fn variable(&mut self, name: &str) -> Result<String, String> {
        match self.args.value(name)? {
            Some(value) => Ok(value),
            None => {
                self.unset.push(name.to_owned());
                Ok(String::new())
            }
        }
    }

    /// A variable name as the lexer reads one: a run of digits, one special character, or letters,
    /// digits and `_`. The lexer's letters and digits are Unicode's, which ours would not match exactly.
    fn name(&mut self) -> Result<String, String> {
        let non_ascii = || Err("a variable name must be ASCII letters, digits and `_`".to_owned());
        let mut name = String::new();
        while let Some(&c) = self.chars.peek() {
            if !c.is_ascii() {
                return non_ascii();
            }
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(digit) = self.chars.next_if(char::is_ascii_digit) {
                    name.push(digit);
                }
                return match self.chars.peek() {
                    Some(c) if !c.is_ascii() => non_ascii(),
                    _ => Ok(name),
                };
            }
            if name.is_empty() && "@*#?-$!".contains(c) {
                self.chars.next();
                return Ok(c.to_string());
            }
            if !(c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.chars.next();
        }
        Ok(name)
    }
}

struct Walk<'a> {
    escape: char,
    args: MetaArgs<'a>,
    /// Whether a `FROM` has been read: `ARG`s before the first are the only ones `FROM` can use.
    in_stage: bool,
    /// The name of the current stage, if it has one.
    current: Option<String>,
    /// The names of the stages before the current one: only those can be named by `FROM` and
    /// `COPY --from`.
    finished: Vec<String>,
    images: Vec<String>,
}

impl Walk<'_> {
    fn instruction(&mut self, instruction: &Instruction) -> Result<(), String> {
        let line = instruction.line;
        let command = split_command(&instruction.text, line)?;
        match command.keyword.as_str() {
            "arg" if !self.in_stage => self.meta_arg(&command.args, line),
            "from" => self.from(&command.args, line),
            "copy" => match copy_source(&command.flags, line)? {
                Some(source) => self.copy_from(&source, line),
                None => Ok(()),
            },
            // BuildKit: `RUN --mount=type=bind|cache,from=<stage or image>` reads an image like `COPY --from`.
            "run" => {
                for source in mount_sources(&command.flags, line)? {
                    self.copy_from(&source, line)?;
                }
                Ok(())
            }
            "onbuild" => self.onbuild(&instruction.text.trim()[command.keyword.len()..], line),
            _ => Ok(()),
        }
    }

    fn meta_arg(&mut self, args: &str, line: usize) -> Result<(), String> {
        let words =
            arg_words(args, self.escape).ok_or_else(|| format!("line {line}: ARG {args}: a quote is not closed"))?;
        let expanded = |text: &str| {
            // Docker gives a variable without a value the empty string here; only a FROM refuses one.
            expand(text, self.escape, &self.args)
                .map(|e| e.text)
                .map_err(|why| format!("line {line}: ARG {args}: {why}"))
        };
        // Every default on one line is substituted before any of them is declared.
        let mut declared = Vec::new();
        for word in &words {
            let (key, value) = match word.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (word.as_str(), None),
            };
            if key.is_empty() {
                return Err(format!("line {line}: ARG {word} has no name"));
            }
            declared.push((expanded(key)?, value.map(expanded).transpose()?));
        }
        self.args.declared.extend(declared);
        Ok(())
    }

    fn from(&mut self, args: &str, line: usize) -> Result<(), String> {
        self.in_stage = true;
        self.finished.extend(self.current.take());
        let words: Vec<&str> = args.split(is_separator).filter(|word| !word.is_empty()).collect();
        let (base, name) = match words[..] {
            [base] => (base, None),
            [base, keyword, name] if keyword.eq_ignore_ascii_case("as") => (base, Some(name.to_ascii_lowercase())),
            _ => return Err(format!("line {line}: FROM takes <image> or <image> AS <name>, not `{args}`")),
        };
        self.current = name;
        let image = self.base_image(base, line)?;
        if image == "scratch" || self.is_finished_stage(&image) {
            return Ok(());
        }
        if image.contains('$') {
            return Err(format!(
                "line {line}: FROM {base}: `{image}` still has a `$` after substitution; write the image name without it"
            ));
        }
        self.add(&image);
        Ok(())
    }

    fn base_image(&self, base: &str, line: usize) -> Result<String, String> {
        let what = |why: String| format!("line {line}: FROM {base}: {why}");
        let expansion = expand(base, self.escape, &self.args).map_err(what)?;
        if let Some(name) = expansion.unset.first() {
            return Err(what(self.args.why_unset(name)));
        }
        if expansion.text.is_empty() {
            return Err(what("names no image".into()));
        }
        Ok(expansion.text)
    }

    fn copy_from(&mut self, source: &str, line: usize) -> Result<(), String> {
        if self.is_finished_stage(source) || source.parse::<i64>().is_ok() {
            return Ok(());
        }
        self.copy_image(source, line)
    }

    fn copy_image(&mut self, source: &str, line: usize) -> Result<(), String> {
        if source.contains('$') {
            return Err(format!(
                "line {line}: COPY --from={source}: the classic builder does not substitute variables in --from; \
                 write the stage name or image itself"
            ));
        }
        self.add(source);
        Ok(())
    }

    /// A trigger runs in whichever build starts `FROM` this stage, this file or a later one, against that
    /// build's stages: what its `COPY --from` names counts now, whatever the stages here.
    fn onbuild(&mut self, trigger: &str, line: usize) -> Result<(), String> {
        match trigger_copy_source(trigger, line)? {
            Some(source) if source.parse::<i64>().is_err() => self.copy_image(&source, line),
            _ => Ok(()),
        }
    }

    fn is_finished_stage(&self, name: &str) -> bool {
        self.finished.iter().any(|stage| stage.eq_ignore_ascii_case(name))
    }

    fn add(&mut self, image: &str) {
        if !self.images.iter().any(|known| known == image) {
            self.images.push(image.to_owned());
        }
    }
}

/// The value of `--from` of a `COPY`, if it has a non-empty one (an empty one copies from the context).
fn copy_source(flags: &[String], line: usize) -> Result<Option<String>, String> {
    let mut source = None;
    for flag in flags {
        match flag.strip_prefix("--").unwrap_or(flag).split_once('=') {
            Some(("from", _)) if source.is_some() => {
                return Err(format!("line {line}: COPY has --from twice; keep one"));
            }
            Some(("from", value)) => source = Some(value.to_owned()),
            None if flag == "--from" => {
                return Err(format!("line {line}: COPY --from needs a value: --from=<stage or image>"));
            }
            _ => {}
        }
    }
    Ok(source.filter(|source| !source.is_empty()))
}

/// The `from=` of each `--mount` flag of a `RUN` (BuildKit's comma-separated `key=value` list).
fn mount_sources(flags: &[String], line: usize) -> Result<Vec<String>, String> {
    let mut sources = Vec::new();
    for flag in flags {
        let Some(("mount", value)) = flag.strip_prefix("--").unwrap_or(flag).split_once('=') else { continue };
        for field in value.split(',') {
            match field.split_once('=') {
                Some((key, source)) if key.trim().eq_ignore_ascii_case("from") => {
                    if source.contains('$') {
                        return Err(format!(
                            "line {line}: RUN --mount=...from={source}: write the stage name or image itself, \
                             without variables"
                        ));
                    }
                    if !source.is_empty() {
                        sources.push(source.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(sources)
}

/// The ids of the build secrets `dockerfile` mounts (`RUN --mount=type=secret`), sorted, each once; `None`
/// when a mount's type or the fields that name its secret hold a variable (its secret cannot be told
/// without building), or a mount cannot be read (BuildKit refuses it). BuildKit's rules: a mount's
/// fields are one CSV record of `key=value` (keys in any case, `type` lower-cased, `bind` without one);
/// a secret mount's id is `id`, else `source`/`src`, else the last element of `target`/`dst`/
/// `destination` (`--mount=type=secret,target=/root/.npmrc` reads secret `.npmrc`). Every stage's mounts
/// count, built or not; an `ONBUILD` trigger's run in later builds, not this one.
pub fn secret_ids(dockerfile: &str) -> Result<Option<Vec<String>>, String> {
    let (_, instructions) = parse(dockerfile)?;
    let mut ids = Vec::new();
    for instruction in &instructions {
        let command = split_command(&instruction.text, instruction.line)?;
        if command.keyword != "run" {
            continue;
        }
        for flag in &command.flags {
            let Some(("mount", value)) = flag.strip_prefix("--").unwrap_or(flag).split_once('=') else { continue };
            match secret_mount_id(value) {
                SecretMount::NotASecret => {}
                SecretMount::Secret(id) => ids.push(id),
                SecretMount::Unknown => return Ok(None),
            }
        }
    }
    ids.sort();
    ids.dedup();
    Ok(Some(ids))
}

enum SecretMount {
    NotASecret,
    Secret(String),
    /// A variable where the secret is named, or fields BuildKit cannot read.
    Unknown,
}

/// The secret one `--mount` flag's value mounts, as BuildKit's `parseMount` and `dispatchSecret` read it.
fn secret_mount_id(value: &str) -> SecretMount {
    let Some(fields) = csv_fields(value) else { return SecretMount::Unknown };
    let (mut kind, mut id, mut source, mut target) = ("bind".to_owned(), None, None, None);
    for field in fields {
        let Some((key, value)) = field.split_once('=') else { continue };
        let slot = match key.to_ascii_lowercase().as_str() {
            "type" => {
                kind = value.to_ascii_lowercase();
                continue;
            }
            "id" => &mut id,
            "source" | "src" => &mut source,
            "target" | "dst" | "destination" => &mut target,
            _ => continue,
        };
        *slot = Some(value.to_owned());
    }
    if kind.contains('$') {
        return SecretMount::Unknown;
    }
    if kind != "secret" {
        return SecretMount::NotASecret;
    }
    if [&id, &source, &target].iter().any(|field| field.as_deref().is_some_and(|v| v.contains('$'))) {
        return SecretMount::Unknown;
    }
    let named = source.filter(|s| !s.is_empty()).or(id.filter(|i| !i.is_empty()));
    match named.or_else(|| target.filter(|t| !t.is_empty()).map(|t| go_path_base(&t))) {
        Some(id) => SecretMount::Secret(id),
        // BuildKit refuses a secret mount that names nothing.
        None => SecretMount::Unknown,
    }
}

/// The fields of one CSV record as Go's `encoding/csv` reads it (comma-separated; a field that starts
/// with `"` is quoted, `""` inside it a quote); `None` where it would fail.
fn csv_fields(record: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = record.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Some(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return None,
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Some(fields);
                    }
                    Some(',') => break,
                    Some('"') => return None,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Go's `path.Base`: the last element of a slash-separated path, trailing slashes removed.
fn go_path_base(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned()
}

/// The Dockerfile with every `RUN --mount=type=cache` given an id of `scope`'s own: BuildKit keys cache
/// mounts by id alone (the target path when none is given), so without this every build on an engine,
/// whoever's, would read and write the same `/root/.cargo` cache. A rewritten instruction is written on
/// its first line, its other lines left blank, so line numbers stay what the author wrote.
pub fn scope_cache_mounts(dockerfile: &str, scope: &str) -> Result<String, String> {
    rewrite_run_flags(dockerfile, |flag| scope_cache_flag(flag, scope))
}

/// The Dockerfile with each secret mount of a secret in `versions` (name -> a version of its value)
/// reading it under the id `<name>@<version>`, at the path it had (`target` set to it when it was
/// implied). BuildKit's cache knows a secret mount by its id, never its value: without this a step
/// that reads a secret would come from the cache after the value changed, and the build meant to read
/// the new value would keep what the old one made. Lines stay as [`scope_cache_mounts`] keeps them.
pub fn version_secret_mounts(dockerfile: &str, versions: &BTreeMap<String, String>) -> Result<String, String> {
    rewrite_run_flags(dockerfile, |flag| version_secret_flag(flag, versions))
}

/// The Dockerfile with each `RUN` instruction's flags passed through `rewrite`; an instruction with a
/// changed flag is written on its first line, its other lines left blank.
fn rewrite_run_flags(dockerfile: &str, rewrite: impl Fn(&str) -> String) -> Result<String, String> {
    let (_, instructions) = parse(dockerfile)?;
    let mut lines: Vec<String> = physical_lines(dockerfile).map(str::to_owned).collect();
    for instruction in &instructions {
        let command = split_command(&instruction.text, instruction.line)?;
        if command.keyword != "run" {
            continue;
        }
        let flags: Vec<String> = command.flags.iter().map(|flag| rewrite(flag)).collect();
        if flags == command.flags {
            continue;
        }
        let keyword = instruction.text.trim_start().split(is_separator).next().unwrap_or("RUN");
        let flags: Vec<String> = flags.iter().map(|flag| quote_flag(flag)).collect();
        lines[instruction.line - 1] = format!("{keyword} {} {}", flags.join(" "), command.args);
        for line in &mut lines[instruction.line..instruction.last_line] {
            line.clear();
        }
    }
    let mut scoped = lines.join("\n");
    if dockerfile.ends_with('\n') {
        scoped.push('\n');
    }
    Ok(scoped)
}

/// One `--mount=...` flag of a secret in `versions` reading it under its versioned id; any other flag as
/// it was.
fn version_secret_flag(flag: &str, versions: &BTreeMap<String, String>) -> String {
    let Some(value) = flag.strip_prefix("--mount=") else { return flag.to_owned() };
    let SecretMount::Secret(id) = secret_mount_id(value) else { return flag.to_owned() };
    let Some(version) = versions.get(&id) else { return flag.to_owned() };
    let Some(fields) = csv_fields(value) else { return flag.to_owned() };
    let key = |field: &str| field.split_once('=').map(|(key, _)| key.to_ascii_lowercase());
    let mut kept: Vec<String> =
        fields.into_iter().filter(|field| !matches!(key(field).as_deref(), Some("id" | "source" | "src"))).collect();
    if !kept.iter().any(|field| matches!(key(field).as_deref(), Some("target" | "dst" | "destination"))) {
        kept.push(format!("target=/run/secrets/{}", go_path_base(&id)));
    }
    kept.push(format!("id={id}@{version}"));
    let quoted: Vec<String> = kept
        .iter()
        .map(|field| match field.contains([',', '"']) {
            true => format!("\"{}\"", field.replace('"', "\"\"")),
            false => field.clone(),
        })
        .collect();
    format!("--mount={}", quoted.join(","))
}

/// One `--mount=...` flag with the cache id scoped; any other flag as it was.
fn scope_cache_flag(flag: &str, scope: &str) -> String {
    let Some(value) = flag.strip_prefix("--mount=") else { return flag.to_owned() };
    let fields: Vec<(String, String)> = value
        .split(',')
        .map(|field| match field.split_once('=') {
            Some((key, value)) => (key.trim().to_ascii_lowercase(), value.to_owned()),
            None => (field.trim().to_ascii_lowercase(), String::new()),
        })
        .collect();
    if !fields.iter().any(|(key, value)| key == "type" && value.eq_ignore_ascii_case("cache")) {
        return flag.to_owned();
    }
    let target = fields.iter().find(|(key, _)| matches!(key.as_str(), "target" | "dst" | "destination"));
    let id = fields.iter().find(|(key, _)| key == "id").or(target).map_or("", |(_, value)| value.as_str());
    let mut rewritten: Vec<String> = fields
        .iter()
        .filter(|(key, _)| key != "id")
        .map(|(key, value)| if value.is_empty() { key.clone() } else { format!("{key}={value}") })
        .collect();
    rewritten.push(format!("id=artifacts/{scope}/{id}"));
    format!("--mount={}", rewritten.join(","))
}

/// A flag as the Dockerfile parser reads it back: its value quoted when it holds a blank, a quote or a
/// backslash (a flag must start with a bare `--`).
fn quote_flag(flag: &str) -> String {
    let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
    if value.bytes().any(|b| is_latin1_space(b) || matches!(b, b'"' | b'\'' | b'\\')) {
        format!("{name}=\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        flag.to_owned()
    }
}

/// What the engine's built-in Dockerfile frontend (BuildKit of Docker 20.10) cannot read, found before
/// building so that it is refused with its line rather than built differently from what was written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NewerSyntax {
    /// `# syntax=<image>`: BuildKit would build with that frontend image, which it must pull.
    pub syntax: Option<(usize, String)>,
    /// The first `RUN`, `COPY` or `ADD` with a heredoc (`<<EOF`), which the built-in frontend reads as
    /// ordinary words (and the lines after it as instructions).
    pub heredoc: Option<usize>,
}

/// The `# syntax=` directive and the first heredoc of `dockerfile`.
pub fn newer_syntax(dockerfile: &str) -> Result<NewerSyntax, String> {
    let source = dockerfile.strip_prefix('\u{feff}').unwrap_or(dockerfile);
    let mut found = NewerSyntax::default();
    for (index, line) in physical_lines(source).enumerate() {
        let Some((name, value)) = directive(line) else { break };
        if name.eq_ignore_ascii_case("syntax") {
            found.syntax = Some((index + 1, value.to_owned()));
        }
    }
    let (_, instructions) = parse(dockerfile)?;
    for instruction in &instructions {
        let command = split_command(&instruction.text, instruction.line)?;
        if !matches!(command.keyword.as_str(), "run" | "copy" | "add") {
            continue;
        }
        if command.args.split(is_separator).any(is_heredoc) {
            found.heredoc = Some(instruction.line);
            break;
        }
    }
    Ok(found)
}

/// A word BuildKit's newer parsers take for a heredoc: `[n]<<[-]NAME`, the name maybe quoted.
fn is_heredoc(word: &str) -> bool {
    let word = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = word.strip_prefix("<<") else { return false };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = rest.trim_matches(['"', '\'']);
    !name.is_empty() && !name.contains('<') && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

/// The stage names of `dockerfile` (`FROM <image> AS <name>`), lower-cased as Docker reads them.
pub fn stage_names(dockerfile: &str) -> Result<Vec<String>, String> {
    let (_, instructions) = parse(dockerfile)?;
    let mut names = Vec::new();
    for instruction in &instructions {
        let command = split_command(&instruction.text, instruction.line)?;
        if command.keyword != "from" {
            continue;
        }
        let words: Vec<&str> = command.args.split(is_separator).filter(|word| !word.is_empty()).collect();
        if let [_, keyword, name] = words[..] {
            if keyword.eq_ignore_ascii_case("as") {
                names.push(name.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// A `target` as Docker accepts a stage name: `[a-z][a-z0-9._-]*` (at most 128 characters).
pub fn check_target(target: &str, dockerfile: &str) -> Result<(), String> {
    let valid = target.len() <= 128
        && target.starts_with(|c: char| c.is_ascii_lowercase())
        && target.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !valid {
        return Err(format!(
            "target {target:?} is not a stage name: a stage name is a lower-case letter followed by lower-case \
             letters, digits, '.', '_' or '-' (at most 128 characters)"
        ));
    }
    let stages = stage_names(dockerfile)?;
    if !stages.iter().any(|stage| stage == target) {
        let known = if stages.is_empty() { "none".to_owned() } else { stages.join(", ") };
        return Err(format!("target {target:?} is not a stage of the Dockerfile (its named stages: {known})"));
    }
    Ok(())
}

/// The `COPY --from` source of an `ONBUILD` trigger, which Docker parses as a file of its own.
fn trigger_copy_source(trigger: &str, line: usize) -> Result<Option<String>, String> {
    let (_, instructions) = parse(trigger).map_err(|why| format!("line {line}: ONBUILD {trigger}: {why}"))?;
    // Docker refuses a trigger that is not exactly one instruction.
    let [instruction] = &instructions[..] else { return Ok(None) };
    let command = split_command(&instruction.text, line)?;
    if command.keyword != "copy" {
        return Ok(None);
    }
    copy_source(&command.flags, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts_engine::image_access::registry_repository;

    const ID: &str = "3f2a8b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const REGISTRY: &str = "127.0.0.1:5000";

    fn images(dockerfile: &str) -> Vec<String> {
        referenced_images(dockerfile, &BTreeMap::new()).unwrap()
    }

    fn images_with(dockerfile: &str, build_args: &[(&str, &str)]) -> Result<Vec<String>, String> {
        let build_args = build_args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        referenced_images(dockerfile, &build_args)
    }

    fn error(dockerfile: &str) -> String {
        referenced_images(dockerfile, &BTreeMap::new()).unwrap_err()
    }

    #[test]
    fn secret_mounts_are_found_by_buildkits_rules() {
        let ids = |file: &str| secret_ids(file).unwrap();
        let file = "FROM busybox AS a\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n\
            FROM busybox\nRUN --mount=type=cache,target=/c \\\n  --mount=TYPE=Secret,target=/root/.npmrc \\\n  \
            --mount=type=secret,src=from-src,target=/x --mount=type=bind,id=not-a-secret true\n\
            RUN --mount=id=tok,type=secret true\nRUN echo --mount=type=secret,id=word\n\
            ONBUILD RUN --mount=type=secret,id=later true\n";
        assert_eq!(ids(file), Some(vec![".npmrc".to_owned(), "from-src".into(), "tok".into()]));
        assert_eq!(ids("FROM busybox\nRUN true\n"), Some(vec![]));
        assert_eq!(ids("FROM busybox\nRUN --mount=type=secret,target=/run/dir/ true\n"), Some(vec!["dir".into()]));
        // The instruction's parser takes quotes off a flag; an escaped one reaches BuildKit's CSV reader.
        assert_eq!(ids("FROM busybox\nRUN --mount=\"type=secret,id=q\" true\n"), Some(vec!["q".into()]));
        assert_eq!(ids("FROM busybox\nRUN --mount=type=secret,\\\"id=a,b\\\" true\n"), Some(vec!["a,b".into()]));
        assert_eq!(ids("FROM busybox\nRUN --mount=type=secret,id=a\\\"b true\n"), None, "a bare quote: no CSV");
        for unknown in [
            "FROM busybox\nARG ID=tok\nRUN --mount=type=secret,id=$ID true\n",
            "FROM busybox\nARG T=secret\nRUN --mount=type=$T,id=tok true\n",
            "FROM busybox\nRUN --mount=type=secret,target=/run/${NAME} true\n",
            "FROM busybox\nRUN --mount=type=secret true\n",
        ] {
            assert_eq!(ids(unknown), None, "{unknown}");
        }
        assert_eq!(ids("FROM busybox\nARG X\nRUN --mount=type=cache,target=/$X true\n"), Some(vec![]));
        assert_eq!(go_path_base("/"), "/");
        assert_eq!(go_path_base("a//b//"), "b");
    }

    #[test]
    fn secret_mounts_read_their_secret_under_a_versioned_id() {
        let versions: BTreeMap<String, String> =
            [("tok", "0123"), (".npmrc", "4567"), ("a,b", "89ab")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        let file = "FROM busybox\nRUN --mount=type=secret,id=tok \\\n  cat /run/secrets/tok\n\
            RUN --mount=type=secret,target=/root/.npmrc,mode=0400 --mount=type=cache,target=/c true\n\
            RUN --mount=type=secret,src=tok,target=/t --mount=type=secret,id=other true\n\
            RUN --mount=type=secret,\\\"id=a,b\\\" true\n";
        let versioned = version_secret_mounts(file, &versions).unwrap();
        let lines: Vec<&str> = versioned.lines().collect();
        assert_eq!(lines.len(), file.lines().count(), "{versioned}");
        assert_eq!(lines[1], "RUN --mount=type=secret,target=/run/secrets/tok,id=tok@0123 cat /run/secrets/tok");
        assert_eq!(lines[2], "", "the instruction's second line is blank");
        assert_eq!(
            lines[3],
            "RUN --mount=type=secret,target=/root/.npmrc,mode=0400,id=.npmrc@4567 --mount=type=cache,target=/c true"
        );
        assert_eq!(
            lines[4], "RUN --mount=type=secret,target=/t,id=tok@0123 --mount=type=secret,id=other true",
            "a secret without a version is left as it was"
        );
        assert_eq!(lines[5], r#"RUN --mount="type=secret,\"target=/run/secrets/a,b\",\"id=a,b@89ab\"" true"#);
        // Read back, the mounts name the versioned ids.
        let ids = secret_ids(&versioned).unwrap().unwrap();
        assert_eq!(ids, [".npmrc@4567", "a,b@89ab", "other", "tok@0123"]);
        assert_eq!(version_secret_mounts("FROM busybox\nRUN true\n", &versions).unwrap(), "FROM busybox\nRUN true\n");
    }

    #[test]
    fn cache_mounts_get_ids_of_the_component_and_lines_stay() {
        let file = "FROM busybox\nRUN --mount=type=cache,target=/root/.cargo \\\n    --mount=type=secret,id=tok \\\n    cargo build\nRUN --mount=type=cache,id=shared,target=/c,sharing=locked true\nRUN --mount=type=bind,target=/b true\nRUN echo --mount=type=cache\n";
        let scoped = scope_cache_mounts(file, "team-a").unwrap();
        let lines: Vec<&str> = scoped.lines().collect();
        assert_eq!(lines.len(), file.lines().count(), "{scoped}");
        assert_eq!(
            lines[1],
            "RUN --mount=type=cache,target=/root/.cargo,id=artifacts/team-a//root/.cargo --mount=type=secret,id=tok cargo build"
        );
        assert_eq!((lines[2], lines[3]), ("", ""));
        assert_eq!(lines[4], "RUN --mount=type=cache,target=/c,sharing=locked,id=artifacts/team-a/shared true");
        assert_eq!(lines[5], "RUN --mount=type=bind,target=/b true", "no cache mount: untouched");
        assert_eq!(lines[6], "RUN echo --mount=type=cache", "the command's own words are not flags");
        assert_eq!(referenced_images(&scoped, &BTreeMap::new()).unwrap(), vec!["busybox"]);
        assert!(scoped.ends_with('\n'));
        let quoted = scope_cache_mounts("FROM busybox\nRUN --mount=\"type=cache,target=/a b\" true\n", "c").unwrap();
        assert_eq!(quoted.lines().nth(1).unwrap(), "RUN --mount=\"type=cache,target=/a b,id=artifacts/c//a b\" true");
        let (_, again) = parse(&quoted).unwrap();
        let flags = split_command(&again[1].text, 2).unwrap().flags;
        assert_eq!(flags, vec!["--mount=type=cache,target=/a b,id=artifacts/c//a b"], "read back as written");
    }

    #[test]
    fn mounts_from_images_are_images_and_from_stages_are_not() {
        let file = "FROM busybox AS b\nFROM busybox\nRUN --mount=type=bind,from=b,target=/b --mount=type=cache,target=/c,from=other/img true\n";
        assert_eq!(images(file), ["busybox", "other/img"]);
        assert!(error("FROM busybox\nRUN --mount=from=$X,target=/x true\n").contains("line 2"));
    }

    #[test]
    fn syntax_directives_and_heredocs_are_found_with_their_lines() {
        let found = newer_syntax("# syntax=docker/dockerfile:1.4\nFROM busybox\nRUN <<EOF\necho hi\nEOF\n").unwrap();
        assert_eq!(found.syntax, Some((1, "docker/dockerfile:1.4".into())));
        assert_eq!(found.heredoc, Some(3));
        let found = newer_syntax("FROM busybox\nRUN true\nCOPY <<-\"END\" /x\n").unwrap();
        assert_eq!(found, NewerSyntax { syntax: None, heredoc: Some(3) });
        let plain = newer_syntax("FROM busybox\nRUN echo a<<b && cat <<< x\n# syntax=late\n").unwrap();
        assert_eq!(plain, NewerSyntax::default());
    }

    #[test]
    fn targets_are_stage_names_of_the_file() {
        let file = "FROM busybox AS Build\nFROM busybox AS final\n";
        assert_eq!(check_target("build", file), Ok(()));
        assert!(check_target("Build", file).unwrap_err().contains("not a stage name"));
        assert!(check_target("nope", file).unwrap_err().contains("build, final"));
        assert!(check_target("../x", file).is_err());
    }

    #[test]
    fn a_plain_from_names_its_image() {
        assert_eq!(images("FROM alpine:3.19\nRUN echo hi\n"), ["alpine:3.19"]);
        assert_eq!(images("FROM \"alpine\"\n"), ["alpine"]);
        assert_eq!(images("FROM debian@sha256:abc\n"), ["debian@sha256:abc"]);
    }

    #[test]
    fn the_attack_as_reproduced_names_the_other_teams_image_on_our_registry() {
        let found = images("FROM 127.0.0.1:5000/victim-img-main-image:amd64\nRUN cat /secrets/*\n");
        assert_eq!(found, ["127.0.0.1:5000/victim-img-main-image:amd64"]);
        assert_eq!(registry_repository(&found[0], REGISTRY).as_deref(), Some("victim-img-main-image"));
    }

    #[test]
    fn the_platform_flag_is_not_the_image() {
        assert_eq!(images("FROM --platform=linux/amd64 debian AS base\n"), ["debian"]);
        assert_eq!(images("FROM --platform=\"$BUILDPLATFORM\" golang:1.22\n"), ["golang:1.22"]);
    }

    #[test]
    fn earlier_stages_are_not_images_in_any_case() {
        let dockerfile = "FROM golang:1.22 AS Build\nRUN go build\nFROM build\nFROM BUILD AS again\nFROM again\n";
        assert_eq!(images(dockerfile), ["golang:1.22"]);
    }

    #[test]
    fn a_stage_named_before_it_is_defined_is_an_image() {
        assert_eq!(images("FROM later\nFROM alpine AS later\n"), ["later", "alpine"]);
        // A stage is not finished, so not nameable, until the next FROM.
        assert_eq!(images("FROM alpine AS me\nCOPY --from=me /a /b\n"), ["alpine", "me"]);
    }

    #[test]
    fn copy_from_a_stage_or_an_index_uses_no_image_and_from_anything_else_does() {
        let dockerfile = "\
FROM golang AS build
FROM alpine
COPY --from=build /app /app
COPY --from=BUILD /app /app
COPY --from=0 /app /app
COPY --from=127.0.0.1:5000/other-main-image:amd64 /secret /secret
COPY --chown=1:1 --from=\"nginx:1\" /etc/nginx /etc/nginx
COPY --from= a b
COPY a b
";
        assert_eq!(images(dockerfile), ["golang", "alpine", "127.0.0.1:5000/other-main-image:amd64", "nginx:1"]);
    }

    #[test]
    fn add_has_no_from() {
        assert_eq!(images("FROM alpine\nADD --from=secret-img /a /b\n"), ["alpine"]);
    }

    #[test]
    fn copy_from_needs_one_value() {
        assert!(error("FROM alpine\nCOPY --from a b\n").contains("COPY --from needs a value"));
        assert!(error("FROM alpine\nCOPY --from=x --from=y a b\n").contains("--from twice"));
    }

    #[test]
    fn copy_from_is_not_substituted() {
        let why = images_with("ARG SRC=x\nFROM alpine\nCOPY --from=$SRC a b\n", &[]).unwrap_err();
        assert!(why.contains("line 3") && why.contains("does not substitute variables"), "{why}");
    }

    #[test]
    fn args_before_the_first_from_are_substituted_with_their_defaults_or_build_args() {
        let dockerfile = "ARG BASE=alpine\nARG TAG\nFROM $BASE:${TAG:-latest}\n";
        assert_eq!(images_with(dockerfile, &[]).unwrap(), ["alpine:latest"]);
        assert_eq!(images_with(dockerfile, &[("TAG", "3.19")]).unwrap(), ["alpine:3.19"]);
        assert_eq!(images_with(dockerfile, &[("BASE", "debian"), ("TAG", "12")]).unwrap(), ["debian:12"]);
    }

    #[test]
    fn substitution_forms() {
        let dockerfile = "\
ARG REGISTRY=\"docker.io\"
ARG NAME='library/node'
ARG VARIANT
ARG EMPTY=
ARG REF=${REGISTRY}/${NAME}
FROM ${REF}:20${VARIANT:+-$VARIANT}
FROM ${EMPTY:-busybox}${EMPTY}
FROM \"${VARIANT:-alp}\"'ine'
";
        assert_eq!(images_with(dockerfile, &[]).unwrap(), ["docker.io/library/node:20", "busybox", "alpine"]);
        let slim = images_with(dockerfile, &[("VARIANT", "slim")]).unwrap();
        assert_eq!(slim, ["docker.io/library/node:20-slim", "busybox", "slimine"]);
    }

    #[test]
    fn defaults_on_one_arg_line_see_only_earlier_lines() {
        assert_eq!(images("ARG A=one\nARG A=two B=$A\nFROM img:$B-$A\n"), ["img:one-two"]);
    }

    #[test]
    fn an_arg_after_the_first_from_does_not_reach_a_later_from() {
        let why = error("FROM alpine\nARG BASE=debian\nFROM $BASE\n");
        assert!(why.contains("line 3: FROM $BASE: BASE is not declared"), "{why}");
    }

    #[test]
    fn a_variable_without_a_value_is_refused_with_what_to_do() {
        let why = error("ARG BASE\nFROM ${BASE}\n");
        assert_eq!(why, "line 2: FROM ${BASE}: BASE has no value; pass it in buildArgs or give `ARG BASE` a default");
        let why = error("FROM ${BASE}\n");
        assert!(why.contains("BASE is not declared; add `ARG BASE` before the first FROM"), "{why}");
        // Build arguments reach FROM only through a declaration.
        assert!(images_with("FROM $BASE\n", &[("BASE", "alpine")]).unwrap_err().contains("not declared"));
        assert!(error("ARG TAG\nFROM alpine:$TAG\n").contains("TAG has no value"));
        assert!(error("ARG TAG\nFROM alpine:${TAG?}\n").contains("TAG has no value"));
        assert!(error("ARG TAG=\nFROM alpine:${TAG:?}\n").contains("TAG has no value"));
        assert!(error("ARG EMPTY=\nFROM $EMPTY\n").contains("names no image"));
    }

    #[test]
    fn an_unused_alternative_may_name_a_variable_without_a_value() {
        assert_eq!(images("ARG TAG=1\nFROM img:${TAG:-$NOPE}\nFROM x${NOPE:+$ALSO}\n"), ["img:1", "x"]);
    }

    #[test]
    fn what_cannot_be_decided_is_refused() {
        assert!(error("FROM img\\$x\n").contains("still has a `$`"));
        assert!(error("FROM img$\n").contains("still has a `$`"));
        assert!(error("ARG X=1\nFROM ${X-y}\n").contains("must be followed by"));
        assert!(error("ARG X=1\nFROM ${X#y}\n").contains("must be followed by"));
        assert!(error("FROM ${X\n").contains("`}` is missing"));
        assert!(error("FROM ${\n").contains("`}` is missing"));
        assert!(error("FROM 'alpine\n").contains("single quote is not closed"));
        assert!(error("ARG X=\"a\nFROM alpine\n").contains("quote is not closed"));
        assert!(error("FROM $é\n").contains("ASCII"));
        assert!(error("FROM alpine AS\n").contains("FROM takes <image> or <image> AS <name>"));
        assert!(error("FROM alpine # a comment is an argument here\n").contains("<image> AS <name>"));
        assert!(error("FROM\n").contains("line 1"));
    }

    #[test]
    fn proxy_build_args_count_as_docker_counts_them() {
        assert_eq!(images_with("FROM img:$HTTP_PROXY\n", &[("HTTP_PROXY", "p")]).unwrap(), ["img:p"]);
        let why = images_with("FROM img:${ALL_PROXY}\n", &[("ALL_PROXY", "p")]).unwrap_err();
        assert!(why.contains("declare `ARG ALL_PROXY`"), "{why}");
        assert_eq!(images_with("ARG ALL_PROXY\nFROM img:$ALL_PROXY\n", &[("ALL_PROXY", "p")]).unwrap(), ["img:p"]);
    }

    #[test]
    fn continuation_lines_comments_and_blank_lines_inside_them() {
        let dockerfile = "\
# FROM commented-out
   # FROM indented-comment
FROM \\
    # a comment inside
\t
    busybox:1 \\
    AS base
  from   base\t\\   
  AS   next
";
        assert_eq!(images(dockerfile), ["busybox:1"]);
        assert_eq!(images("FROM alpine\nRUN echo \\\nFROM 127.0.0.1:5000/x\n"), ["alpine"]);
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_and_escape_character() {
        let dockerfile =
            "# escape=`\nFROM mcr.microsoft.com/windows `\n  AS win\nFROM win\nCOPY --from=win C:\\a C:\\b\n";
        assert_eq!(images(dockerfile), ["mcr.microsoft.com/windows"]);
        // With ` as escape, a backslash is an ordinary character and ends no line.
        assert_eq!(images("#escape = `\nFROM a\\\nFROM b\n"), ["a\\", "b"]);
        assert_eq!(images("# syntax=docker/dockerfile:1\n# Escape=`\nFROM a`\n  AS s\n"), ["a"]);
    }

    #[test]
    fn a_directive_counts_only_at_the_very_top() {
        assert_eq!(images("\n# escape=`\nFROM x\\\n:1\n"), ["x:1"]);
        assert_eq!(images("# hello\n# escape=`\nFROM a\\\nb\n"), ["ab"]);
        assert_eq!(images("FROM a\n# escape=`\nFROM b\\\nc\n"), ["a", "bc"]);
    }

    #[test]
    fn directives_that_engine_versions_read_differently_are_refused() {
        assert!(error("# escape=`\n# escape=\\\nFROM a\n").contains("appears twice"));
        assert!(error("# escape=x\nFROM a\n").contains("takes ` or \\"));
        assert!(error("# check=skip=all\n# escape=`\nFROM a\n").contains("put the escape directive first"));
        assert_eq!(images("# escape=`\n# check=skip=all\nFROM a`\n:1\n"), ["a:1"]);
    }

    #[test]
    fn instructions_are_case_insensitive() {
        assert_eq!(
            images("from alpine as Base\nFrOm base\ncopy --from=BASE a b\nCopy --from=nginx a b\n"),
            ["alpine", "nginx"]
        );
        assert!(error("FRÖM alpine\n").contains("not an instruction"));
    }

    #[test]
    fn scratch_uses_no_image() {
        assert!(images("FROM scratch\nCOPY app /app\n").is_empty());
        assert!(images("FROM scratch AS empty\nFROM empty\n").is_empty());
    }

    #[test]
    fn image_ids_are_returned_as_references() {
        let sha = format!("sha256:{ID}");
        let dockerfile = format!("FROM {ID}\nFROM {sha}\nFROM alpine\nCOPY --from=3f2a a b\n");
        assert_eq!(images(&dockerfile), [ID, sha.as_str(), "alpine", "3f2a"]);
    }

    #[test]
    fn references_come_once_in_order() {
        assert_eq!(images("FROM b\nFROM a\nFROM b\nCOPY --from=a x y\nFROM c\n"), ["b", "a", "c"]);
    }

    #[test]
    fn crlf_line_ends_and_a_byte_order_mark_are_read_as_docker_reads_them() {
        assert_eq!(images("\u{feff}# escape=`\r\nFROM a `\r\n AS s\r\nFROM s\r\n"), ["a"]);
    }

    #[test]
    fn onbuild_copy_from_counts_whatever_the_stages_here() {
        let dockerfile = "\
FROM golang AS build
FROM alpine AS base
ONBUILD COPY --from=127.0.0.1:5000/victim-main-image:amd64 /secret /secret
ONBUILD COPY --from=build /app /app
ONBUILD COPY --from=1 /x /x
ONBUILD RUN echo hi
FROM base
";
        // `build` is a stage here, but maybe not in a later build that starts FROM this image.
        assert_eq!(images(dockerfile), ["golang", "alpine", "127.0.0.1:5000/victim-main-image:amd64", "build"]);
        assert_eq!(images("FROM alpine\nONBUILD  copy --chown=1 --from=x:1 a b\n"), ["alpine", "x:1"]);
        assert!(error("FROM alpine\nONBUILD COPY --from=$X a b\n").contains("does not substitute variables"));
    }
}
