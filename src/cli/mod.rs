//! The `daxlog` command-line tool: create, append to, read, inspect, check and benchmark logs.
//!
//! `src/main.rs` only calls [`main`]. The commands are documented in `docs/CLI.md`.
//!
//! Exit codes: 0 on success, 1 on an error (one line on stderr starting `error:` that names the
//! path and the cause), 2 on a usage error.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Error;

mod bench;
mod commands;
mod size;

pub use size::parse_size;

/// Runs the tool with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors go to stderr with code 2; --help and --version to stdout with 0.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`daxlog dump log | head`): not an error.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            let _ = writeln!(io::stderr().lock(), "error: {line}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Create(a) => commands::create(a),
        Command::Append(a) => commands::append(a),
        Command::Dump(a) => commands::dump(a),
        Command::Cat(a) => commands::cat(a),
        Command::Info(a) => commands::info(a),
        Command::Check(a) => commands::check(a),
        Command::Truncate(a) => commands::truncate(a),
        Command::Reset(a) => commands::reset(a),
        Command::Bench(a) => bench::bench(a),
    }
}

/// An append-only, crash-safe log on persistent memory (DAX), with an msync fallback.
///
/// Exit codes: 0 success, 1 error (one `error:` line on stderr), 2 usage error.
#[derive(Parser, Debug)]
#[command(name = "daxlog", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new, empty log file of a fixed capacity.
    Create(commands::CreateArgs),
    /// Append entries: one per line of stdin (or --data); prints each durable entry's LSN.
    Append(commands::AppendArgs),
    /// Print entries as `LSN<TAB>payload in lowercase hex`, one per line.
    Dump(commands::DumpArgs),
    /// Print payloads as text (invalid UTF-8 replaced), one per line.
    Cat(commands::CatArgs),
    /// Show the log's format, size, LSN range, persistence mode and what recovery found.
    Info(commands::InfoArgs),
    /// Verify every entry; exit 1 with the LSN and offset of any corruption.
    Check(commands::CheckArgs),
    /// Durably drop the entries before an LSN (after a checkpoint) or after one (a suffix).
    Truncate(commands::TruncateArgs),
    /// Durably drop every entry (LSNs continue where they were).
    Reset(commands::ResetArgs),
    /// Measure append and recovery speed (default: a log in /dev/shm, 4 sizes, all modes).
    Bench(bench::BenchArgs),
}

/// Everything a command can fail with.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The library failed on the log at `path`.
    Log { path: PathBuf, source: Error },
    /// Writing to stdout failed (a broken pipe is a clean exit).
    Output(io::Error),
    /// Anything else, already worded (and naming its path).
    Other(String),
}

impl CliError {
    pub(crate) fn log(path: &Path) -> impl FnOnce(Error) -> CliError + '_ {
        move |source| CliError::Log {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<io::Error> for CliError {
    /// Only for writes to stdout; other I/O errors are worded where they happen.
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Log { path, source } => f.write_str(&describe(path, source)),
            CliError::Output(e) => write!(f, "stdout: {e}"),
            CliError::Other(s) => f.write_str(s),
        }
    }
}

/// One line naming the path and the cause of `e`.
pub(crate) fn describe(path: &Path, e: &Error) -> String {
    let p = path.display();
    match e {
        Error::Io { op, source, .. } => match source.kind() {
            io::ErrorKind::NotFound if *op == "create" => {
                format!("{p}: not found: the directory does not exist")
            }
            io::ErrorKind::NotFound => format!("{p}: not found"),
            io::ErrorKind::PermissionDenied => {
                format!("{p}: permission denied ({op}: {})", os_text(source))
            }
            _ => format!("{p}: {op} failed: {}", os_text(source)),
        },
        Error::IsDirectory { .. } => format!("{p}: is a directory, not a daxlog file"),
        Error::AlreadyExists { .. } => {
            format!("{p}: already exists (use --force to replace it with a new, empty log)")
        }
        Error::EmptyFile { .. } => format!("{p}: not a daxlog file (the file is empty)"),
        Error::TooSmall { len, min, .. } => {
            format!("{p}: not a daxlog file (the file is {len} bytes, a log has at least {min})")
        }
        Error::NotDaxlog { offset, .. } => {
            format!("{p}: not a daxlog file (no daxlog magic number at offset {offset})")
        }
        Error::Locked { by, .. } => format!("{p}: locked by {by}"),
        Error::Full {
            needed, available, ..
        } => {
            format!("{p}: log full: the append needs {needed} bytes, {available} are free")
        }
        Error::Corrupted {
            offset,
            lsn,
            reason,
            entries_beyond,
            ..
        } => format!(
            "{p}: corrupted at LSN {lsn}, offset {offset}: {reason}; {entries_beyond} valid \
             entries lie beyond it (`daxlog check --salvage OUT` copies every readable entry)"
        ),
        other => {
            let text = other.to_string();
            if text.contains(&p.to_string()) {
                text
            } else {
                format!("{p}: {text}")
            }
        }
    }
}

/// The operating system's text for an I/O error, without Rust's "(os error N)" suffix.
fn os_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_names_lsn_and_offset() {
        let e = CliError::Log {
            path: "/x/log.dax".into(),
            source: Error::Corrupted {
                path: "/x/log.dax".into(),
                offset: 8192,
                lsn: 17,
                reason: "checksum mismatch".into(),
                entries_beyond: 3,
            },
        };
        assert_eq!(
            e.to_string(),
            "/x/log.dax: corrupted at LSN 17, offset 8192: checksum mismatch; 3 valid entries \
             lie beyond it (`daxlog check --salvage OUT` copies every readable entry)"
        );
    }

    #[test]
    fn io_errors_are_worded() {
        let nf = Error::Io {
            path: "/x/l".into(),
            op: "open",
            source: io::Error::from_raw_os_error(2),
        };
        assert_eq!(describe(Path::new("/x/l"), &nf), "/x/l: not found");
        let acc = Error::Io {
            path: "/x/l".into(),
            op: "open",
            source: io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            describe(Path::new("/x/l"), &acc),
            "/x/l: permission denied (open: Permission denied)"
        );
        let full = Error::Full {
            path: "/x/l".into(),
            needed: 10,
            available: 2,
        };
        assert_eq!(
            describe(Path::new("/x/l"), &full),
            "/x/l: log full: the append needs 10 bytes, 2 are free"
        );
        // Library texts that already name the path are not prefixed twice.
        let v = Error::UnsupportedVersion {
            path: "/x/l".into(),
            found: 9,
            supported: 1,
        };
        assert_eq!(
            describe(Path::new("/x/l"), &v),
            "/x/l: unsupported format version 9 (this build reads version 1)"
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
