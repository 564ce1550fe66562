//! The `daxlog` command-line tool: create, append to, read, inspect, check and benchmark logs.
//!
//! `src/main.rs` only calls [`main`]. The commands are documented in `docs/CLI.md`.
//!
//! # Exit codes
//!
//! As `fsck` does, the code says what was found:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: the command did all it was asked; `check` found the log clean |
//! | 1 | damage found: by `check` (a torn tail too, with `--strict`); by `dump`, `cat` and `info`, after they printed what they could; by any command that could not open a log because it is damaged |
//! | 2 | usage error: an unknown command or option, a missing or malformed value, or values that cannot work together (`bench --seconds` too short for its `--reps`, `--size` or `--recovery-bytes` larger than its `--capacity` holds, a `dump` or `cat` `--from` above its `--to`), worded as the argument parser words its errors; a malformed `DAXLOG_*` environment variable (one `error:` line naming it) |
//! | 3 | `check --salvage`: the readable entries were copied, but LSNs were lost in damaged regions |
//! | 4 | operational error: I/O, not found, permission, locked by a writer, log full, not a daxlog file, an input record `append` cannot take, stdout closed during `append`, ... |
//!
//! An error is one line on stderr, `error: PATH: cause`. A reader that closes stdout early
//! (`daxlog dump log | head`) ends the read-only commands quietly with 0; `append` stops with 4
//! and says how many records it appended, since the rest of its input was not.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};

use crate::{Error, LockHolder, Log, Options};

mod append;
mod bench;
mod check;
mod commands;
mod follow;
mod info;
mod records;
mod size;

pub use size::parse_size;

/// Success; a clean log.
pub(crate) const EXIT_OK: u8 = 0;
/// Damage found.
pub(crate) const EXIT_DAMAGE: u8 = 1;
/// A usage error: from the argument parser, or values that cannot work together.
pub(crate) const EXIT_USAGE: u8 = 2;
/// `check --salvage` lost LSNs.
pub(crate) const EXIT_LOSS: u8 = 3;
/// An operational error.
pub(crate) const EXIT_FAILURE: u8 = 4;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (check: the log is clean)
  1  damage found (check; check --strict on a torn tail; dump, cat, info of a damaged log
     after printing what they can; any command refused a damaged log)
  2  usage error (an option, or a DAXLOG_* environment variable)
  3  check --salvage copied the log but LSNs were lost in damaged regions
  4  operational error (I/O, not found, permission, locked, log full, not a daxlog file,
     an input record append cannot take, stdout closed during append)
Errors are one line on stderr: `error: PATH: cause`. Library messages (warnings by default)
go to stderr too: -v shows more, RUST_LOG=FILTER replaces the level.";

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
    init_tracing(cli.verbose);
    let _ = LOCK_WAIT.set(Duration::from_secs_f64(cli.lock_wait));
    ExitCode::from(match run(cli) {
        Ok(code) => code,
        // The reader went away (`daxlog dump log | head`): not an error.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(CliError::Usage { command, message }) => usage_error(command, &message),
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            let _ = writeln!(io::stderr().lock(), "error: {line}");
            e.exit_code()
        }
    })
}

/// Prints a usage error found after parsing as the argument parser prints its own (with the
/// usage of `command`); returns its exit code.
fn usage_error(command: &str, message: &str) -> u8 {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    // Gives the subcommands their full names (`daxlog bench`) for the usage line.
    cli.build();
    let e = match cli.find_subcommand_mut(command) {
        Some(sub) => sub.error(clap::error::ErrorKind::ValueValidation, message),
        None => cli.error(clap::error::ErrorKind::ValueValidation, message),
    };
    let _ = e.print();
    EXIT_USAGE
}

/// `--lock-wait`, set once at start.
static LOCK_WAIT: OnceLock<Duration> = OnceLock::new();

/// Library options for a command's opens: the defaults, waiting `--lock-wait` for a lock.
fn options() -> Options {
    Options::new().lock_wait(lock_wait())
}

/// [`options`], with the `DAXLOG_*` environment applied (`Options::from_env`).
fn env_options() -> Options {
    Options::from_env().lock_wait(lock_wait())
}

fn lock_wait() -> Duration {
    LOCK_WAIT.get().copied().unwrap_or_default()
}

/// Runs a read command's `open` again while a replacement of the file (`create --force` in
/// another process) holds it, for up to `--lock-wait`: reads never wait for a writer (they
/// read beside it) or for readers, but a replacement ends, in a new log to read.
fn unless_replaced<T>(open: impl FnMut() -> crate::Result<T>) -> crate::Result<T> {
    crate::log::wait_while_locked(lock_wait(), |by| by == LockHolder::Replacement, open)
}

/// A parser of counts from `lo` to `hi` whose message for any whole number outside them, however
/// large, names the range (clap's own says "number too large to fit in target type" past the
/// type's maximum).
pub(crate) fn count_in<T>(
    lo: u64,
    hi: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64>,
{
    move |text: &str| {
        let digits = text.trim();
        let whole = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if digits.strip_prefix('-').is_some_and(whole) {
            return Err(format!("{digits} is not in {lo}..={hi}"));
        }
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        if !whole(digits) {
            return Err(format!("'{text}' is not a whole number"));
        }
        // The number as written, without its leading zeros (0 stays).
        let shown = digits.trim_start_matches('0');
        let shown = if shown.is_empty() { "0" } else { shown };
        let outside = || format!("{shown} is not in {lo}..={hi}");
        match digits.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => T::try_from(n).map_err(|_| outside()),
            _ => Err(outside()),
        }
    }
}

fn parse_lock_wait(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "'{text}' is not a number of seconds from 0 to 86400"
        )),
    }
}

fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Create(a) => commands::create(a),
        Command::Append(a) => append::append(a),
        Command::Dump(a) => commands::dump(a),
        Command::Cat(a) => commands::cat(a),
        Command::Follow(a) => follow::follow(a),
        Command::Info(a) => info::info(a),
        Command::Check(a) => check::check(a),
        Command::Truncate(a) => commands::truncate(a),
        Command::Reset(a) => commands::reset(a),
        Command::Bench(a) => bench::bench(a),
    }
}

/// An append-only, crash-safe log on persistent memory (DAX), with an msync fallback.
#[derive(Parser, Debug)]
#[command(name = "daxlog", version, about, max_term_width = 100, after_help = EXIT_CODES)]
struct Cli {
    /// More library messages on stderr: -v info, -vv debug, -vvv trace (default: warnings).
    #[arg(short, long, action = ArgAction::Count, global = true, display_order = 1000)]
    verbose: u8,
    /// How long to wait for a log that another process (or a closing writer) holds locked,
    /// before failing with "locked by ...": seconds from 0 (fail at once) to 86400.
    #[arg(long, value_name = "S", default_value_t = 0.0, value_parser = parse_lock_wait,
          global = true, display_order = 1001, allow_hyphen_values = true)]
    lock_wait: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new, empty log file of a fixed capacity.
    Create(commands::CreateArgs),
    /// Append entries: one per input record (a line of stdin by default, or --data); prints
    /// each durable entry's LSN.
    Append(append::AppendArgs),
    /// Print entries as `LSN<TAB>payload in lowercase hex` (or JSON), one per line.
    Dump(commands::DumpArgs),
    /// Print payloads as text (invalid UTF-8 replaced), one per line (or NUL-terminated).
    Cat(commands::CatArgs),
    /// Print entries as a writer (in any process) appends them, like `tail -f`.
    Follow(follow::FollowArgs),
    /// Show the metadata (both superblocks, both slots), size, LSN range, persistence mode and
    /// what recovery found; works on a damaged log.
    Info(info::InfoArgs),
    /// Verify every entry; exit 1 with the LSN and offset of any damage; --salvage rescues.
    Check(check::CheckArgs),
    /// Durably drop the entries before an LSN (after a checkpoint) or after one (a suffix).
    Truncate(commands::TruncateArgs),
    /// Durably drop every entry (LSNs continue where they were).
    Reset(commands::ResetArgs),
    /// Measure append and recovery speed (default: a log in /dev/shm, 4 sizes, all modes).
    ///
    /// The checksum kernels are the fastest of this CPU's, timed once (printed after the
    /// table), or those DAXLOG_KERNEL names (portable, clmul128, clmul256, clmul512).
    Bench(bench::BenchArgs),
}

/// Library messages on stderr, one line each: `warning: daxlog: ... key=value ...`.
///
/// The filter is `RUST_LOG` if set, else the `-v` level (warnings by default). The library's
/// own warning about CPU flushes forced without `MAP_SYNC` is left out: the commands print
/// theirs ([`warn_if_not_durable`]), which says what it means for their output.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::builder().parse_lossy(v),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }),
    };
    let not_map_warning = filter_fn(|meta| {
        !(meta.target() == "daxlog::map" && *meta.level() == tracing::Level::WARN)
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .event_format(PlainFormat)
        .with_filter(filter)
        .with_filter(not_map_warning);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// `LEVEL: message key=value ...`, with the level as a word (`warning`, `info`, ...).
struct PlainFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(w, "{level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// One `warning:` line if acknowledgements from `log` do not survive a power failure (CPU
/// flushes forced without `MAP_SYNC`); `what` says which of the command's results that concerns.
pub(crate) fn warn_if_not_durable(log: &Log, what: &str) {
    if !log.is_durable() {
        let _ = writeln!(
            io::stderr().lock(),
            "warning: {}: CPU cache flushes ({}) are forced without MAP_SYNC: {what} not durable \
             against power failure, only against a crash of this process",
            log.path().display(),
            log.persistence().name()
        );
    }
}

/// What a log whose last entry ends at the end of the file ([`crate::TailState::EndOfFile`])
/// holds next, given its [`crate::Log::room`]: the next append goes to the start of the data
/// area, before the first entry, in `room.after_wrap` bytes; the log is full if that is too
/// few for the smallest entry.
pub(crate) fn end_of_file_text(room: crate::Room) -> String {
    let room = room.after_wrap;
    if room < crate::format::HEADER_LEN as u64 {
        "the entries reach the end of the file and the log is full".to_string()
    } else {
        format!(
            "the entries reach the end of the file; the next append goes to offset {} \
             ({} free there in one piece)",
            crate::format::DATA_OFFSET,
            count(room, "byte", "bytes")
        )
    }
}

/// The bytes of the file at `path` past a log's `capacity` (a file grown after its creation,
/// by `truncate -s` say: the log never uses them), if any.
pub(crate) fn past_capacity(path: &std::path::Path, capacity: u64) -> Option<u64> {
    let len = std::fs::metadata(path).ok()?.len();
    (len > capacity).then(|| len - capacity)
}

/// What [`past_capacity`] found, for `check` and `info`.
pub(crate) fn past_capacity_text(extra: u64) -> String {
    format!(
        "the file has {} past the log's capacity, unused (a log's capacity is set when it is \
         created)",
        count(extra, "byte", "bytes")
    )
}

/// What a torn tail discarded besides its own bytes: the valid entries after it that could
/// be the rest of its batch ([`crate::RecoveryReport::torn_entries`]), or nothing.
pub(crate) fn torn_rest(entries: u64) -> String {
    match entries {
        0 => String::new(),
        n => format!(
            ", and {} after it that could be the rest of its batch",
            count(n, "valid entry", "valid entries")
        ),
    }
}

/// Prints `text` (lines, each ending in a newline) to stdout after an operation on `path`
/// that is done (`done`: "the truncation was done"): a failure to print is reported as such,
/// not as a failure of the operation.
pub(crate) fn print_done(path: &Path, done: &str, text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A reader that went away did not want the report: the change is done, quietly (as
        // read-only commands end).
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| {
            CliError::Failed(format!(
                "{}: {done}, but its report could not be printed (stdout: {})",
                path.display(),
                os_text(&e)
            ))
        }),
    }
}

/// `1 entry`, `2 entries`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Everything a command can fail with.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The library failed on the log at `path`.
    Log { path: PathBuf, source: Error },
    /// Writing to stdout failed (a broken pipe ends read-only commands quietly).
    Output(io::Error),
    /// An operational error, already worded (and naming its path): exit 4.
    Failed(String),
    /// Damage, already worded (and naming its path): exit 1.
    Damaged(String),
    /// Values of `command` that the parser accepted one by one but that cannot work together
    /// (naming the option and what would work): a usage error, exit 2.
    Usage {
        command: &'static str,
        message: String,
    },
}

impl CliError {
    pub(crate) fn log(path: &Path) -> impl FnOnce(Error) -> CliError + '_ {
        move |source| CliError::Log {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The process's exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Log { source, .. } if is_damage(source) => EXIT_DAMAGE,
            CliError::Damaged(_) => EXIT_DAMAGE,
            CliError::Usage { .. } => EXIT_USAGE,
            // A malformed setting, as a malformed option is.
            CliError::Log {
                source: Error::InvalidEnvironment { .. },
                ..
            } => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// True if `e` says the log's bytes are damaged (exit 1) rather than that an operation failed.
pub(crate) fn is_damage(e: &Error) -> bool {
    e.is_corruption() || matches!(e, Error::FileShorterThanCapacity { .. })
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
            CliError::Output(e) => write!(f, "stdout: {}", os_text(e)),
            CliError::Failed(s) | CliError::Damaged(s) => f.write_str(s),
            CliError::Usage { message, .. } => f.write_str(message),
        }
    }
}

/// True if `e` says that a writer has the log open, so that no snapshot can be taken: read it
/// live with a `Reader` instead.
pub(crate) fn writer_has_it(e: &Error) -> bool {
    matches!(
        e,
        Error::Locked {
            by: crate::LockHolder::Writer,
            ..
        }
    )
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
        Error::NotAFile { kind, .. } => format!("{p}: is a {kind}, not a daxlog file"),
        Error::AlreadyExists { .. } => {
            format!("{p}: already exists (use --force to replace it with a new, empty log)")
        }
        Error::EmptyFile { .. } => format!("{p}: not a daxlog file (the file is empty)"),
        Error::TooSmall { len, min, .. } => format!(
            "{p}: not a daxlog file (the file is {}, smaller than the {min}-byte metadata page; \
             a log is at least {} bytes)",
            count(*len, "byte", "bytes"),
            crate::format::MIN_CAPACITY
        ),
        Error::NotDaxlog { offset, .. } => {
            format!("{p}: not a daxlog file (no daxlog magic number at offset {offset})")
        }
        Error::Locked { by, .. } => format!("{p}: locked by {by}"),
        // About the environment, not the file.
        Error::InvalidEnvironment { .. } => e.to_string(),
        Error::Full {
            needed, available, ..
        } => format!(
            "{p}: log full: the append needs {needed} bytes, {available} are free in one piece"
        ),
        Error::Corrupted {
            offset,
            lsn,
            reason,
            ..
        } if reason.starts_with(crate::reader::LIVE_DAMAGE) => {
            format!(
                "{p}: corrupted at LSN {lsn}, offset {offset}: {reason}; once no process has \
                 the log open for writing, `daxlog check {p}` searches beyond it and \
                 `daxlog check {p} --salvage OUT` copies every readable entry, LSNs kept"
            )
        }
        Error::Corrupted {
            offset,
            lsn,
            reason,
            entries_beyond,
            ..
        } => format!(
            "{p}: corrupted at LSN {lsn}, offset {offset}: {reason}; {} beyond it \
             (`daxlog check {p} --salvage OUT` copies every readable entry, LSNs kept)",
            match entries_beyond {
                0 => "no valid entry found".to_string(),
                1 => "1 valid entry lies".to_string(),
                n => format!("{n} valid entries lie"),
            }
        ),
        Error::CorruptedSuperblock { .. } | Error::FileShorterThanCapacity { .. } => format!(
            "{} (`daxlog info {p}` shows the metadata page)",
            library_text(path, e)
        ),
        other => library_text(path, other),
    }
}

/// The library's text for `e`, prefixed by the path unless it names it already.
pub(crate) fn library_text(path: &Path, e: &Error) -> String {
    let p = path.display().to_string();
    let text = e.to_string();
    if text.contains(&p) {
        text
    } else {
        format!("{p}: {text}")
    }
}

/// The operating system's text for an I/O error, without Rust's "(os error N)" suffix.
pub(crate) fn os_text(e: &io::Error) -> String {
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
             lie beyond it (`daxlog check /x/log.dax --salvage OUT` copies every readable \
             entry, LSNs kept)"
        );
        assert_eq!(e.exit_code(), EXIT_DAMAGE);
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
            pinned: None,
        };
        assert_eq!(
            describe(Path::new("/x/l"), &full),
            "/x/l: log full: the append needs 10 bytes, 2 are free in one piece"
        );
        // Library texts that already name the path are not prefixed twice.
        let v = Error::UnsupportedVersion {
            path: "/x/l".into(),
            found: 9,
            supported: 2,
        };
        assert_eq!(
            describe(Path::new("/x/l"), &v),
            "/x/l: unsupported format version 9 (this build reads versions 1 to 2)"
        );
        let small = Error::TooSmall {
            path: "/x/l".into(),
            len: 1,
            min: 4096,
        };
        assert_eq!(
            describe(Path::new("/x/l"), &small),
            "/x/l: not a daxlog file (the file is 1 byte, smaller than the 4096-byte metadata \
             page; a log is at least 8192 bytes)"
        );
        for e in [nf, acc, full, v, small] {
            assert_eq!(
                CliError::Log {
                    path: "/x/l".into(),
                    source: e
                }
                .exit_code(),
                EXIT_FAILURE
            );
        }
    }

    #[test]
    fn counts_are_singular_or_plural() {
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(0, "entry", "entries"), "0 entries");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
