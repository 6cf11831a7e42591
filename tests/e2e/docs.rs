//! The examples in README.md and docs/ are code that is compiled and run, not prose.
//!
//! Each Rust block in them is an excerpt of a file the workspace builds and tests, named in an
//! HTML comment on the line above the fence (`<!-- source: examples/echo/src/lib.rs -->`,
//! invisible when rendered); `every_rust_example_in_the_docs_is_an_excerpt_of_compiled_code`
//! checks the excerpt against that file. Each trace block marked `<!-- trace, run with kv-v2 -->`
//! is run by the simulator. The README's Echo runs under a real host, through a real socket,
//! and the README's simulator example is a function of this file, run below.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tasuki::sim::trace::Trace;
use tasuki::sim::{SimConfig, Simulator, UpgradeAt};
use tasuki_tests::{TestHost, artifacts, expect_bytes, expect_silence};

/// The files whose examples are checked: the README and every page under docs/.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/ exists");
    let mut pages: Vec<PathBuf> = docs
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the repository")
}

/// A fenced code block: where it starts, its language, the comment on the line above its fence
/// (without `<!--` and `-->`), and its lines.
#[derive(Debug)]
struct Block {
    at: String,
    lang: String,
    marker: Option<String>,
    lines: Vec<String>,
}

fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.strip_prefix(repo_root()).unwrap_or(path).display().to_string();
    blocks_in(&name, &text)
}

/// The fenced code blocks of `text` (the document `name`): fences of three or more backticks or
/// tildes, indented or not (inside a list item), each block's lines taken out of the fence's
/// indentation, as a Markdown renderer shows them.
fn blocks_in(name: &str, text: &str) -> Vec<Block> {
    /// The fence a line opens or closes: its indentation, its character and length, and the
    /// info string after it.
    fn fence(line: &str) -> Option<(usize, char, usize, &str)> {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let mark = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
        let len = trimmed.chars().take_while(|c| *c == mark).count();
        (len >= 3).then(|| (indent, mark, len, trimmed[len..].trim()))
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((indent, mark, len, info)) = fence(lines[i]) else {
            i += 1;
            continue;
        };
        let marker = i
            .checked_sub(1)
            .and_then(|above| lines[above].trim().strip_prefix("<!--"))
            .and_then(|comment| comment.strip_suffix("-->"))
            .map(|comment| comment.trim().to_string());
        let start = i + 1;
        let end = (start..lines.len())
            .find(|&j| {
                fence(lines[j])
                    .is_some_and(|(_, m, l, rest)| m == mark && l >= len && rest.is_empty())
            })
            .unwrap_or_else(|| panic!("{name}:{}: a code block that never ends", i + 1));
        found.push(Block {
            at: format!("{name}:{}", i + 1),
            lang: info.to_string(),
            marker,
            lines: lines[start..end]
                .iter()
                .map(|l| {
                    let inside = l.len() - l.trim_start_matches(' ').len();
                    l[inside.min(indent)..].trim_end().to_string()
                })
                .collect(),
        });
        i = end + 1;
    }
    found
}

impl Block {
    /// Whether the block is Rust: its info string's language is `rust` or `rs`, whatever
    /// attributes follow (`rust,ignore`, `rust no_run`).
    fn is_rust(&self) -> bool {
        let language = self.lang.split([',', ' ', '{']).next().unwrap_or_default();
        language.eq_ignore_ascii_case("rust") || language.eq_ignore_ascii_case("rs")
    }
}

/// Whether `excerpt` appears in `file` as consecutive lines, all indented by the same number of
/// spaces more than in the excerpt; a line `// ...` in the excerpt stands for any number of
/// lines (none too).
fn is_excerpt(excerpt: &[String], file: &[&str]) -> bool {
    fn indent(line: &str) -> usize {
        line.len() - line.trim_start_matches(' ').len()
    }
    fn matches(excerpt: &[String], file: &[&str], shift: usize) -> bool {
        let Some((first, rest)) = excerpt.split_first() else { return true };
        if first.trim() == "// ..." {
            return (0..=file.len()).any(|skip| matches(rest, &file[skip..], shift));
        }
        let Some((line, file_rest)) = file.split_first() else { return false };
        let line = line.trim_end();
        let same = if first.is_empty() {
            line.is_empty()
        } else {
            indent(line) == indent(first) + shift && line[shift..] == **first
        };
        same && matches(rest, file_rest, shift)
    }
    let Some(anchor) = excerpt.iter().find(|l| !l.is_empty() && l.trim() != "// ...") else {
        return false;
    };
    let leading = excerpt.iter().take_while(|l| *l != anchor).count();
    (0..file.len()).any(|at| {
        let line = file[at].trim_end();
        let Some(shift) = indent(line).checked_sub(indent(anchor)) else { return false };
        // Start where the excerpt starts: at most `leading` lines (blank or elided) earlier.
        line.get(shift..) == Some(anchor.as_str())
            && (at.saturating_sub(leading)..=at).any(|from| matches(excerpt, &file[from..], shift))
    })
}

#[test]
fn every_rust_example_in_the_docs_is_an_excerpt_of_compiled_code() {
    let mut checked = 0;
    for document in documents() {
        for block in blocks(&document).into_iter().filter(Block::is_rust) {
            let source = block
                .marker
                .as_deref()
                .and_then(|m| m.strip_prefix("source:"))
                .map(str::trim)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: a Rust example must name the file it is taken from, on the line \
                         above its fence: <!-- source: path/in/the/repo.rs -->",
                        block.at
                    )
                });
            // A page of prose would pass as its own source, and compiles nothing.
            assert!(
                source.ends_with(".rs"),
                "{}: the source of a Rust example must be a Rust file the workspace builds, \
                 not {source}",
                block.at
            );
            let text = std::fs::read_to_string(repo_root().join(source))
                .unwrap_or_else(|e| panic!("{}: source {source}: {e}", block.at));
            let file: Vec<&str> = text.lines().collect();
            assert!(
                is_excerpt(&block.lines, &file),
                "{}: this example is not in {source} as written (lines in order, one indentation \
                 shift, `// ...` for lines left out):\n{}",
                block.at,
                block.lines.join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} Rust examples found: is the block parser broken?");
}

#[test]
fn the_excerpt_check_refuses_what_the_file_does_not_say() {
    let file = ["fn a() {", "    let x = 1;", "    let y = 2;", "    x + y", "}"];
    let excerpt = |lines: &[&str]| lines.iter().map(|l| (*l).to_string()).collect::<Vec<_>>();
    assert!(is_excerpt(&excerpt(&["let x = 1;", "let y = 2;"]), &file), "dedented by 4");
    assert!(is_excerpt(&excerpt(&["fn a() {", "    // ...", "    x + y", "}"]), &file));
    assert!(is_excerpt(&excerpt(&["fn a() {", "    // ...", "    let x = 1;"]), &file));
    assert!(!is_excerpt(&excerpt(&["let y = 2;", "let x = 1;"]), &file), "order");
    assert!(!is_excerpt(&excerpt(&["let x = 1;", "x + y"]), &file), "a gap without `// ...`");
    assert!(!is_excerpt(&excerpt(&["let x = 1;", "  let y = 2;"]), &file), "indentation");
    assert!(!is_excerpt(&excerpt(&["let x = 3;"]), &file));
    assert!(!is_excerpt(&excerpt(&["// ..."]), &file), "nothing but an elision");
}

#[test]
fn every_rust_block_is_found_however_it_is_fenced() {
    let text = "\
<!-- source: a.rs -->
```rust
let a = 1;
```
```rust,ignore
let b = 2;
```
1. In a list:
   ```rust
   let c = 3;
       indented();
   ```
~~~rs
let d = 4;
~~~
````Rust no_run
```
let e = 5;
````
```sh
cargo build
```
";
    let blocks = blocks_in("doc.md", text);
    let rust: Vec<(&str, &[String])> =
        blocks.iter().filter(|b| b.is_rust()).map(|b| (b.at.as_str(), &b.lines[..])).collect();
    let lines = |l: &[&str]| l.iter().map(|l| (*l).to_string()).collect::<Vec<_>>();
    assert_eq!(
        rust,
        [
            ("doc.md:2", &lines(&["let a = 1;"])[..]),
            ("doc.md:5", &lines(&["let b = 2;"])[..]),
            ("doc.md:9", &lines(&["let c = 3;", "    indented();"])[..]),
            ("doc.md:13", &lines(&["let d = 4;"])[..]),
            ("doc.md:16", &lines(&["```", "let e = 5;"])[..]),
        ]
    );
    assert_eq!(blocks[0].marker.as_deref(), Some("source: a.rs"));
    assert_eq!(blocks.len(), 6, "and the sh block");
}

#[test]
fn every_trace_in_the_docs_runs() {
    let mut ran = 0;
    for document in documents() {
        for block in blocks(&document) {
            let Some(package) =
                block.marker.as_deref().and_then(|m| m.strip_prefix("trace, run with"))
            else {
                continue;
            };
            let package = package.trim();
            let app = artifacts::ALL
                .iter()
                .find(|(name, _)| *name == package)
                .unwrap_or_else(|| panic!("{}: no component `{package}`", block.at))
                .1;
            // Paths in `upgrade` lines name components beside the app's.
            let dir = Path::new(app).parent().expect("the components' directory");
            let trace = Trace::parse(&block.at, &block.lines.join("\n"), dir)
                .unwrap_or_else(|e| panic!("{e}"));
            let sim = Simulator::new(SimConfig { app: app.into(), ..SimConfig::default() })
                .unwrap_or_else(|e| panic!("{e}"));
            let report = sim.run(&trace, UpgradeAt::Never).unwrap_or_else(|e| panic!("{e}"));
            println!("{report}");
            assert!(report.passed(), "{}: {report}", block.at);
            ran += 1;
        }
    }
    assert!(ran >= 1, "no trace block is marked to run");
}

/// The README's simulator example ("From Rust (an app's own `cargo test`) ..."), as it stands
/// there.
mod readme_simulator_example {
    use std::time::Duration;
    use tasuki::sim::{SimConfig, Simulator, Target, UpgradeAt, trace::Trace};

    /// kv 2 → 3 keeps a key's deadline, with the upgrade at every event boundary of the trace.
    /// `kv_v2`, `kv_v3` and `kv_v2_to_v3` are the paths of the three components.
    pub fn expiry_holds_across_the_upgrade(
        kv_v2: &str,
        kv_v3: &str,
        kv_v2_to_v3: &str,
    ) -> anyhow::Result<()> {
        let trace = Trace::new("expiry")
            .connect("a")
            .send("a", "SET k v PX 100\r\n")
            .expect("a", "+OK\r\n")
            .advance(Duration::from_millis(150))
            .send("a", "EXISTS k\r\n")
            .expect("a", ":0\r\n"); // or Trace::read(path)
        let sim = Simulator::new(SimConfig {
            app: kv_v2.into(),
            upgrade: Some(Target { wasm: kv_v3.into(), transforms: vec![kv_v2_to_v3.into()] }),
            ..SimConfig::default()
        })?;
        let report = sim.run(&trace, UpgradeAt::Every)?;
        assert!(report.passed(), "{report}");
        Ok(())
    }
}

#[test]
fn the_readme_simulator_example_passes() {
    readme_simulator_example::expiry_holds_across_the_upgrade(
        artifacts::KV_V2,
        artifacts::KV_V3,
        artifacts::KV_V2_TO_V3,
    )
    .unwrap();
}

/// The README's Echo (examples/echo), under a real host: a client writes three lines in one
/// write and reads three answers. Before the SDK offered leftover input again, it read `one`
/// alone, and every later answer came one line late.
#[test]
fn the_readme_echo_answers_a_pipeline_written_in_one_go() {
    let host = TestHost::start(artifacts::ECHO);
    assert_eq!(host.status().app.to_string(), "echo 1.0.0", "NAME and the crate's version");
    let mut client = host.raw();
    client.write_all(b"one\ntwo\nthree\n").unwrap();
    expect_bytes(&mut client, b"one\ntwo\nthree\n");
    expect_silence(&mut client, Duration::from_millis(100));

    // An unfinished line crosses an upgrade and is answered once, whole. A round trip on
    // another connection first, so that the host has read the half line before the upgrade.
    client.write_all(b"fo").unwrap();
    let mut other = host.raw();
    other.write_all(b"ping\r\n").unwrap();
    expect_bytes(&mut other, b"ping\r\n");
    let report = host.upgrade(artifacts::ECHO).expect("upgrade");
    let conns = report.sections.iter().find(|s| s.name == "tasuki.conns").expect("conns section");
    assert!(conns.bytes > 2, "the half line crossed in the state: {report:?}");
    client.write_all(b"ur\r\n").unwrap();
    expect_bytes(&mut client, b"four\r\n");
    expect_silence(&mut client, Duration::from_millis(200));
}
