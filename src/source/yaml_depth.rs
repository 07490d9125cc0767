//! A linear pre-scan bounding how deep a YAML file's flow collections (`[`, `{`) nest, before
//! libyaml sees the text: libyaml's scanner does work proportional to the current flow depth for
//! every token, so 100,000 nested `[` cost it minutes of CPU (and memory) before it reports the
//! missing `]`. Kubernetes objects nest a few levels; anything past [`MAX_FLOW_DEPTH`] is
//! rejected at once.
//!
//! The scan follows enough of YAML's lexical rules not to count brackets that are text: inside
//! quoted scalars, comments, block scalars (`|`, `>`) and plain scalars in block context
//! (`image: repo[1]`).

/// The deepest flow nesting accepted.
pub const MAX_FLOW_DEPTH: usize = 64;

/// The 1-based line where the flow nesting first exceeds [`MAX_FLOW_DEPTH`], if it does.
pub fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut scan = Scan {
        bytes,
        at: 0,
        line: 1,
        depth: 0,
        node_start: true,
        line_indent: 0,
        in_indent: true,
    };
    scan.run()
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    line: usize,
    /// Open flow collections.
    depth: usize,
    /// The next character may begin a node (a collection, a quoted or a block scalar).
    node_start: bool,
    /// Indentation of the current line, and whether we are still in it.
    line_indent: usize,
    in_indent: bool,
}

impl Scan<'_> {
    fn run(&mut self) -> Option<usize> {
        while let Some(&c) = self.bytes.get(self.at) {
            let prev_blank =
                self.at == 0 || matches!(self.bytes[self.at - 1], b' ' | b'\t' | b'\n');
            self.at += 1;
            match c {
                b'\n' => self.newline(),
                b' ' | b'\t' => {
                    if self.in_indent && c == b' ' {
                        self.line_indent += 1;
                    }
                }
                b'#' if prev_blank => self.skip_line(),
                b'[' | b'{' if self.depth > 0 || self.node_start => {
                    self.in_indent = false;
                    self.depth += 1;
                    if self.depth > MAX_FLOW_DEPTH {
                        return Some(self.line);
                    }
                    self.node_start = true;
                }
                b']' | b'}' if self.depth > 0 => {
                    self.in_indent = false;
                    self.depth -= 1;
                    self.node_start = false;
                }
                b'"' | b'\'' if self.node_start => {
                    self.in_indent = false;
                    self.skip_quoted(c);
                    self.node_start = false;
                }
                b'|' | b'>' if self.node_start && self.depth == 0 => {
                    let indent = self.line_indent;
                    self.skip_line();
                    self.skip_block_scalar(indent);
                }
                b'-' | b'?' | b':' if self.blank_follows() => {
                    self.in_indent = false;
                    self.node_start = true;
                }
                b',' | b':' if self.depth > 0 => self.node_start = true,
                _ => {
                    self.in_indent = false;
                    self.node_start = false;
                }
            }
        }
        None
    }

    fn blank_follows(&self) -> bool {
        self.bytes
            .get(self.at)
            .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    }

    fn newline(&mut self) {
        self.line += 1;
        self.line_indent = 0;
        self.in_indent = true;
        // In block context a new line may start a node; in flow context it continues one.
        if self.depth == 0 {
            self.node_start = true;
        }
    }

    /// Up to (not past) the end of the line.
    fn skip_line(&mut self) {
        while self.bytes.get(self.at).is_some_and(|&c| c != b'\n') {
            self.at += 1;
        }
    }

    /// Past the closing quote (`''` escapes `'`, `\` escapes in `"`), counting lines.
    fn skip_quoted(&mut self, quote: u8) {
        while let Some(&c) = self.bytes.get(self.at) {
            self.at += 1;
            match c {
                b'\n' => self.line += 1,
                b'\\' if quote == b'"' => {
                    if self.bytes.get(self.at) == Some(&b'\n') {
                        self.line += 1;
                    }
                    self.at += 1;
                }
                c if c == quote => {
                    if quote == b'\'' && self.bytes.get(self.at) == Some(&b'\'') {
                        self.at += 1;
                    } else {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// The lines of a block scalar: blank ones and those indented more than `parent`. Leaves
    /// the scan at the newline before the first line that is not part of it.
    fn skip_block_scalar(&mut self, parent: usize) {
        while self.bytes.get(self.at) == Some(&b'\n') {
            let start = self.at + 1;
            let rest = &self.bytes[start.min(self.bytes.len())..];
            let indent = rest.iter().take_while(|&&c| c == b' ').count();
            let blank = rest.get(indent).is_none_or(|&c| c == b'\n' || c == b'\r');
            if !blank && indent <= parent {
                return;
            }
            self.at = start;
            self.line += 1;
            self.skip_line();
        }
    }
}
