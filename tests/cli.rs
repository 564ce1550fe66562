//! Tests of the `daxlog` command-line tool: every subcommand and every error, through the real
//! binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use daxlog::{Log, Options};
use serde_json::{json, Value};

mod common;

/// The binary under test: the one cargo built, or `DAXLOG_CLI_TEST_BIN` (to run these tests
/// against an installed or an older build).
fn bin() -> String {
    std::env::var("DAXLOG_CLI_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_daxlog").into())
}

/// A fresh directory in /dev/shm (or the temporary directory).
fn tempdir() -> tempfile::TempDir {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("daxlog-cli")
        .tempdir_in(base)
        .unwrap()
}

/// Options for a writer this test process opens: a child that another test thread is
/// forking may hold a copy of an earlier writer's descriptor (and so its lock) until it
/// execs, so the open waits a moment for the lock instead of failing.
fn writer_opts() -> Options {
    Options::new().lock_wait(Duration::from_secs(30))
}

/// Runs the tool. (A log this test process had open may stay locked for a moment after it
/// is dropped: a child that another test thread is spawning holds a copy of its descriptor
/// until it runs `exec`, and the lock lives as long as any copy. Commands that need the log
/// to themselves right after such a drop are given `--lock-wait`.)
fn daxlog(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn daxlog_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Runs `c` with `input` on its stdin, written before its output is read (what it prints
/// before it has read all of `input` must fit in its pipes).
fn output_with_stdin(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `c`, retrying while its executable is busy: a copy of the binary that this process
/// just wrote may still be open for writing in a child that another test thread is forking.
fn output_retrying(c: &mut Command) -> Output {
    let t = Instant::now();
    loop {
        match c.output() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && t.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r.unwrap(),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = daxlog(args);
    assert!(
        out.status.success(),
        "daxlog {args:?} failed: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Expects exit code `code` and exactly one stderr line `error: ...` naming `path` and `cause`.
fn assert_error(code: i32, out: &Output, path: &Path, cause: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    assert!(
        err.contains(&path.display().to_string()),
        "no path in {err:?}"
    );
    assert!(err.contains(cause), "{cause:?} not in {err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn info_json(path: &Path) -> Value {
    let out = ok(&["info", p(path), "--json"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn create_info_and_force() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    let out = ok(&["create", p(&path), "--capacity", "512KiB"]);
    assert!(out.contains("capacity 524288 bytes"), "{out}");
    let v = info_json(&path);
    assert_eq!(v["capacity"], 512 * 1024);
    assert_eq!(v["format_version"], daxlog::format::FORMAT_VERSION);
    assert_eq!(v["entries"], 0);
    assert_eq!(v["used_bytes"], 0);
    assert_eq!(v["free_bytes"], 512 * 1024 - 4096);
    assert_eq!(v["first_lsn"], Value::Null);
    assert_eq!(v["last_lsn"], Value::Null);
    assert_eq!(v["tail_state"], "clean");
    assert_eq!(v["torn_bytes"], 0);
    assert!(v["map_sync"].is_boolean());
    let mode = v["persistence"].as_str().unwrap();
    assert!(
        ["msync", "clwb", "clflushopt", "clflush"].contains(&mode),
        "{mode}"
    );
    let uuid = v["uuid"].as_str().unwrap().to_string();
    assert_eq!(uuid.len(), 36);

    // Sizes: MiB, GiB-style units and plain bytes.
    for (arg, bytes) in [("1MiB", 1u64 << 20), ("8192", 8192), ("2M", 2 << 20)] {
        let q = dir.path().join(format!("s{bytes}.dax"));
        ok(&["create", p(&q), "--capacity", arg]);
        assert_eq!(std::fs::metadata(&q).unwrap().len(), bytes);
        assert_eq!(info_json(&q)["capacity"], bytes);
    }

    // An existing file is refused unless --force, which makes a new, empty log.
    ok(&["append", p(&path), "--data", "x"]);
    let out = daxlog(&["create", p(&path), "--capacity", "1MiB"]);
    assert_error(4, &out, &path, "already exists");
    assert_eq!(info_json(&path)["entries"], 1);
    ok(&["create", p(&path), "--capacity", "1MiB", "--force"]);
    let v = info_json(&path);
    assert_eq!(v["entries"], 0);
    assert_eq!(v["capacity"], 1 << 20);
    assert_ne!(v["uuid"], uuid.as_str());

    // The text form names every field.
    let out = ok(&["info", p(&path)]);
    for key in [
        "format version:",
        "uuid:",
        "capacity:",
        "used:",
        "free:",
        "entries:",
        "first LSN:",
        "last LSN:",
        "persistence:",
        "MAP_SYNC:",
        "tail:",
        "torn bytes:",
    ] {
        assert!(out.contains(key), "{key} missing in {out}");
    }
}

#[test]
fn append_dump_cat() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    ok(&["create", p(&path), "--capacity", "1MiB"]);
    // Lines become entries, newline stripped; an empty line is an empty entry; a last line
    // without a newline is an entry too.
    let out = daxlog_stdin(
        &["append", p(&path)],
        b"hello\nw\xc3\xb6rld\n\n\ttabs \r\nlast",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1\n2\n3\n4\n5\n");
    assert_eq!(ok(&["append", p(&path), "--data", "one more"]), "6\n");
    let out = daxlog_stdin(&["append", p(&path), "--batch", "3"], b"b1\nb2\nb3\nb4\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "7\n8\n9\n10\n");
    let out = daxlog_stdin(&["append", p(&path)], b"");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "");

    let want: Vec<&[u8]> = vec![
        b"hello",
        "wörld".as_bytes(),
        b"",
        b"\ttabs \r",
        b"last",
        b"one more",
        b"b1",
        b"b2",
        b"b3",
        b"b4",
    ];
    let dump = ok(&["dump", p(&path)]);
    let expect: String = want
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{}\t{}\n", i + 1, hex(w)))
        .collect();
    assert_eq!(dump, expect);
    assert_eq!(
        ok(&["dump", p(&path), "--from", "2", "--to", "3"]),
        format!("2\t{}\n3\t\n", hex("wörld".as_bytes()))
    );
    assert_eq!(ok(&["dump", p(&path), "--from", "10"]), "10\t6234\n");
    assert_eq!(ok(&["dump", p(&path), "--from", "11"]), "");
    assert_eq!(
        ok(&["dump", p(&path), "--from", "5", "--to", "5"]),
        "5\t6c617374\n"
    );

    let cat = ok(&["cat", p(&path), "--to", "6"]);
    assert_eq!(cat, "hello\nwörld\n\n\ttabs \r\nlast\none more\n");
    let cat = ok(&["cat", p(&path), "--lsn", "--from", "9"]);
    assert_eq!(cat, "9\tb3\n10\tb4\n");
    // Invalid UTF-8 is shown with replacement characters, dumped exactly.
    assert_eq!(
        daxlog_stdin(&["append", p(&path)], b"\xff\xfeok\n")
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        ok(&["cat", p(&path), "--from", "11"]),
        "\u{fffd}\u{fffd}ok\n"
    );
    assert_eq!(ok(&["dump", p(&path), "--from", "11"]), "11\tfffe6f6b\n");

    // The library sees the same entries.
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    assert_eq!(log.len(), 11);
    assert_eq!(log.read(4).unwrap().payload, b"\ttabs \r");
}

/// A producer that writes one line and waits for its LSN is answered at once, even with a
/// large --batch.
#[test]
fn batch_does_not_wait_for_more_lines() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    ok(&["create", p(&path), "--capacity", "1MiB"]);
    let mut child = Command::new(bin())
        .args(["append", p(&path), "--batch", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            tx.send(line.unwrap()).unwrap();
        }
    });
    for i in 1..=5 {
        writeln!(stdin, "interactive {i}").unwrap();
        stdin.flush().unwrap();
        let ack = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no acknowledgement while stdin stays open");
        assert_eq!(ack, i.to_string());
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    assert_eq!(ok(&["cat", p(&path), "--from", "5"]), "interactive 5\n");
}

#[test]
fn check_reports_a_torn_tail_without_failing() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    let out = ok(&["check", p(&path)]);
    assert!(out.contains("ok: 0 entries"), "{out}");
    let out = daxlog_stdin(&["append", p(&path)], b"aaaa\nbbbb\ncccc\n");
    assert_eq!(text(&out.stdout), "1\n2\n3\n");
    let out = ok(&["check", p(&path)]);
    assert!(out.contains("ok: 3 entries (LSN 1..=3)"), "{out}");
    assert!(out.contains("tail clean"), "{out}");

    // Damage the payload of entry 3 (entries of 4 bytes take 32 bytes from offset 4096):
    // recovery discards it as an interrupted append.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", 4096 + 2 * 32 + 24).unwrap();
    drop(f);
    // As published, LSN 3 is missing, not torn (an interrupted append is never published).
    let out = daxlog(&["check", p(&path)]);
    assert_error(
        1,
        &out,
        &path,
        "LSN 3 published (acknowledged) by the last writer but missing",
    );
    unpublish(&path, 3);
    let out = ok(&["check", p(&path)]);
    assert!(out.contains("ok: 2 entries (LSN 1..=2)"), "{out}");
    assert!(out.contains("torn tail: 32 bytes"), "{out}");
    assert!(out.contains("at offset 4160"), "{out}");
    assert!(out.contains("checksum mismatch"), "{out}");
    let v = info_json(&path);
    assert_eq!(v["tail_state"], "torn");
    assert_eq!(v["torn_bytes"], 32);
    assert_eq!(v["torn_reason"], "checksum mismatch");
    assert_eq!(v["entries"], 2);
    assert_eq!(v["last_lsn"], 2);
}

#[test]
fn errors_name_the_path_and_the_cause() {
    let dir = tempdir();
    let missing = dir.path().join("missing.dax");
    for cmd in ["dump", "cat", "info", "check"] {
        assert_error(4, &daxlog(&[cmd, p(&missing)]), &missing, "not found");
    }
    assert_error(
        4,
        &daxlog(&["append", p(&missing), "--data", "x"]),
        &missing,
        "not found",
    );
    let nodir = dir.path().join("no/such/dir.dax");
    assert_error(4, &daxlog(&["create", p(&nodir)]), &nodir, "not found");

    // Not daxlog files: random bytes, an empty file, a short file, a directory.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, b"hello").unwrap();
    for f in [&junk, &empty, &short] {
        for cmd in ["dump", "info", "check"] {
            assert_error(4, &daxlog(&[cmd, p(f)]), f, "not a daxlog file");
        }
        assert_error(
            4,
            &daxlog(&["append", p(f), "--data", "x"]),
            f,
            "not a daxlog file",
        );
    }
    assert_error(
        4,
        &daxlog(&["dump", p(dir.path())]),
        dir.path(),
        "is a directory",
    );
    // A FIFO: refused at once (opening it would wait for a writer), by every command.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for cmd in ["dump", "cat", "info", "check", "follow", "truncate"] {
        let mut args = vec![cmd, p(&fifo)];
        if cmd == "truncate" {
            args.extend(["--before", "1"]);
        }
        assert_error(4, &daxlog(&args), &fifo, "is a FIFO, not a daxlog file");
    }
    assert_error(
        4,
        &daxlog(&["append", p(&fifo), "--data", "x"]),
        &fifo,
        "is a FIFO, not a daxlog file",
    );
    // `create` never replaces one (nor a socket, nor a device node: a log left in a device's
    // place would live on the file system that holds it, the device unused), `--force` or not.
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for (f, kind) in [(&fifo, "FIFO"), (&socket, "socket")] {
        for force in [false, true] {
            let mut args = vec!["create", p(f), "--capacity", "8k"];
            if force {
                args.push("--force");
            }
            let out = daxlog(&args);
            assert_error(4, &out, f, &format!("is a {kind}, not a daxlog file"));
            assert!(
                !text(&out.stderr).contains("--force"),
                "{}",
                text(&out.stderr)
            );
        }
        let t = std::fs::symlink_metadata(f).unwrap().file_type();
        use std::os::unix::fs::FileTypeExt;
        assert!(t.is_fifo() || t.is_socket(), "{kind} replaced");
    }
    // Refused files are left alone.
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x42u8; 8192]);

    // Full: 4096 bytes of room hold four entries of 1000 bytes (1024 on media each).
    let path = dir.path().join("small.dax");
    ok(&["create", p(&path), "--capacity", "8192"]);
    let line = format!("{}\n", "x".repeat(1000));
    let out = daxlog_stdin(&["append", p(&path)], line.repeat(5).as_bytes());
    assert_eq!(text(&out.stdout), "1\n2\n3\n4\n");
    assert_error(4, &out, &path, "log full");
    assert_error(
        4,
        &daxlog(&["append", p(&path), "--data", "y"]),
        &path,
        "log full",
    );
    assert_eq!(info_json(&path)["entries"], 4);
    let big = dir.path().join("big.dax");
    ok(&["create", p(&big), "--capacity", "8192"]);
    let huge = "z".repeat(5000);
    assert_error(
        4,
        &daxlog(&["append", p(&big), "--data", &huge]),
        &big,
        "exceeds the largest payload",
    );
}

#[test]
fn a_second_writer_is_refused_but_readers_are_not() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    ok(&["create", p(&path), "--capacity", "1MiB"]);
    ok(&["append", p(&path), "--data", "first"]);
    let log = Log::open(&path, &writer_opts()).unwrap();
    let out = daxlog(&["append", p(&path), "--data", "second"]);
    assert_error(4, &out, &path, "locked by a writer");
    let out = daxlog(&["create", p(&path), "--force"]);
    assert_error(4, &out, &path, "locked by a writer");
    // Read-only commands read a live log through a `Reader` (no snapshot can be taken while
    // a writer has it open), and what the writer appends meanwhile shows up.
    assert_eq!(ok(&["cat", p(&path)]), "first\n");
    log.append(b"live").unwrap();
    assert_eq!(ok(&["cat", p(&path), "--lsn"]), "1\tfirst\n2\tlive\n");
    assert_eq!(ok(&["dump", p(&path), "--from", "2"]), "2\t6c697665\n");
    let check = ok(&["check", p(&path)]);
    assert!(
        check.contains("ok: 2 entries (LSN 1..=2) read back live while a writer has the log open"),
        "{check}"
    );
    let info: Value = serde_json::from_str(&ok(&["info", p(&path), "--json"])).unwrap();
    assert_eq!(info["writer"], true);
    assert_eq!(info["entries"], 2);
    assert_eq!(info["published_lsn"], 3);
    assert_eq!(info["next_lsn"], 3);
    // A snapshot of a live log is refused by the library, not by the tool: the tool reads
    // live. Once the writer is gone, the same commands take a snapshot.
    log.truncate_after(1).unwrap();
    // A writer given --lock-wait waits for the holder to close the log, then appends. (The
    // holder closes once the writer has said, on stderr, that it found the log locked.)
    let waiting = Waiting::start(&["append", p(&path), "--data", "second", "--lock-wait", "60"]);
    let found_locked = waiting.said_it_waits();
    drop(log);
    let (status, stdout, stderr) = waiting.finish();
    assert!(
        found_locked,
        "the waiting append never said it waited: {stderr}"
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "2\n");
    assert_eq!(ok(&["cat", p(&path)]), "first\nsecond\n");
    // A child that another test thread is forking right now may still hold a copy of the
    // closed descriptor (and so the lock) until it execs: retry for a moment.
    let t = Instant::now();
    let info = loop {
        let info: Value = serde_json::from_str(&ok(&["info", p(&path), "--json"])).unwrap();
        if info["writer"] == false || t.elapsed() > Duration::from_secs(30) {
            break info;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(info["writer"], false);
    let out = daxlog(&["append", p(&path), "--data", "third", "--lock-wait", "30"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3\n");
}

/// Permission checks are bypassed for root, so as root the binary is run as `nobody`
/// (uid/gid 65534) through `Command::uid`; as another user, plain file modes do.
#[test]
fn permission_denied() {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let path = dir.path().join("private.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    ok(&["append", p(&path), "--data", "secret"]);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let locked_dir = dir.path().join("ro");
    std::fs::create_dir(&locked_dir).unwrap();
    std::fs::set_permissions(&locked_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // As root, run a copy of the binary in our world-readable directory, so that `nobody`
    // can execute it wherever the build directory is.
    let copy = dir.path().join("daxlog");
    std::fs::copy(bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(if root {
            copy.clone()
        } else {
            PathBuf::from(bin())
        });
        c.args(args);
        if root {
            c.uid(65534).gid(65534);
        } else {
            // Not root: owner permissions apply to us.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
            std::fs::set_permissions(&locked_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        output_retrying(&mut c)
    };
    let out = run(&["dump", p(&path)]);
    assert_error(4, &out, &path, "permission denied");
    let out = run(&["append", p(&path), "--data", "x"]);
    assert_error(4, &out, &path, "permission denied");
    let new = locked_dir.join("new.dax");
    let out = run(&["create", p(&new), "--capacity", "64KiB"]);
    assert_error(4, &out, &new, "permission denied");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(ok(&["cat", p(&path)]), "secret\n");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    let path = p(&path);
    for args in [
        &[][..],
        &["frobnicate"],
        &["create"],
        &["create", path, "--capacity"],
        &["create", path, "--capacity", "12XB"],
        &["create", path, "--capacity", "1.5GiB"],
        &["create", path, "--capacity", "1000"],
        &["create", path, "--capacity", "8191"],
        &["create", path, "--capacity", "65TiB"],
        &["create", path, "--mode", "800"],
        &["create", path, "--mode", "1777"],
        &["create", path, "--first-lsn", "0"],
        &["create", path, "--first-lsn", "9223372036854775808"],
        &["append", path, "--format", "base64"],
        &["check", path, "--force"],
        &["check", path, "--strict", "--salvage", "out"],
        &["truncate", path],
        &["cat", path, "-z"],
        &["append", path, "--batch", "0"],
        &["append", path, "--data", "x", "--batch", "2"],
        &["dump", path, "--from", "abc"],
        &["dump", path, "--from", "5", "--to", "4"],
        &["cat", path, "--from", "2", "--to", "1"],
        &["dump", path, "--bogus"],
        &["bench", "--threads", "0"],
        &["bench", "--mode", "fast"],
        &["bench", "--seconds", "-1"],
        &["bench", "--seconds", "nan"],
        &["bench", "--seconds", "3601"],
        &["bench", "--seconds", "0"],
        &["bench", "--seconds", "0.001"],
        &["bench", "--seconds", "0.5", "--reps", "1000"],
        &["bench", "--size", "lots"],
        &["bench", "--size", "4GiB"],
        &["bench", "--capacity", "1MiB", "--size", "1MiB"],
        &["bench", "--capacity", "1MiB", "--recovery-bytes", "1MiB"],
    ] {
        let out = daxlog(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "daxlog {args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.starts_with("error:") || err.contains("Usage:"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!Path::new(path).exists());
    // Counts past what the option takes get the option's range, not a parser's overflow.
    for n in [
        "0",
        "1000001",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "000099999999999999999999999999",
    ] {
        let err = text(&daxlog(&["append", path, "--batch", n]).stderr);
        let shown = n.trim_start_matches('0');
        let shown = if shown.is_empty() { "0" } else { shown };
        assert!(
            err.contains(&format!("{shown} is not in 1..=1000000")),
            "--batch {n}: {err}"
        );
    }
    let err = text(&daxlog(&["append", path, "--batch=-5"]).stderr);
    assert!(err.contains("-5 is not in 1..=1000000"), "{err}");
    for (option, n, range) in [
        ("--threads", "4294967297", "1..=256"),
        ("--threads", "257", "1..=256"),
        ("--reps", "99999999999999999999", "1..=1000"),
    ] {
        let err = text(&daxlog(&["bench", option, n]).stderr);
        assert!(
            err.contains(&format!("{n} is not in {range}")),
            "{option} {n}: {err}"
        );
    }
    for n in ["x", "1.5", "", "1e3"] {
        let err = text(&daxlog(&["append", path, "--batch", n]).stderr);
        assert!(
            err.contains("is not a whole number"),
            "--batch {n:?}: {err}"
        );
    }
    let out = daxlog(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("bench"));
}

/// `daxlog dump log | head -1`: the closed pipe ends the dump quietly.
#[test]
fn closed_stdout_is_a_clean_exit() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    {
        let log = Log::create(&path, &Options::new().capacity(8 << 20)).unwrap();
        let payload = [7u8; 200];
        let batch: Vec<&[u8]> = vec![&payload; 1000];
        for _ in 0..10 {
            log.append_batch(&batch).unwrap();
        }
    }
    for cmd in ["dump", "cat"] {
        let mut child = Command::new(bin())
            .args([cmd, p(&path)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.starts_with(if cmd == "dump" { "1\t0707" } else { "\u{7}" }));
        drop(stdout);
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{cmd}: {status:?} {err}");
        assert_eq!(err, "", "{cmd}");
    }
}

/// The payload of the `i`-th line (0-based) the crash test sends.
fn crash_line(i: usize) -> String {
    format!("entry {i} {}", "abcdefghij".repeat(i % 23))
}

/// SIGKILL `daxlog append` while a producer streams lines into it: every LSN it printed must
/// be in the log, with the payload of the line it acknowledged, and the log must be the exact
/// prefix of the stream (nothing reordered, nothing invented).
#[test]
fn sigkill_while_streaming_loses_no_acknowledged_entry() {
    for batch in ["1", "16"] {
        let dir = tempdir();
        let path = dir.path().join("crash.dax");
        ok(&["create", p(&path), "--capacity", "64MiB"]);
        let mut child = Command::new(bin())
            .args(["append", p(&path), "--batch", batch])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut chunk = String::new();
                    for _ in 0..8 {
                        chunk.push_str(&crash_line(i));
                        chunk.push('\n');
                        i += 1;
                    }
                    if stdin.write_all(chunk.as_bytes()).is_err() {
                        break; // the child is gone
                    }
                }
                i
            })
        };
        let (tx, rx) = mpsc::channel::<u64>();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            let mut acks = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).unwrap() == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    break; // cut off by the kill: not an acknowledgement
                }
                let lsn: u64 = std::str::from_utf8(&line[..line.len() - 1])
                    .unwrap()
                    .parse()
                    .unwrap();
                acks.push(lsn);
                let _ = tx.send(lsn);
            }
            acks
        });
        // Kill it mid-stream, once it has acknowledged a good number of entries.
        let t = Instant::now();
        let mut seen = 0;
        while seen < 3000 && t.elapsed() < Duration::from_secs(60) {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        let sent = writer.join().unwrap();
        let acks = reader.join().unwrap();
        assert!(!status.success(), "the child was not killed: {status:?}");
        assert!(acks.len() >= 3000, "only {} acknowledgements", acks.len());
        // (The producer never stops by itself, so the kill always lands mid-stream; whether
        // `append` was busy or waiting for the next line at that instant depends on scheduling.)
        assert!(sent >= acks.len(), "more acknowledgements than lines sent");
        // Acknowledgements are 1, 2, 3, ... in order.
        for (i, &lsn) in acks.iter().enumerate() {
            assert_eq!(lsn, i as u64 + 1, "batch {batch}");
        }

        let dump = ok(&["dump", p(&path)]);
        let mut n = 0;
        for (i, line) in dump.lines().enumerate() {
            let (lsn, payload) = line.split_once('\t').unwrap();
            assert_eq!(lsn.parse::<u64>().unwrap(), i as u64 + 1);
            assert_eq!(payload, hex(crash_line(i).as_bytes()), "LSN {lsn}");
            n += 1;
        }
        assert!(
            n >= acks.len(),
            "acknowledged {} entries, {n} survived",
            acks.len()
        );
        assert!(n <= sent);
        assert!(ok(&["check", p(&path)]).contains(&format!("ok: {n} entries")));
        // The log stays usable after the crash.
        assert_eq!(
            ok(&["append", p(&path), "--data", "after"]),
            format!("{}\n", n + 1)
        );
    }
}

#[test]
fn bench_json_rows() {
    let dir = tempdir();
    let out = ok(&[
        "bench",
        "--dir",
        p(dir.path()),
        "--seconds",
        "0.2",
        "--reps",
        "3",
        "--size",
        "64",
        "--capacity",
        "16MiB",
        "--recovery-bytes",
        "1MiB",
        "--json",
    ]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let appends: Vec<&Value> = rows.iter().filter(|r| r["engine"] == "daxlog").collect();
    let recoveries: Vec<&Value> = rows
        .iter()
        .filter(|r| r["engine"] == "daxlog-recovery")
        .collect();
    assert_eq!(appends.len() + recoveries.len(), rows.len(), "{out}");
    assert_eq!(appends.len(), recoveries.len(), "{out}");
    let modes: Vec<&str> = appends
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert!(modes.contains(&"msync"), "{modes:?}");
    if !daxlog::supported_flush_instructions().is_empty() {
        assert_eq!(modes.len(), 2, "msync and a CPU flush mode: {modes:?}");
    }
    for r in &appends {
        assert_eq!(r["kind"], "append");
        assert_eq!(r["size"], 64);
        assert_eq!(r["threads"], 1);
        let ns = r["ns_per_append"].as_f64().unwrap();
        let rate = r["appends_per_sec"].as_f64().unwrap();
        let mb = r["mb_per_sec"].as_f64().unwrap();
        assert!(ns > 0.0 && rate > 0.0 && mb > 0.0, "{r}");
        assert!((mb - rate * 64.0 / 1e6).abs() < 0.01 + mb * 1e-6, "{r}");
        // One thread, an odd number of slices: the median time per append is the inverse of
        // the median rate.
        assert!((ns * rate / 1e9 - 1.0).abs() < 0.01, "{r}");
        assert!(r["appends"].as_u64().unwrap() > 0);
    }
    for r in &recoveries {
        assert_eq!(r["kind"], "recovery");
        assert!(r["bytes"].as_u64().unwrap() >= 1 << 20, "{r}");
        assert!(r["entries"].as_u64().unwrap() >= (1 << 20) / 88, "{r}");
        assert!(r["gb_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The benchmark cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Several threads, one mode, and the table.
    let out = ok(&[
        "bench",
        "--dir",
        p(dir.path()),
        "--seconds",
        "0.1",
        "--reps",
        "1",
        "--size",
        "256",
        "--threads",
        "2",
        "--mode",
        "msync",
        "--capacity",
        "16MiB",
        "--recovery-bytes",
        "0",
        "--json",
    ]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["threads"], 2);
    assert_eq!(rows[0]["mode"], "msync");
    assert_eq!(rows[0]["size"], 256);
    // Every append was covered by a group sync, and a sync covers at least one append.
    let per_sync = rows[0]["appends_per_sync"].as_f64().unwrap();
    assert!(per_sync >= 1.0, "{}", rows[0]);
    let out = ok(&[
        "bench",
        "--dir",
        p(dir.path()),
        "--seconds",
        "0.1",
        "--reps",
        "1",
        "--size",
        "1KiB",
        "--mode",
        "msync",
        "--capacity",
        "16MiB",
        "--recovery-bytes",
        "1MiB",
    ]);
    assert!(out.contains("appends/s"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("msync"))
        .unwrap_or_else(|| panic!("no msync row in {out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "1024", "{row}");
    assert_eq!(cols[2], "msync", "the path column: {row}");
    assert_eq!(cols.len(), 8, "{row}");
    // 1 MiB of 1048-byte entries: 1001 of them, the first to reach it.
    assert_eq!(cols[7], "1,049,048", "the recovery bytes column: {row}");
    assert!(
        out.contains("msync group commit, appends per sync: 1024 B "),
        "{out}"
    );

    let missing = dir.path().join("nope");
    assert_error(
        4,
        &daxlog(&["bench", "--dir", p(&missing)]),
        &missing,
        "not found",
    );
}

/// `daxlog bench` of 64-byte msync appends on a 1 MiB log in `dir`, one slice of 0.01 s and no
/// recovery, with the options in `set` given other values (or added: an empty value adds the
/// option alone).
fn small_bench(dir: &Path, set: &[(&str, &str)]) -> Output {
    let mut opts = vec![
        ("--seconds", "0.01"),
        ("--reps", "1"),
        ("--size", "64"),
        ("--mode", "msync"),
        ("--capacity", "1MiB"),
        ("--recovery-bytes", "0"),
    ];
    for &(flag, value) in set {
        match opts.iter_mut().find(|o| o.0 == flag) {
            Some(o) => o.1 = value,
            None => opts.push((flag, value)),
        }
    }
    let mut args = vec!["bench", "--dir", p(dir)];
    for (flag, value) in opts {
        args.push(flag);
        if !value.is_empty() {
            args.push(value);
        }
    }
    daxlog(&args)
}

/// `bench --recovery-bytes` larger than the log can hold is refused as a usage error with both
/// numbers, not measured on less than was asked; what the log holds exactly is accepted.
#[test]
fn bench_refuses_more_recovery_bytes_than_the_log_holds() {
    let dir = tempdir();
    let bench = |recovery: &str| {
        small_bench(
            dir.path(),
            &[("--recovery-bytes", recovery), ("--json", "")],
        )
    };
    let refusal = |r: u64| {
        format!(
            "error: --recovery-bytes {r}: more than a log of capacity 1048576 bytes (1 MiB) \
             holds: it has room for 1044480 bytes of entries; give at most --recovery-bytes \
             1044480, or a larger --capacity"
        )
    };
    assert_usage_error(&bench("2MiB"), &refusal(2 << 20));
    assert_usage_error(&bench("1044481"), &refusal(1044481));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let out = bench("1044480");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recovery = rows
        .iter()
        .find(|r| r["kind"] == "recovery")
        .expect("a recovery row");
    // Filled to the last whole entry that fits.
    let bytes = recovery["bytes"].as_u64().unwrap();
    assert!(bytes <= 1044480 && bytes > 1044480 - 88, "{recovery}");
}

/// The table says how many bytes each recovery measurement scanned: whole entries, so up to
/// one entry more than `--recovery-bytes`, or up to one less when the log holds no more.
#[test]
fn bench_table_shows_the_recovery_bytes_filled() {
    let dir = tempdir();
    for (recovery, speed, filled) in [
        // The log's room, 1044480 bytes, is not a whole number of 88-byte entries: 11869
        // fit (1044472 bytes), 8 bytes short of what was asked.
        ("1044480", None, "1,044,472"),
        // 12 entries (1056 bytes) are the first to reach 1000 bytes.
        ("1000", None, "1,056"),
        ("0", Some("-"), "-"),
    ] {
        let run = small_bench(dir.path(), &[("--recovery-bytes", recovery)]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let out = text(&run.stdout);
        let header = out
            .lines()
            .find(|l| l.starts_with("mode"))
            .unwrap_or_else(|| panic!("no header in {out}"));
        assert!(
            header.ends_with("recovery GB/s  recovery bytes"),
            "{header:?}"
        );
        let row = out
            .lines()
            .find(|l| l.starts_with("msync"))
            .unwrap_or_else(|| panic!("no msync row in {out}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 8, "{row}");
        if let Some(speed) = speed {
            assert_eq!(cols[6], speed, "{row}");
        }
        assert_eq!(cols[7], filled, "--recovery-bytes {recovery}: {row}");
        // Aligned under its header.
        assert_eq!(row.len(), header.len(), "{out}");
        assert!(
            out.contains("recovery bytes: entry bytes (headers included)"),
            "{out}"
        );
    }
}

/// `bench --size` larger than the log can hold, or than any entry can, is a usage error that
/// names the largest size that works; the largest is accepted. A `--capacity` that is not a
/// multiple of 4096 is rounded up with a note, as `create` does.
#[test]
fn bench_refuses_sizes_the_log_cannot_hold() {
    let dir = tempdir();
    let bench = |capacity: &str, size: &str| {
        small_bench(
            dir.path(),
            &[("--capacity", capacity), ("--size", size), ("--json", "")],
        )
    };
    assert_usage_error(
        &bench("8192", "64,4073"),
        "error: --size 4073: larger than the largest payload a log of capacity 8192 bytes \
         (8 KiB) holds; give at most --size 4072, or a larger --capacity",
    );
    // Beyond what an entry's length field holds, a larger capacity does not help; checked
    // before any log is made.
    assert_usage_error(
        &bench("8GiB", "4GiB"),
        "error: --size 4294967296: larger than the largest payload of an entry (4294967295 \
         bytes); give at most --size 4294967295",
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let out = bench("8192", "4072");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(row["size"], 4072, "{row}");
    assert!(row["appends"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(text(&out.stderr), "");
    let out = bench("8193", "64");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "note: --capacity 8193 bytes is not a multiple of 4096: rounded up to 12288 bytes\n"
    );
}

/// Expects a usage error found after parsing: exit 2, `message` as the first line of stderr,
/// then the command's usage, as the argument parser prints its own errors; nothing on stdout.
fn assert_usage_error(out: &Output, message: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().next(), Some(message), "{err}");
    assert!(err.contains("\nUsage: daxlog "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(text(&out.stdout), "");
}

/// `dump` and `cat` refuse a `--from` above `--to` as a usage error naming both, before the log
/// is opened: such a range holds no LSN, and printing nothing with exit 0 would hide the
/// mistake.
#[test]
fn dump_and_cat_refuse_from_above_to() {
    let dir = tempdir();
    let path = dir.path().join("range.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    for i in 1..=5 {
        ok(&["append", p(&path), "--data", &format!("e{i}")]);
    }
    let missing = dir.path().join("missing.dax");
    for command in ["dump", "cat"] {
        let message = "error: --from 4 is above --to 2: the range holds no LSN; give a --from \
                       at most --to";
        let out = daxlog(&[command, p(&path), "--from", "4", "--to", "2"]);
        assert_usage_error(&out, message);
        assert!(text(&out.stderr).contains(&format!("Usage: daxlog {command}")));
        // Before the log is opened: a missing file is not what is reported.
        assert_usage_error(
            &daxlog(&[command, p(&missing), "--to", "2", "--from", "4"]),
            message,
        );
        // Also while a writer has the log open (read live).
        {
            let _writer = Log::open(&path, &writer_opts()).unwrap();
            assert_usage_error(
                &daxlog(&[command, p(&path), "--from", "4", "--to", "2"]),
                message,
            );
        }
        // One LSN, and a range past the end, are ranges.
        let out = daxlog(&[command, p(&path), "--from", "3", "--to", "3"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("3"), "{}", text(&out.stdout));
        assert_eq!(ok(&[command, p(&path), "--from", "9", "--to", "12"]), "");
    }
}

/// `bench --seconds` too short for its slices to time anything is refused as a usage error,
/// 0 as any other value too short for `--reps`, with the least value that works; not answered
/// with a row of zeros.
#[test]
fn bench_refuses_slices_too_short_to_time() {
    let dir = tempdir();
    let bench = |seconds: &str, reps: &str| {
        small_bench(
            dir.path(),
            &[("--seconds", seconds), ("--reps", reps), ("--json", "")],
        )
    };
    for (seconds, shown, reps, least) in [
        ("0", "0", "5", "0.005"),
        ("1e-9", "0.000000001", "5", "0.005"),
        ("1e-300", "1e-300", "1", "0.001"),
        ("0.0049", "0.0049", "5", "0.005"),
        ("0.5", "0.5", "1000", "1"),
    ] {
        assert_usage_error(
            &bench(seconds, reps),
            &format!(
                "error: --seconds {shown}: split into --reps {reps} slices, each lasts under 1 ms, \
                 too short to time appends; give at least --seconds {least}, or fewer --reps"
            ),
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Refused before the directory is looked at, as the parser refuses values.
    let missing = dir.path().join("missing");
    let out = daxlog(&["bench", "--dir", p(&missing), "--seconds", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("give at least --seconds 0.005"));
    // Slices of exactly 1 ms are allowed, and each row has appends.
    let out = bench("0.005", "5");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert!(row["appends"].as_u64().unwrap() > 0, "{row}");
    assert!(row["ns_per_append"].as_f64().unwrap() > 0.0, "{row}");
}

#[test]
fn truncate_and_reset() {
    let dir = tempdir();
    let log = dir.path().join("t.dax");
    ok(&["create", p(&log), "--capacity", "1MiB"]);
    let lines: String = (1..=10).map(|i| format!("op {i}\n")).collect();
    let out = daxlog_stdin(&["append", p(&log)], lines.as_bytes());
    assert!(out.status.success());
    assert_eq!(
        ok(&["truncate", p(&log), "--before", "4"]),
        format!(
            "{}: dropped 3 entries (LSN 1..=3); entries 4..=10, next LSN 11\n",
            log.display()
        )
    );
    // At or below the first LSN, nothing is dropped (and that is no error).
    for lsn in ["0", "1", "4"] {
        assert_eq!(
            ok(&["truncate", p(&log), "--before", lsn]),
            format!(
                "{}: dropped 0 entries; entries 4..=10, next LSN 11\n",
                log.display()
            )
        );
    }
    assert_eq!(
        ok(&["truncate", p(&log), "--after", "10"]),
        format!(
            "{}: dropped 0 entries; entries 4..=10, next LSN 11\n",
            log.display()
        )
    );
    assert_eq!(
        ok(&["truncate", p(&log), "--after", "9"]),
        format!(
            "{}: dropped 1 entry (LSN 10); entries 4..=9, next LSN 10\n",
            log.display()
        )
    );
    assert_eq!(
        ok(&["truncate", p(&log), "--after", "7"]),
        format!(
            "{}: dropped 2 entries (LSN 8..=9); entries 4..=7, next LSN 8\n",
            log.display()
        )
    );
    let dump = ok(&["dump", p(&log)]);
    let lsns: Vec<&str> = dump
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(lsns, ["4", "5", "6", "7"]);
    assert_eq!(ok(&["cat", p(&log)]), "op 4\nop 5\nop 6\nop 7\n");
    // Above the next LSN: a clear error (exit 4), nothing changed.
    let out = daxlog(&["truncate", p(&log), "--before", "99"]);
    assert_error(
        4,
        &out,
        &log,
        "LSN 99 out of range (first LSN 4, next LSN 8)",
    );
    let out = daxlog(&["truncate", p(&log), "--after", "99"]);
    assert_error(4, &out, &log, "LSN 99 out of range");
    assert_eq!(ok(&["cat", p(&log)]), "op 4\nop 5\nop 6\nop 7\n");
    assert_eq!(
        ok(&["reset", p(&log)]),
        format!(
            "{}: dropped 4 entries (LSN 4..=7); empty, next LSN 8\n",
            log.display()
        )
    );
    assert_eq!(
        ok(&["reset", p(&log)]),
        format!("{}: dropped 0 entries; empty, next LSN 8\n", log.display())
    );
    assert_eq!(ok(&["dump", p(&log)]), "");
    assert_eq!(ok(&["append", p(&log), "--data", "after reset"]), "8\n");
    // Exactly one of --before and --after, and the usage line says so.
    let out = daxlog(&["truncate", p(&log)]);
    assert_eq!(out.status.code(), Some(2));
    let usage = text(&out.stderr);
    assert!(
        usage
            .lines()
            .any(|l| l == "Usage: daxlog truncate <--before <LSN>|--after <LSN>> <PATH>"),
        "{usage}"
    );
    assert_eq!(
        daxlog(&["truncate", p(&log), "--before", "1", "--after", "2"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn check_reports_corruption_and_salvages_around_it() {
    let dir = tempdir();
    let log = dir.path().join("c.dax");
    ok(&["create", p(&log), "--capacity", "1MiB"]);
    let lines: String = (1..=10).map(|i| format!("entry number {i}\n")).collect();
    assert!(daxlog_stdin(&["append", p(&log)], lines.as_bytes())
        .status
        .success());
    // Damage the payload of LSN 4: every entry is 24 + 16 (or 15) bytes, rounded to 40.
    let off = 4096 + 3 * 40 + 24 + 2;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .unwrap();
    let mut b = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, off).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0xff], off).unwrap();
    drop(f);
    let out = daxlog(&["check", p(&log)]);
    assert_error(1, &out, &log, "corrupted at LSN 4, offset 4216");
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {0}: corrupted at LSN 4, offset 4216: checksum mismatch; 6 valid entries \
             lie beyond it (`daxlog check {0} --salvage OUT` copies every readable entry, LSNs \
             kept)\n",
            log.display()
        )
    );
    let rescued = dir.path().join("rescued.dax");
    let out = daxlog(&[
        "--lock-wait",
        "10",
        "check",
        p(&log),
        "--salvage",
        p(&rescued),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert_eq!(
        text(&out.stdout),
        format!(
            "{0}: damaged at offset 4216: LSN 4 lost; entries resume at offset 4256\n\
             {0}: salvaged 9 entries (LSN 1..=10) into {1}, LSNs kept; 1 LSN lost in 1 damaged \
             region\n",
            log.display(),
            rescued.display()
        )
    );
    let want: String = (1..=10)
        .filter(|&i| i != 4)
        .map(|i| format!("entry number {i}\n"))
        .collect();
    assert_eq!(ok(&["cat", p(&rescued)]), want);
    // Every surviving entry keeps its LSN (LSN 4 is padding in the salvaged log).
    let want: String = (1..=10)
        .filter(|&i| i != 4)
        .map(|i| format!("{i}\t{}\n", hex(format!("entry number {i}").as_bytes())))
        .collect();
    assert_eq!(ok(&["dump", p(&rescued)]), want);
    assert_eq!(
        ok(&["check", p(&rescued)]),
        format!(
            "{}: ok: 9 entries and 1 padding entry (LSN 1..=10), 384 bytes; tail clean\n",
            rescued.display()
        )
    );
    assert_eq!(ok(&["append", p(&rescued), "--data", "next"]), "11\n");
}

// ---- Edges an operator leans on ---------------------------------------------------------------

/// Runs with extra environment variables; returns the output.
fn daxlog_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Flips every bit of the byte at `off`.
fn flip(path: &Path, off: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], off).unwrap();
}

/// `check --salvage` of a log with damage inside and a torn batch at its end: the batch's
/// valid entries are not copied, and the summary says so.
#[test]
fn a_salvage_says_what_it_leaves_of_a_torn_tail() {
    let dir = tempdir();
    let path = dir.path().join("d.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for i in 1..=4 {
        log.append(format!("entry {i:02}").as_bytes()).unwrap(); // 24 + 8 bytes
    }
    log.append_batch(&[b"entry 05", b"entry 06", b"entry 07"])
        .unwrap();
    drop(log);
    flip(&path, 4096 + 32 + 24 + 2); // LSN 2
    flip(&path, 4096 + 6 * 32 + 24 + 2); // LSN 7, the batch's last
    unpublish(&path, 5); // the batch was never published
    let rescued = dir.path().join("r.dax");
    let out = daxlog(&[
        "--lock-wait",
        "10",
        "check",
        p(&path),
        "--salvage",
        p(&rescued),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{0}: damaged at offset 4128: LSN 2 lost; entries resume at offset 4160\n\
             {0}: salvaged 3 entries (LSN 1..=4) into {1}, LSNs kept; 1 LSN lost in 1 damaged \
             region; 2 valid entries at the end not copied: an interrupted append, never \
             acknowledged\n",
            path.display(),
            rescued.display()
        )
    );
    assert_eq!(ok(&["cat", p(&rescued)]), "entry 01\nentry 03\nentry 04\n");
}

/// A log of 10 entries `entry number N` (LSN `first`..), whose 4th entry is damaged: LSN
/// `first + 3` at offset 4216, entries resume at 4256.
fn damaged_log(dir: &Path, name: &str, first: u64) -> PathBuf {
    let log = dir.join(name);
    ok(&[
        "create",
        p(&log),
        "--capacity",
        "1MiB",
        "--first-lsn",
        &first.to_string(),
    ]);
    let lines: String = (1..=10).map(|i| format!("entry number {i}\n")).collect();
    let out = daxlog_stdin(&["append", p(&log)], lines.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Every entry is 24 + 14 (or 15) bytes, rounded to 40.
    flip(&log, 4096 + 3 * 40 + 24 + 2);
    log
}

/// A log whose third and last entry (`cccc`) is torn: 32 bytes at offset 4160.
fn torn_log(dir: &Path) -> PathBuf {
    let path = dir.join("torn.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    let out = daxlog_stdin(&["append", p(&path)], b"aaaa\nbbbb\ncccc\n");
    assert_eq!(text(&out.stdout), "1\n2\n3\n");
    flip(&path, 4096 + 2 * 32 + 24 + 2);
    unpublish(&path, 3);
    path
}

/// Makes the reader area say what a crash before entry `next` was published leaves: the
/// published end at `next` (and nothing vouched). Damage to an entry that was published is
/// not a torn tail: `check` reports it missing.
fn unpublish(path: &Path, next: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut words = [0u8; 16];
    words[..8].copy_from_slice(&next.to_le_bytes());
    f.write_all_at(&words, 2048).unwrap();
}

fn lines_of(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn exit_codes_are_documented() {
    let help = text(&daxlog(&["--help"]).stdout);
    for line in [
        "Exit codes:",
        "  0  success (check: the log is clean)",
        "  2  usage error (an option, or a DAXLOG_* environment variable)",
        "  3  check --salvage copied the log but LSNs were lost in damaged regions",
    ] {
        assert!(help.lines().any(|l| l == line), "{line:?} not in {help}");
    }
    assert!(help.contains("  1  damage found (check; check --strict on a torn tail"));
    assert!(help.contains("  4  operational error (I/O, not found, permission, locked, log full"));
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLI.md")).unwrap();
    for row in [
        "| 0 | success",
        "| 1 | damage found",
        "| 2 | usage error",
        "| 3 | `check --salvage`",
        "| 4 | operational error",
    ] {
        assert!(docs.contains(row), "{row:?} not in docs/CLI.md");
    }
    let module =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/cli/mod.rs")).unwrap();
    for row in [
        "//! | 0 |",
        "//! | 1 |",
        "//! | 2 |",
        "//! | 3 |",
        "//! | 4 |",
    ] {
        assert!(module.contains(row), "{row:?} not in the cli module doc");
    }
}

/// `daxlog append L | head -1`: once stdout is closed, append stops with exit 4 and says how
/// far it got; the log holds exactly what it says.
#[test]
fn append_stops_when_stdout_closes() {
    let dir = tempdir();
    let path = dir.path().join("a.dax");
    // A child that another test thread is forking may hold a copy of the pipe's read end
    // until it execs, and keep the pipe open a moment after we close it: try again then.
    let mut attempts = 0;
    let out = loop {
        attempts += 1;
        ok(&["create", p(&path), "--capacity", "1MiB", "--force"]);
        let mut child = Command::new(bin())
            .args(["append", p(&path)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdin.write_all(b"one\n").unwrap();
        stdin.flush().unwrap();
        let mut ack = String::new();
        stdout.read_line(&mut ack).unwrap();
        assert_eq!(ack, "1\n");
        drop(stdout); // the reader goes away
        stdin.write_all(b"two\nthree\nfour\n").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        if out.status.code() != Some(0) || attempts == 10 {
            break out;
        }
    };
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: stdout closed: 2 records were appended (LSN 1..=2), the last LSN \
             appended is 2; the rest of stdin was not appended\n",
            path.display()
        )
    );
    assert_eq!(ok(&["cat", p(&path)]), "one\ntwo\n");

    // The same with a fast producer and a reader that takes one line (`seq | append | head -1`).
    let path = dir.path().join("b.dax");
    ok(&["create", p(&path), "--capacity", "16MiB"]);
    for batch in ["1", "64"] {
        ok(&["reset", p(&path)]);
        let mut child = Command::new(bin())
            .args(["append", p(&path), "--batch", batch])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let all: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
            let _ = stdin.write_all(all.as_bytes());
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert_eq!(out.status.code(), Some(4));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        let log = Log::open_read_only(&path, &Options::new()).unwrap();
        let (first_lsn, last) = (log.first_lsn().unwrap(), log.last_lsn().unwrap());
        assert_eq!(first.trim(), first_lsn.to_string());
        assert!(log.len() < 100_000);
        assert_eq!(
            err,
            format!(
                "error: {}: stdout closed: {} records were appended (LSN {first_lsn}..={last}), \
                 the last LSN appended is {last}; the rest of stdin was not appended\n",
                path.display(),
                log.len()
            )
        );
        // The entries are the first lines of the input, in order.
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.payload, (i + 1).to_string().as_bytes());
        }
    }
}

/// A full log stops append with exit 4, naming what was appended, the first record that was
/// not, its size, the free space and how to make room.
#[test]
fn append_says_what_did_not_fit() {
    let dir = tempdir();
    let path = dir.path().join("small.dax");
    let line = format!("{}\n", "x".repeat(1000));
    for batch in ["1", "3"] {
        ok(&["create", p(&path), "--capacity", "8192", "--force"]);
        let out = daxlog_stdin(
            &["append", p(&path), "--batch", batch],
            line.repeat(6).as_bytes(),
        );
        assert_eq!(text(&out.stdout), "1\n2\n3\n4\n", "--batch {batch}");
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(
            text(&out.stderr),
            format!(
                "error: {0}: log full: 4 records were appended (LSN 1..=4); record 5 (line 5), \
                 1000 bytes, was not appended, nor the rest of stdin: it needs 1024 bytes on \
                 media and 0 are free in one piece; make room with `daxlog truncate {0} \
                 --before LSN` once the entries below LSN are checkpointed, or `daxlog reset \
                 {0}`\n",
                path.display()
            ),
            "--batch {batch}"
        );
        assert_eq!(info_json(&path)["entries"], 4);
    }
    let out = daxlog(&["append", p(&path), "--data", "y"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {0}: log full: no record was appended; the --data entry, 1 byte, was not \
             appended: it needs 32 bytes on media and 0 are free in one piece; make room with \
             `daxlog truncate {0} --before LSN` once the entries below LSN are checkpointed, or \
             `daxlog reset {0}`\n",
            path.display()
        )
    );
    // Too large for any log of this capacity: the records before it are appended.
    ok(&["reset", p(&path)]);
    let input = format!("a\nb\n{}\nc\n", "z".repeat(5000));
    let out = daxlog_stdin(&["append", p(&path), "--batch", "8"], input.as_bytes());
    assert_eq!(text(&out.stdout), "5\n6\n");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: 2 records were appended (LSN 5..=6); record 3 (line 3), 5000 bytes, \
             exceeds the largest payload this log can hold (4072 bytes): it and the rest of \
             stdin were not appended\n",
            path.display()
        )
    );
}

/// A payload generator: every byte value, `\n`, `\0` and invalid UTF-8 included.
fn binary_payloads(with_nul: bool) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\n".to_vec(),
        b"\xff\xfe\xc3".to_vec(),
        b"a\nb\r\n\tc".to_vec(),
        "h\u{e9}llo".into(),
    ];
    if with_nul {
        v.push(b"\0".to_vec());
        v.push(b"x\0y\n\0".to_vec());
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 300) as usize;
        let p: Vec<u8> = (0..len)
            .map(|i| (x.rotate_left(i as u32 % 64) as u8).wrapping_add(i as u8))
            .filter(|&b| with_nul || b != 0)
            .collect();
        v.push(p);
    }
    v
}

/// Random binary payloads go through `dump` (hex or JSON) or `cat -0` and back through
/// `append --format`, byte for byte.
#[test]
fn binary_payloads_round_trip() {
    let dir = tempdir();
    for (i, (with_nul, read, format)) in [
        (true, &["dump"][..], "hex"),
        (true, &["dump", "--json"][..], "json"),
        (false, &["cat", "-0"][..], "nul"),
        (false, &["cat", "--null"][..], "nul"),
    ]
    .into_iter()
    .enumerate()
    {
        let payloads = binary_payloads(with_nul);
        let src = dir.path().join(format!("src-{i}.dax"));
        {
            let log = Log::create(&src, &Options::new().capacity(4 << 20)).unwrap();
            for pl in &payloads {
                log.append(pl).unwrap();
            }
        }
        let mut args = read.to_vec();
        args.push(p(&src));
        let printed = daxlog(&args);
        assert!(printed.status.success(), "{}", text(&printed.stderr));
        if read[0] == "dump" && read.len() == 2 {
            // One JSON object per entry: {"lsn":N,"len":L,"hex":"..."}.
            let first = text(&printed.stdout).lines().nth(3).unwrap().to_string();
            assert_eq!(first, r#"{"lsn":4,"len":7,"hex":"610a620d0a0963"}"#);
        }
        for batch in ["1", "7"] {
            let dst = dir.path().join(format!("dst-{i}-{batch}.dax"));
            ok(&["create", p(&dst), "--capacity", "4MiB"]);
            let out = daxlog_stdin(
                &["append", p(&dst), "--format", format, "--batch", batch],
                &printed.stdout,
            );
            assert!(out.status.success(), "{}", text(&out.stderr));
            let acks: String = (1..=payloads.len()).map(|i| format!("{i}\n")).collect();
            assert_eq!(text(&out.stdout), acks);
            let log = Log::open_read_only(&dst, &Options::new()).unwrap();
            let got: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
            assert_eq!(got, payloads, "{read:?} | append --format {format}");
            drop(log);
            let mut again = read.to_vec();
            again.push(p(&dst));
            assert_eq!(daxlog(&again).stdout, printed.stdout);
        }
    }
    // The hand-written forms: hex without an LSN, upper case, CRLF; JSON with `text`.
    let dst = dir.path().join("forms.dax");
    ok(&["create", p(&dst), "--capacity", "64KiB"]);
    let out = daxlog_stdin(
        &["append", p(&dst), "--format", "hex"],
        b"4869\r\n\n7\t00FF\n",
    );
    assert_eq!(text(&out.stdout), "1\n2\n3\n");
    let out = daxlog_stdin(
        &["append", p(&dst), "--format", "json"],
        b"{\"text\":\"caf\\u00e9\"}\n{\"lsn\":99,\"hex\":\"0a\",\"len\":1}\n",
    );
    assert_eq!(text(&out.stdout), "4\n5\n");
    assert_eq!(
        ok(&["dump", p(&dst)]),
        "1\t4869\n2\t\n3\t00ff\n4\t636166c3a9\n5\t0a\n"
    );
}

/// A malformed record stops append with exit 4, naming it and what is wrong, after the
/// records before it were appended.
#[test]
fn malformed_records_stop_append() {
    let dir = tempdir();
    let path = dir.path().join("m.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    for (format, batch, input, acks, what) in [
        (
            "hex",
            "1",
            &b"6869\nzz\n6a\n"[..],
            "1\n",
            "1 record was appended (LSN 1); record 2 (line 2) is not valid --format hex input \
             (not hex: 'z' at column 1)",
        ),
        (
            "hex",
            "10",
            &b"00\n11\n2\t123\n"[..],
            "1\n2\n",
            "2 records were appended (LSN 1..=2); record 3 (line 3) is not valid --format hex \
             input (odd number of hex digits (3))",
        ),
        (
            "json",
            "10",
            &b"{\"hex\":\"00\"}\n{\"text\":\"a\"}\n{\"hex\":\"00\",\"len\":2}\n{\"hex\":\"01\"}\n"
                [..],
            "1\n2\n",
            "2 records were appended (LSN 1..=2); record 3 (line 3) is not valid --format json \
             input (\"len\" is 2 but the payload has 1 byte)",
        ),
        (
            "json",
            "1",
            &b"not json\n"[..],
            "",
            "no record was appended; record 1 (line 1) is not valid --format json input (not \
             JSON: expected ident at line 1 column 2)",
        ),
    ] {
        ok(&["create", p(&path), "--capacity", "64KiB", "--force"]);
        let out = daxlog_stdin(
            &["append", p(&path), "--format", format, "--batch", batch],
            input,
        );
        assert_eq!(text(&out.stdout), acks, "{format}");
        assert_eq!(out.status.code(), Some(4), "{format}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "error: {}: {what}: it and the rest of stdin were not appended\n",
                path.display()
            )
        );
        let n = acks.lines().count() as u64;
        assert_eq!(info_json(&path)["entries"], n);
    }
}

/// A JSON record that gives a key twice, in any object of it however deep (in a value that
/// `append` ignores too), is refused, naming the key, where it is and the line, rather than
/// appending the payload of whichever value a parser keeps; nothing of it or after it is
/// appended.
#[test]
fn json_keys_given_twice_are_refused() {
    let dir = tempdir();
    let path = dir.path().join("k.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    for (record, what) in [
        (
            r#"{"hex":"00","hex":"11"}"#,
            r#"the key "hex" is given twice"#,
        ),
        (
            r#"{"lsn":{"n":1,"n":2},"hex":"11"}"#,
            r#"the key "n" is given twice in the object at /lsn"#,
        ),
        (
            r#"{"hex":"11","meta":[{"id":1},{"tags":{"t":1,"t":1}}]}"#,
            r#"the key "t" is given twice in the object at /meta/1/tags"#,
        ),
    ] {
        for batch in ["1", "10"] {
            ok(&["create", p(&path), "--capacity", "64KiB", "--force"]);
            let input = format!("{{\"text\":\"a\"}}\n{record}\n{{\"hex\":\"22\"}}\n");
            let out = daxlog_stdin(
                &["append", p(&path), "--format", "json", "--batch", batch],
                input.as_bytes(),
            );
            assert_eq!(text(&out.stdout), "1\n", "{record} --batch {batch}");
            assert_eq!(
                text(&out.stderr),
                format!(
                    "error: {}: 1 record was appended (LSN 1); record 2 (line 2) is not valid \
                     --format json input ({what}: give each key once): it and the rest of \
                     stdin were not appended\n",
                    path.display()
                )
            );
            assert_eq!(out.status.code(), Some(4));
            assert_eq!(ok(&["dump", p(&path)]), "1\t61\n");
        }
    }
    // Nested objects whose keys differ are taken as before.
    ok(&["create", p(&path), "--capacity", "64KiB", "--force"]);
    let out = daxlog_stdin(
        &["append", p(&path), "--format", "json"],
        br#"{"lsn":{"a":1,"b":{"a":2}},"meta":[{"a":1},{"a":1}],"hex":"11"}"#,
    );
    assert_eq!(text(&out.stdout), "1\n", "{}", text(&out.stderr));
    assert_eq!(ok(&["dump", p(&path)]), "1\t11\n");
}

/// `check` validates every entry whatever the environment says: a tail hint must not let the
/// open skip the entries before it.
#[test]
fn check_ignores_the_environment_and_validates_everything() {
    let dir = tempdir();
    let path = dir.path().join("hinted.dax");
    {
        let opts = Options::new().capacity(1 << 20).tail_hint_every(4096);
        let log = Log::create(&path, &opts).unwrap();
        for i in 0..500u32 {
            log.append(&[i as u8; 64]).unwrap();
        }
    }
    // Entries of 64 bytes take 88: damage the payload of LSN 10.
    flip(&path, 4096 + 9 * 88 + 30);
    let env = [("DAXLOG_TAIL_HINT_EVERY", "4096")];
    let want = format!(
        "error: {0}: corrupted at LSN 10, offset 4888: checksum mismatch; 490 valid entries lie \
         beyond it (`daxlog check {0} --salvage OUT` copies every readable entry, LSNs kept)\n",
        path.display()
    );
    let out = daxlog_env(&["check", p(&path)], &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), want);
    assert_eq!(text(&out.stdout), "");
    // The readers see the damage too, whatever the environment.
    let out = daxlog_env(&["dump", p(&path)], &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).lines().count(), 9);
    let out = daxlog_env(&["info", p(&path), "--json"], &env);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"], 9);
    assert_eq!(v["damage"]["lsn"], 10);
    assert_eq!(v["damage"]["entries_beyond"], 490);
}

/// Padding (what an abandoned append leaves) is part of a healthy log: counted apart, skipped
/// by readers, kept by salvage.
#[test]
fn padding_is_healthy_and_counted_apart() {
    let dir = tempdir();
    let path = dir.path().join("pad.dax");
    {
        let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
        for pl in [b"a", b"b", b"c", b"d"] {
            log.append(pl).unwrap();
        }
        assert_eq!(log.append_padding(3).unwrap(), 5..8);
        assert_eq!(log.append(b"h").unwrap(), 8);
    }
    assert_eq!(
        ok(&["check", p(&path)]),
        format!(
            "{}: ok: 5 entries and 3 padding entries (LSN 1..=8), 232 bytes; tail clean\n",
            path.display()
        )
    );
    assert_eq!(
        ok(&["cat", p(&path), "--lsn"]),
        "1\ta\n2\tb\n3\tc\n4\td\n8\th\n"
    );
    let v = info_json(&path);
    assert_eq!(v["entries"], 5);
    assert_eq!(v["padding"], 3);
    assert_eq!(v["last_lsn"], 8);
    let info = ok(&["info", p(&path)]);
    assert!(info.lines().any(|l| l == "entries:        5"), "{info}");
    assert!(info.lines().any(|l| l == "padding:        3"), "{info}");
    // Nothing lost: exit 0, and the copy keeps every LSN.
    let copy = dir.path().join("copy.dax");
    let out = daxlog(&[
        "--lock-wait",
        "10",
        "check",
        p(&path),
        "--salvage",
        p(&copy),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{}: salvaged 5 entries (LSN 1..=8) into {}, LSNs kept, 3 padding LSNs kept as \
             padding; nothing lost\n",
            path.display(),
            copy.display()
        )
    );
    assert_eq!(
        ok(&["cat", p(&copy), "--lsn"]),
        "1\ta\n2\tb\n3\tc\n4\td\n8\th\n"
    );
    assert_eq!(ok(&["append", p(&copy), "--data", "i"]), "9\n");
}

#[test]
fn check_strict_refuses_a_torn_tail() {
    let dir = tempdir();
    let path = torn_log(dir.path());
    let out = ok(&["check", p(&path)]);
    assert!(out.contains("ok: 2 entries (LSN 1..=2)"), "{out}");
    let out = daxlog(&["check", p(&path), "--strict"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: torn tail at LSN 3, offset 4160: 32 bytes of an interrupted append \
             (checksum mismatch), refused by --strict; the 2 entries before it are intact (a \
             writable open discards the torn tail)\n",
            path.display()
        )
    );
    // Damage stays damage under --strict.
    let bad = damaged_log(dir.path(), "bad.dax", 1);
    let out = daxlog(&["check", p(&bad), "--strict"]);
    assert_error(
        1,
        &out,
        &bad,
        "corrupted at LSN 4, offset 4216: checksum mismatch",
    );
    // A healthy log passes.
    let good = dir.path().join("good.dax");
    ok(&["create", p(&good), "--capacity", "64KiB"]);
    assert!(ok(&["check", p(&good), "--strict"]).contains(": ok: 0 entries (empty)"));
}

/// Salvage keeps every surviving entry's LSN (from any first LSN), refuses an existing OUT
/// unless --force, and never writes over the log it reads.
#[test]
fn salvage_keeps_lsns() {
    let dir = tempdir();
    let log = damaged_log(dir.path(), "far.dax", 1000);
    let out = daxlog(&["check", p(&log)]);
    assert_error(1, &out, &log, "corrupted at LSN 1003, offset 4216");
    let rescued = dir.path().join("r.dax");
    std::fs::write(&rescued, b"old").unwrap();
    let out = daxlog(&[
        "--lock-wait",
        "10",
        "check",
        p(&log),
        "--salvage",
        p(&rescued),
    ]);
    assert_error(
        4,
        &out,
        &rescued,
        "already exists (use --force to replace it with a new, empty log)",
    );
    assert_eq!(std::fs::read(&rescued).unwrap(), b"old");
    let out = daxlog(&[
        "--lock-wait",
        "10",
        "check",
        p(&log),
        "--salvage",
        p(&rescued),
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        lines_of(&text(&out.stdout)),
        [
            format!(
                "{}: damaged at offset 4216: LSN 1003 lost; entries resume at offset 4256",
                log.display()
            ),
            format!(
                "{}: salvaged 9 entries (LSN 1000..=1009) into {}, LSNs kept; 1 LSN lost in 1 \
                 damaged region",
                log.display(),
                rescued.display()
            )
        ]
    );
    let dump = ok(&["dump", p(&rescued)]);
    let lsns: Vec<&str> = dump
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        lsns,
        ["1000", "1001", "1002", "1004", "1005", "1006", "1007", "1008", "1009"]
    );
    // The source's surviving prefix dumps the same lines.
    let src = daxlog(&["dump", p(&log)]);
    assert!(dump.starts_with(&text(&src.stdout)));
    assert_eq!(
        std::fs::metadata(&rescued).unwrap().len(),
        std::fs::metadata(&log).unwrap().len()
    );
    // Not into the log being salvaged.
    let before = std::fs::read(&log).unwrap();
    let out = daxlog(&[
        "--lock-wait",
        "10",
        "check",
        p(&log),
        "--salvage",
        p(&log),
        "--force",
    ]);
    assert_error(4, &out, &log, "is the log being salvaged");
    assert_eq!(std::fs::read(&log).unwrap(), before);
}

/// info reads the metadata page itself: both superblocks and both slots, which is current,
/// then what a salvage-mode open finds; on damage it exits 1 after printing.
#[test]
fn info_shows_a_damaged_log() {
    let dir = tempdir();
    let log = damaged_log(dir.path(), "d.dax", 1);
    let out = daxlog(&["info", p(&log)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {0}: corrupted at LSN 4, offset 4216: checksum mismatch; 6 valid entries \
             lie beyond it (`daxlog check {0} --salvage OUT` copies every readable entry, LSNs \
             kept)\n",
            log.display()
        )
    );
    let info = text(&out.stdout);
    let row = |key: &str| -> String {
        info.lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {info}"))[16..]
            .to_string()
    };
    assert_eq!(row("superblock 0"), "offset 0: valid");
    assert_eq!(row("superblock 1"), "offset 512: valid");
    // create wrote slot 1 (seq 1); append's open wrote slot 0 (seq 2), which is current.
    let s0 = row("slot 0");
    assert!(
        s0.starts_with(
            "offset 1024: valid, current: seq 2, head offset 4096, head LSN 1, cut LSN 1, epoch 0x"
        ),
        "{s0}"
    );
    assert!(s0.ends_with(", flags none, tail hint none"), "{s0}");
    assert!(row("slot 1").starts_with("offset 1536: valid: seq 1, head offset 4096"));
    assert_eq!(row("entries"), "3");
    assert_eq!(row("padding"), "0");
    assert_eq!(row("first LSN"), "1");
    assert_eq!(row("last LSN"), "3");
    assert_eq!(row("next LSN"), "4");
    assert_eq!(row("used"), "120 bytes (120 B)");
    assert_eq!(
        row("tail"),
        "damaged at offset 4216: the readable entries end there (see damage)"
    );
    assert_eq!(row("torn bytes"), "0");
    assert_eq!(
        row("damage"),
        "at offset 4216, LSN 4: checksum mismatch; 6 valid entries beyond it (LSN 5..=10)"
    );
    assert_eq!(
        row("gaps"),
        "damaged at offset 4216: LSN 4 lost; entries resume at offset 4256"
    );
    let out = daxlog(&["info", p(&log), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"], 3);
    assert_eq!(v["padding"], 0);
    assert_eq!(v["superblocks"][0]["valid"], true);
    assert_eq!(v["superblocks"][1]["offset"], 512);
    assert_eq!(v["slots"][0]["current"], true);
    assert_eq!(v["slots"][0]["seq"], 2);
    assert_eq!(v["slots"][1]["current"], false);
    assert_eq!(v["slots"][1]["valid"], true);
    assert_eq!(v["damage"]["offset"], 4216);
    assert_eq!(v["damage"]["lsns_beyond"], serde_json::json!([5, 10]));
    assert_eq!(v["gaps"][0]["first_lsn"], 4);
    assert_eq!(v["gaps"][0]["resume_offset"], 4256);
    assert_eq!(v["tail_state"], "damaged");
    assert_eq!(v["tail_offset"], 4216);
    assert_eq!(v["torn_bytes"], 0);
    assert_eq!(v["torn_reason"], Value::Null);

    // A damaged primary superblock: shown, the backup used, no entry damaged.
    let path = dir.path().join("sb.dax");
    ok(&["create", p(&path), "--capacity", "1MiB"]);
    flip(&path, 40);
    let out = daxlog(&["info", p(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let info = text(&out.stdout);
    assert!(info.lines().any(|l| l
        == "superblock 0:   offset 0: invalid: checksum mismatch (version 3, capacity 1048576)"));
    assert!(info
        .lines()
        .any(|l| l == "superblock 1:   offset 512: valid"));
    assert!(info
        .lines()
        .any(|l| l == "slot 0:         offset 1024: never written"));
}

/// When the metadata cannot be read at all, info shows the raw page and exits 1.
#[test]
fn info_shows_the_raw_page_of_an_unopenable_log() {
    let dir = tempdir();
    let path = dir.path().join("meta.dax");
    ok(&["create", p(&path), "--capacity", "1MiB"]);
    ok(&["append", p(&path), "--data", "x"]);
    // Both slots' checksums.
    flip(&path, 1024 + 60);
    flip(&path, 1536 + 60);
    let out = daxlog(&["info", p(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: corrupted metadata at offset 1024: no valid metadata slot\n",
            path.display()
        )
    );
    let info = text(&out.stdout);
    let rows: Vec<&str> = info.lines().collect();
    assert_eq!(rows[0], format!("path:           {}", path.display()));
    assert_eq!(rows[1], "file size:      1048576 bytes (1 MiB)");
    assert_eq!(rows[2], "superblock 0:   offset 0: valid");
    assert_eq!(rows[3], "superblock 1:   offset 512: valid");
    assert!(rows[4].starts_with("slot 0:         offset 1024: invalid: checksum mismatch: seq 2, head offset 4096, head LSN 1, cut LSN 1, epoch 0x"), "{info}");
    assert!(
        rows[5].starts_with("slot 1:         offset 1536: invalid: checksum mismatch: seq 1,"),
        "{info}"
    );
    assert_eq!(rows.len(), 6);
    let out = daxlog(&["check", p(&path)]);
    assert_error(
        1,
        &out,
        &path,
        "corrupted metadata at offset 1024: no valid metadata slot",
    );

    // Both superblocks: the slots cannot even be checked.
    flip(&path, 40);
    flip(&path, 512 + 40);
    let out = daxlog(&["info", p(&path), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["superblocks"][0]["valid"], false);
    assert_eq!(v["superblocks"][0]["error"], "checksum mismatch");
    assert_eq!(v["superblocks"][1]["capacity"], 1 << 20);
    assert_eq!(v["slots"][0]["valid"], Value::Null);
    assert_eq!(v["slots"][0]["seq"], 2);
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: corrupted metadata at offset 0: both copies damaged (checksum mismatch)\n",
            path.display()
        )
    );
    // The JSON's error is the one on stderr.
    assert_eq!(
        format!("error: {}\n", v["error"].as_str().unwrap()),
        text(&out.stderr)
    );
}

/// A log whose current metadata slot was zeroed, written in msync mode (whose writer vouches
/// for nothing, so the open goes on with the older slot, whose epoch refuses every entry of
/// the last session): the published word says what was acknowledged, and `check`, `info`,
/// `dump` and a salvage say those LSNs are missing instead of "ok"; a salvage keeps them as
/// padding, so they are not given out again.
#[test]
fn published_entries_that_are_missing_are_reported() {
    let dir = tempdir();
    let path = dir.path().join("z.dax");
    let msync = |args: &[&str], input: &[u8]| {
        let mut c = Command::new(bin());
        c.args(args)
            .env_remove("DAXLOG_FORCE_CPU_FLUSH")
            .env("DAXLOG_FORCE_MSYNC", "1");
        output_with_stdin(c, input)
    };
    let out = msync(&["create", p(&path), "--capacity", "16KiB"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: String = (1..=10).map(|i| format!("e{i}\n")).collect();
    let out = msync(&["append", p(&path)], lines.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(info_json(&path)["published_missing"], Value::Null);
    let current = info_json(&path)["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap()["offset"]
        .as_u64()
        .unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0u8; 64], current).unwrap();
    }
    let want = "LSNs 1..=10 published (acknowledged) by the last writer but missing: the log \
                holds no entry from LSN 1 on";
    let out = msync(&["check", p(&path)], b"");
    assert_error(1, &out, &path, want);
    assert_eq!(text(&out.stdout), "");
    let out = msync(&["info", p(&path), "--json"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["published_missing"], json!([1, 10]), "{v}");
    assert_eq!(v["next_lsn"], 1, "{v}");
    let out = msync(&["dump", p(&path)], b"");
    assert_error(1, &out, &path, want);
    let salvaged = dir.path().join("s.dax");
    let out = msync(&["check", p(&path), "--salvage", p(&salvaged)], b"");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains(want), "{said}");
    assert!(said.contains("10 LSNs lost in 1 damaged region"), "{said}");
    let v = info_json(&salvaged);
    assert_eq!(
        (v["next_lsn"].clone(), v["padding"].clone()),
        (json!(11), json!(10)),
        "{v}"
    );
    // A writable open takes the lost LSNs with padding (and says so on stderr): the next
    // append gets the LSN after them, none of them is given out again, and later opens see
    // nothing missing.
    let out = msync(&["append", p(&path), "--data", "after"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "11\n");
    assert!(
        text(&out.stderr).contains("published entries this log no longer holds")
            && text(&out.stderr).contains("taken by padding entries"),
        "{}",
        text(&out.stderr)
    );
    let v = info_json(&path);
    assert_eq!(
        (
            v["published_missing"].clone(),
            v["next_lsn"].clone(),
            v["padding"].clone()
        ),
        (Value::Null, json!(12), json!(10)),
        "{v}"
    );
    let out = msync(&["cat", p(&path)], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "after\n");

    // The last entry damaged: missing, under --strict too (no interrupted append); with
    // damage inside as well, past the entries found beyond it, and a salvage pads it.
    let fresh = |name: &str, n: usize| {
        let path = dir.path().join(name);
        let out = msync(&["create", p(&path), "--capacity", "16KiB"], b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lines: String = (1..=n).map(|i| format!("e{i:02}\n")).collect();
        let out = msync(&["append", p(&path)], lines.as_bytes());
        assert!(out.status.success(), "{}", text(&out.stderr));
        path
    };
    let last = fresh("last.dax", 10);
    flip(&last, 4096 + 9 * 32 + 24);
    let want = "LSN 10 published (acknowledged) by the last writer but missing: the log holds \
                no entry from LSN 10 on";
    let info = text(&msync(&["info", p(&last)], b"").stdout);
    assert!(
        info.contains("of entries the last writer had published (see missing)"),
        "{info}"
    );
    for strict in [false, true] {
        let args = [
            &["check", p(&last)][..],
            if strict { &["--strict"] } else { &[] },
        ]
        .concat();
        assert_error(1, &msync(&args, b""), &last, want);
    }
    flip(&last, 4096 + 2 * 32 + 24);
    let v: Value =
        serde_json::from_slice(&msync(&["info", p(&last), "--json"], b"").stdout).unwrap();
    assert_eq!(v["published_missing"], json!([10, 10]), "{v}");
    // A salvage of `from` into `to` in the test's directory: its output, and the copy.
    let salvage = |from: &Path, to: &str| {
        let copy = dir.path().join(to);
        (msync(&["check", p(from), "--salvage", p(&copy)], b""), copy)
    };
    let set_word = |path: &Path, published: u64| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&published.to_le_bytes(), 2048).unwrap();
    };
    // A salvage that loses LSNs (exit 3) and says `said`: its copy, the copy's next LSN and
    // padding.
    let lossy = |from: &Path, to: &str, said: &str| {
        let (out, copy) = salvage(from, to);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(said), "{}", text(&out.stdout));
        let v = info_json(&copy);
        let (next, padding) = (v["next_lsn"].as_u64(), v["padding"].as_u64());
        (copy, next.unwrap(), padding.unwrap())
    };
    let (copy, next, padding) = lossy(&last, "l2.dax", "2 LSNs lost in 2 damaged regions");
    assert_eq!((next, padding), (11, 2));
    // That copy ends in padding (LSN 10): a salvage of it after damage inside keeps it, so
    // that its copy does not give LSN 10 out again.
    flip(&copy, 4096 + 2 * 32 + 24 + 32 + 24);
    let (_, next, padding) = lossy(&copy, "l3.dax", "LSN 5 lost; entries resume");
    assert_eq!((next, padding), (11, 3));

    // A word past what the free space could have held is damage to the word, not a loss: no
    // report, and a salvage that fits.
    let full = fresh("full.dax", 300);
    set_word(&full, 510);
    assert_eq!(info_json(&full)["published_missing"], Value::Null);
    let (out, _) = salvage(&full, "f2.dax");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // With damage inside, the entries beyond it are not free space: a salvage pads no more
    // than its copy has room for.
    let damaged = fresh("damaged.dax", 300);
    flip(&damaged, 4096 + 32 + 24);
    set_word(&damaged, 500);
    let (out, copy) = salvage(&damaged, "d2.dax");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("salvaged 299 entries (LSN 1..=300)"),
        "{said}"
    );
    assert!(said.contains("1 LSN lost in 1 damaged region"), "{said}");
    assert_eq!(info_json(&copy)["next_lsn"], 301);

    // A published batch whose last entry is damaged: recovery discards the whole batch (a
    // torn tail, missing LSNs 8..=10), but it was acknowledged, so a salvage copies the two
    // readable entries and pads only LSN 10.
    let batch = fresh("batch.dax", 7);
    let out = msync(&["append", p(&batch), "--batch", "3"], b"b08\nb09\nb10\n");
    assert_eq!(text(&out.stdout), "8\n9\n10\n", "{}", text(&out.stderr));
    flip(&batch, 4096 + 9 * 32 + 24);
    let v: Value =
        serde_json::from_slice(&msync(&["info", p(&batch), "--json"], b"").stdout).unwrap();
    assert_eq!(v["published_missing"], json!([8, 10]), "{v}");
    let (out, copy) = salvage(&batch, "b2.dax");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("LSN 10 published (acknowledged)"), "{said}");
    assert!(
        said.contains("salvaged 9 entries (LSN 1..=9)") && said.contains("1 LSN lost"),
        "{said}"
    );
    let dump = text(&msync(&["dump", p(&copy)], b"").stdout);
    assert!(dump.ends_with("8\t623038\n9\t623039\n"), "{dump}");
    // Unpublished (a crash before the append returned), the same batch is an interrupted
    // append: nothing lost, and the salvage says what it leaves out.
    let torn = fresh("torn.dax", 7);
    let out = msync(&["append", p(&torn), "--batch", "3"], b"b08\nb09\nb10\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    unpublish(&torn, 8);
    flip(&torn, 4096 + 9 * 32 + 24);
    let (out, copy) = salvage(&torn, "t2.dax");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(
            "salvaged 7 entries (LSN 1..=7) into {}, LSNs kept; nothing lost; 2 valid entries at \
             the end not copied: an interrupted append, never acknowledged"
                .replace("{}", p(&copy))
                .as_str()
        ),
        "{said}"
    );
}

/// A log file grown past its capacity after it was created (`truncate -s`): the log goes on
/// in its capacity, and `check`, `info` and a writer say that the rest of the file is unused,
/// rather than let the grown file pass for a grown log.
#[test]
fn a_file_longer_than_its_capacity_is_named() {
    let dir = tempdir();
    let path = dir.path().join("grown.dax");
    ok(&["create", p(&path), "--capacity", "16KiB"]);
    ok(&["append", p(&path), "--data", "a"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(20480)
        .unwrap();
    let said = "the file has 4096 bytes past the log's capacity, unused";
    let check = ok(&["check", p(&path)]);
    assert!(
        check.contains("ok: 1 entry") && check.contains(said),
        "{check}"
    );
    let info = ok(&["info", p(&path)]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("capacity:") && l.contains("16384 bytes") && l.contains(said)),
        "{info}"
    );
    let v = info_json(&path);
    assert_eq!(
        (v["capacity"].clone(), v["file_bytes"].clone()),
        (json!(16384), json!(20480))
    );
    let out = daxlog(&["append", p(&path), "--data", "b"]);
    assert_eq!(text(&out.stdout), "2\n", "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the file is longer than the log's capacity"),
        "{}",
        text(&out.stderr)
    );
    // A file of exactly its capacity says nothing of it.
    let exact = dir.path().join("exact.dax");
    ok(&["create", p(&exact), "--capacity", "16KiB"]);
    assert!(!ok(&["check", p(&exact)]).contains("past the log's capacity"));
    assert_eq!(info_json(&exact)["file_bytes"], 16384);
}

/// `info --json` on a file that is not a log, or none at all: one object with the path, the
/// file's size (`null` without a file) and the error, which stderr has too.
#[test]
fn info_json_names_what_is_not_a_log() {
    let dir = tempdir();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 20000]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing");
    for (path, bytes) in [
        (&junk, json!(20000)),
        (&empty, json!(0)),
        (&missing, Value::Null),
    ] {
        let out = daxlog(&["info", p(path), "--json"]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["path"], p(path), "{v}");
        assert_eq!(v["file_bytes"], bytes, "{v}");
        let err = text(&out.stderr);
        assert_eq!(format!("error: {}\n", v["error"].as_str().unwrap()), err);
        assert!(err.contains(p(path)), "{err}");
    }
}

/// dump and cat print the entries before the damage, then the error, and exit 1.
#[test]
fn dump_and_cat_print_the_valid_prefix() {
    let dir = tempdir();
    let log = damaged_log(dir.path(), "d.dax", 1);
    let want_err = format!(
        "error: {0}: corrupted at LSN 4, offset 4216: checksum mismatch; 6 valid entries lie \
         beyond it (`daxlog check {0} --salvage OUT` copies every readable entry, LSNs kept)\n",
        log.display()
    );
    let out = daxlog(&["cat", p(&log)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "entry number 1\nentry number 2\nentry number 3\n"
    );
    assert_eq!(text(&out.stderr), want_err);
    // Any command refused a damaged log exits 1 too, and changes nothing.
    let before = std::fs::read(&log).unwrap();
    for args in [
        &["append", p(&log), "--data", "x"][..],
        &["truncate", p(&log), "--before", "2"],
        &["reset", p(&log)],
    ] {
        let out = daxlog(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr), want_err, "{args:?}");
    }
    assert_eq!(std::fs::read(&log).unwrap(), before);
    let out = daxlog(&["dump", p(&log), "--from", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        format!(
            "2\t{}\n3\t{}\n",
            hex(b"entry number 2"),
            hex(b"entry number 3")
        )
    );
    assert_eq!(text(&out.stderr), want_err);
}

/// Library messages reach stderr: warnings by default, more with -v, as RUST_LOG says.
#[test]
fn library_warnings_reach_stderr() {
    let dir = tempdir();
    let path = torn_log(dir.path());
    let copy = dir.path().join("copy.dax");
    std::fs::copy(&path, &copy).unwrap();
    let out = daxlog(&["append", p(&path), "--data", "dddd"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "3\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("warning: daxlog: discarded the torn tail of an interrupted append path="),
        "{err}"
    );
    assert!(err.contains(&format!("path={} ", path.display())), "{err}");
    assert!(err.contains("torn_bytes=32"), "{err}");
    // Quieter, and louder.
    let out = daxlog_env(
        &["append", p(&copy), "--data", "x"],
        &[("RUST_LOG", "error")],
    );
    assert_eq!(text(&out.stderr), "");
    let out = daxlog(&["-v", "append", p(&copy), "--data", "y"]);
    let err = text(&out.stderr);
    assert!(err.contains("info: daxlog: recovered log"), "{err}");
    assert!(!err.contains("debug:"), "{err}");
    let out = daxlog(&["cat", p(&copy), "-vv"]);
    assert!(text(&out.stderr).contains("info: daxlog: mapped log file"));
    assert_eq!(text(&out.stdout), "aaaa\nbbbb\nx\ny\n");
}

/// CPU flushes forced without MAP_SYNC: one warning line says the LSNs are not durable.
#[test]
fn non_durable_acknowledgements_are_flagged() {
    let dir = tempdir();
    let path = dir.path().join("n.dax");
    let env = [("DAXLOG_FORCE_CPU_FLUSH", "1")];
    let plain = daxlog(&["create", p(&path), "--capacity", "64KiB"]);
    assert_eq!(text(&plain.stderr), "");
    let out = daxlog_env(&["append", p(&path), "--data", "x"], &env);
    assert_eq!(text(&out.stdout), "1\n");
    let Some(&flush) = daxlog::supported_flush_instructions().first() else {
        assert_eq!(text(&out.stderr), ""); // no flush instruction: msync, durable
        return;
    };
    // The best instruction is first.
    assert_eq!(
        text(&out.stderr),
        format!(
            "warning: {}: CPU cache flushes ({}) are forced without MAP_SYNC: the LSNs printed \
             are not durable against power failure, only against a crash of this process\n",
            path.display(),
            flush.name()
        )
    );
    let out = daxlog_stdin(&["append", p(&path)], b"a\nb\n");
    assert_eq!(text(&out.stderr), "");
    let out = daxlog_env(&["reset", p(&path)], &env);
    assert_eq!(
        text(&out.stderr),
        format!(
            "warning: {}: CPU cache flushes ({}) are forced without MAP_SYNC: the reset is not \
             durable against power failure, only against a crash of this process\n",
            path.display(),
            flush.name()
        )
    );
    let out = daxlog_env(&["create", p(&path), "--force"], &env);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.ends_with(
            "are forced without MAP_SYNC: the new log and its appends are not durable against \
             power failure, only against a crash of this process\n"
        ),
        "{err}"
    );
}

#[test]
fn create_rounds_the_capacity_and_takes_mode_and_first_lsn() {
    let dir = tempdir();
    let path = dir.path().join("r.dax");
    let out = daxlog(&["create", p(&path), "--capacity", "1MB"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "note: --capacity 1000000 bytes is not a multiple of 4096: rounded up to 1003520 bytes\n"
    );
    assert!(text(&out.stdout).contains("capacity 1003520 bytes (980 KiB)"));
    assert!(text(&out.stdout).ends_with(", first LSN 1\n"));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1003520);
    assert_eq!(info_json(&path)["capacity"], 1003520);
    for (arg, msg) in [
        (
            "5000",
            "5000 bytes is below the minimum capacity: the smallest valid capacity is 8192 bytes \
             (8 KiB)",
        ),
        (
            "65TiB",
            "71468255805440 bytes is above the maximum capacity: the largest valid capacity is \
             70368744177664 bytes (64 TiB)",
        ),
    ] {
        let out = daxlog(&["create", p(&dir.path().join("x.dax")), "--capacity", arg]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(msg), "{}", text(&out.stderr));
    }
    // Mode (the umask applies) and first LSN.
    let run = |args: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("umask 027; exec \"$0\" {args}"))
            .arg(bin())
            .output()
            .unwrap()
    };
    let m = dir.path().join("m.dax");
    let out = run(&format!(
        "create {} --capacity 64KiB --mode 664 --first-lsn 100",
        p(&m)
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(", first LSN 100\n"));
    assert_eq!(std::fs::metadata(&m).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(ok(&["append", p(&m), "--data", "x"]), "100\n");
    let d = dir.path().join("d.dax");
    assert!(run(&format!("create {}", p(&d))).status.success());
    assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o600);
}

/// `create --force` replaces the old log only once the new one is complete: a failure leaves
/// the old log as it was, and no stray file.
#[test]
fn a_failed_force_leaves_the_old_log() {
    let dir = tempdir();
    let path = dir.path().join("keep.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    ok(&["append", p(&path), "--data", "precious"]);
    let before = std::fs::read(&path).unwrap();
    // More than the file system holds: fallocate fails at once.
    let out = daxlog(&["create", p(&path), "--capacity", "64TiB", "--force"]);
    assert_error(4, &out, &path, ": fallocate failed: ");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["keep.dax"]);
    assert_eq!(ok(&["cat", p(&path)]), "precious\n");
}

/// A symbolic link planted at the path is never written through.
#[test]
fn create_never_writes_through_a_symlink() {
    let dir = tempdir();
    let other = tempdir();
    let target = other.path().join("target");
    std::fs::write(&target, b"do not touch").unwrap();
    let link = dir.path().join("link.dax");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = daxlog(&["create", p(&link), "--capacity", "64KiB"]);
    assert_error(4, &out, &link, "already exists");
    assert_eq!(std::fs::read(&target).unwrap(), b"do not touch");
    // A dangling link is refused too, and its target is not created.
    let dangling = dir.path().join("dangling.dax");
    let nowhere = other.path().join("nowhere");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    let out = daxlog(&["create", p(&dangling), "--capacity", "64KiB"]);
    assert_error(4, &out, &dangling, "already exists");
    assert!(!nowhere.exists());
    // --force replaces the link itself, with a log of mode 0600.
    ok(&["create", p(&link), "--capacity", "64KiB", "--force"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"do not touch");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.len(), 64 << 10);
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 1);
}

/// The benchmark makes its scratch files in a private directory: links planted at the names
/// it once used (`DIR/daxlog-bench-PID.dax`, PID predictable) are left alone, and so are their
/// targets; nothing else is left in DIR.
#[test]
fn bench_never_follows_a_planted_symlink() {
    let dir = tempdir();
    let other = tempdir();
    let target = other.path().join("victim");
    std::fs::write(&target, b"root's precious file").unwrap();
    let script = r#"
        d="$1"; t="$2"; b="$3"
        for n in "daxlog-bench-$$.dax" "daxlog-bench-$$" "daxlog-bench-$$.dax.tmp" ".daxlog-bench-$$.dax"; do
            ln -s "$t" "$d/$n" || exit 99
        done
        exec "$b" bench --dir "$d" --seconds 0.05 --reps 1 --size 64 --mode msync \
            --capacity 1MiB --recovery-bytes 64KiB --json
    "#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(dir.path())
        .arg(&target)
        .arg(bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"root's precious file");
    let mut left: Vec<(String, PathBuf)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_link(e.path()).unwrap(),
            )
        })
        .collect();
    left.sort();
    assert_eq!(left.len(), 4, "{left:?}");
    for (name, to) in &left {
        assert!(name.contains("daxlog-bench-"), "{name}");
        assert_eq!(to, &target);
    }
}

/// The error table of docs/CLI.md is what the tool prints: every row is run here, its stderr
/// and exit code compared with the table (paths under `/x`). `DAXLOG_BLESS_DOCS=1` rewrites
/// the table instead.
#[test]
fn docs_error_table_is_what_the_tool_prints() {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dir.path();
    let x = |name: &str| d.join(name);
    let s = |path: &Path| path.to_str().unwrap().to_string();
    let mut rows: Vec<(&str, String, Output)> = Vec::new();
    let mut row = |situation: &'static str, shown: &str, out: Output| {
        rows.push((situation, shown.to_string(), out));
    };

    row(
        "no such file",
        "dump /x/log.dax",
        daxlog(&["dump", &s(&x("log.dax"))]),
    );
    row(
        "`create` in a missing directory",
        "create /x/no/log.dax",
        daxlog(&["create", &s(&x("no/log.dax"))]),
    );
    std::fs::write(x("junk"), vec![0x42u8; 8192]).unwrap();
    row(
        "not a log",
        "dump /x/junk",
        daxlog(&["dump", &s(&x("junk"))]),
    );
    std::fs::write(x("empty"), b"").unwrap();
    row(
        "an empty file",
        "info /x/empty",
        daxlog(&["info", &s(&x("empty"))]),
    );
    std::fs::write(x("short"), b"hello").unwrap();
    row(
        "a file shorter than the metadata page",
        "check /x/short",
        daxlog(&["check", &s(&x("short"))]),
    );
    row("a directory", "cat /x", daxlog(&["cat", &s(d)]));
    let fifo = d.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    row(
        "a FIFO, a device or a socket",
        "follow /x/fifo",
        daxlog(&["follow", &s(&fifo)]),
    );

    let log = x("log.dax");
    ok(&["create", &s(&log), "--capacity", "64KiB"]);
    {
        let _writer = Log::open(&log, &writer_opts()).unwrap();
        row(
            "another process has the log open for writing",
            "append /x/log.dax --data x",
            daxlog(&["append", &s(&log), "--data", "x"]),
        );
    }
    row(
        "`create` over an existing file",
        "create /x/log.dax",
        daxlog(&["create", &s(&log)]),
    );
    row(
        "`create` over a FIFO, a device or a socket, `--force` or not (a device node is never \
         replaced by a file)",
        "create /x/fifo --force",
        daxlog(&["create", &s(&fifo), "--force"]),
    );
    // Permissions: as root, run a copy of the binary as `nobody`.
    let private = x("private.dax");
    ok(&["create", &s(&private), "--capacity", "64KiB"]);
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let copy = x("daxlog");
    std::fs::copy(bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Command::new(if root {
        copy.clone()
    } else {
        PathBuf::from(bin())
    });
    c.args(["dump", &s(&private)]);
    if root {
        c.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    row(
        "file permissions (another user's log)",
        "dump /x/private.dax",
        output_retrying(&mut c),
    );
    std::fs::remove_file(&copy).unwrap();

    let full = x("full.dax");
    ok(&["create", &s(&full), "--capacity", "8192"]);
    let line = format!("{}\n", "x".repeat(1000));
    row(
        "no room for the records on stdin",
        "append /x/full.dax < (6 lines of 1000 bytes)",
        daxlog_stdin(&["append", &s(&full)], line.repeat(6).as_bytes()),
    );
    row(
        "no room for `--data`",
        "append /x/full.dax --data TEXT",
        daxlog(&["append", &s(&full), "--data", &"x".repeat(1000)]),
    );
    row(
        "an entry larger than the log could ever hold",
        "append /x/log.dax --data TEXT",
        daxlog(&["append", &s(&log), "--data", &"z".repeat(70000)]),
    );
    row(
        "a malformed input record",
        "append /x/log.dax --format hex < (6869, zz)",
        daxlog_stdin(&["append", &s(&log), "--format", "hex"], b"6869\nzz\n"),
    );
    // (A child that another test thread is forking may hold the pipe's read end for a
    // moment: then the LSNs fit in the pipe and append succeeds. Try again.)
    let piped = x("pipe.dax");
    let out = (0..10)
        .map(|_| {
            ok(&["create", &s(&piped), "--capacity", "64KiB", "--force"]);
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let mut child = Command::new(bin())
                .args(["append", &s(&piped)])
                .stdin(Stdio::piped())
                .stdout(Stdio::from(writer))
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child.stdin.take().unwrap().write_all(b"a\nb\n");
            child.wait_with_output().unwrap()
        })
        .find(|out| !out.status.success())
        .expect("append never saw its stdout closed");
    row(
        "stdout closed during `append`",
        "append /x/pipe.dax > (a pipe nobody reads)",
        out,
    );
    row(
        "an LSN above the next one",
        "truncate /x/log.dax --before 99",
        daxlog(&["truncate", &s(&log), "--before", "99"]),
    );

    let damaged = damaged_log(d, "damaged.dax", 1);
    row(
        "a damaged entry inside the log",
        "check /x/damaged.dax",
        daxlog(&["check", &s(&damaged)]),
    );
    let torn = torn_log(d);
    row(
        "a torn tail, with `--strict`",
        "check /x/torn.dax --strict",
        daxlog(&["check", &s(&torn), "--strict"]),
    );
    let meta = x("meta.dax");
    ok(&["create", &s(&meta), "--capacity", "64KiB"]);
    ok(&["append", &s(&meta), "--data", "x"]);
    flip(&meta, 1024 + 60);
    flip(&meta, 1536 + 60);
    row(
        "damaged metadata (both slots, or both superblock copies)",
        "check /x/meta.dax",
        daxlog(&["check", &s(&meta)]),
    );
    let cut = x("cut.dax");
    ok(&["create", &s(&cut), "--capacity", "64KiB"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(8192)
        .unwrap();
    row(
        "a log file cut short by something else",
        "dump /x/cut.dax",
        daxlog(&["dump", &s(&cut)]),
    );
    let v9 = x("v9.dax");
    ok(&["create", &s(&v9), "--capacity", "64KiB"]);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&v9).unwrap();
        f.write_all_at(&9u32.to_le_bytes(), 8).unwrap();
        f.write_all_at(&9u32.to_le_bytes(), 512 + 8).unwrap();
    }
    row(
        "a format version this build does not read",
        "info /x/v9.dax",
        daxlog(&["info", &s(&v9)]),
    );
    row(
        "`check --salvage` into an existing file",
        "check /x/damaged.dax --salvage /x/log.dax",
        daxlog(&[
            "--lock-wait",
            "10",
            "check",
            &s(&damaged),
            "--salvage",
            &s(&log),
        ]),
    );
    row(
        "`check --salvage` into the log itself",
        "check /x/damaged.dax --salvage /x/damaged.dax --force",
        daxlog(&[
            "--lock-wait",
            "10",
            "check",
            &s(&damaged),
            "--salvage",
            &s(&damaged),
            "--force",
        ]),
    );
    row(
        "`bench` in a missing directory",
        "bench --dir /x/no",
        daxlog(&["bench", "--dir", &s(&x("no"))]),
    );

    let root_dir = s(d);
    let mut table = String::from("| situation | command | exit | stderr |\n|---|---|---|---|\n");
    for (situation, shown, out) in &rows {
        let err = text(&out.stderr).replace(&root_dir, "/x");
        assert_eq!(err.lines().count(), 1, "{situation}: {err:?}");
        assert!(err.starts_with("error: "), "{situation}: {err:?}");
        let code = out.status.code().unwrap();
        assert!(code == 1 || code == 4, "{situation}: exit {code}");
        let err = err.trim_end();
        let cell = if err.contains('`') {
            format!("`` {err} ``")
        } else {
            format!("`{err}`")
        };
        table.push_str(&format!(
            "| {situation} | `daxlog {shown}` | {code} | {cell} |\n"
        ));
    }
    let docs_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLI.md");
    let docs = std::fs::read_to_string(docs_path).unwrap();
    const BEGIN: &str = "<!-- error table: begin -->\n";
    const END: &str = "<!-- error table: end -->";
    let (Some(b), Some(e)) = (docs.find(BEGIN), docs.find(END)) else {
        panic!("docs/CLI.md has no error table markers");
    };
    let current = &docs[b + BEGIN.len()..e];
    if current != table {
        if std::env::var_os("DAXLOG_BLESS_DOCS").is_some() {
            let new = format!("{}{table}{}", &docs[..b + BEGIN.len()], &docs[e..]);
            std::fs::write(docs_path, new).unwrap();
        } else {
            panic!(
                "the error table of docs/CLI.md differs from what the tool prints \
                 (DAXLOG_BLESS_DOCS=1 rewrites it):\n{table}"
            );
        }
    }
}

/// `follow` prints what a writer in another process appends, as it comes; says which LSNs a
/// truncation took before it could print them; and ends cleanly (exit 0, output flushed) on
/// SIGINT and when its reader goes away.
#[test]
fn follow_prints_appends_as_they_come() {
    let dir = tempdir();
    let path = dir.path().join("f.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for i in 1..=3 {
        log.append(format!("old {i}").as_bytes()).unwrap();
    }
    let mut child = Command::new(bin())
        .args(["follow", p(&path), "--lsn", "--from", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for i in 4..=6 {
        log.append(format!("new {i}").as_bytes()).unwrap();
    }
    for i in 4..=6 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("{i}\tnew {i}"));
    }
    // Stopped, it falls behind a truncation: it says what it missed and goes on.
    let pid = child.id() as i32;
    append_while_stopped(&log, pid, 7..=20, 15);
    for i in 15..=20 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("{i}\tnew {i}"));
    }
    // SIGINT: exit 0.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let err = stderr_of(&mut child);
    assert_eq!(
        err.trim(),
        format!(
            "warning: {}: LSNs 7..=14 were truncated away before this reader read them",
            path.display()
        )
    );
    // Its reader goes away (`| head -1`): exit 0. The pipe is made by the shell, so no other
    // process (another test's fork) can hold its read end open.
    let mut sh = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} follow {} --from 1 --idle-exit 20 | head -1; echo \"status ${{PIPESTATUS[0]}}\"",
            bin(),
            p(&path)
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sh.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "new 15");
    // Once `head` is gone, `follow` ends although the log stays idle (nothing to write into
    // the closed pipe), well before `--idle-exit` would end it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lines.next().unwrap().unwrap());
    });
    let last = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("follow did not stop when its reader went away");
    assert_eq!(last, "status 0");
    let status = sh.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Edges found by trying the tool: a record with no end (stdin from /dev/zero) is refused
/// without reading it all into memory; `--idle-exit` takes only sensible values; a name as
/// long as the file system allows can be created; `check --strict` needs a closed log.
#[test]
fn edges_of_append_follow_create_and_check() {
    let dir = tempdir();
    let path = dir.path().join("z.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    let t = Instant::now();
    let out = Command::new(bin())
        .args(["append", p(&path)])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    assert_error(
        4,
        &out,
        &path,
        "record 1 (line 1) is longer than the largest payload this log can hold (61416 bytes): \
         it and the rest of stdin were not appended",
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "it read an endless record"
    );
    // A JSON record may be longer than its payload (other fields, escapes): its bound says so.
    let out = Command::new(bin())
        .args(["append", p(&path), "--format", "json"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    assert_error(
        4,
        &out,
        &path,
        "record 1 (line 1) is longer than the 368752 bytes a --format json record may take in \
         this log (6 times the largest payload it can hold, 61416 bytes, and 256)",
    );
    for bad in ["-1", "nan", "inf", "1e300", "0"] {
        let out = daxlog(&["follow", p(&path), "--idle-exit", bad]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--idle-exit {bad}: {}",
            text(&out.stderr)
        );
    }
    let long = dir.path().join("l".repeat(250));
    ok(&["create", p(&long), "--capacity", "64KiB"]);
    assert_eq!(ok(&["append", p(&long), "--data", "x"]), "1\n");
    let log = Log::open(&path, &writer_opts()).unwrap();
    let out = daxlog(&["check", p(&path), "--strict"]);
    assert_error(4, &out, &path, "a writer has the log open");
    drop(log);
}

/// All a child wrote to its piped stderr, once it has exited.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// Appends `lsns` ("new LSN") and truncates before `before` while process `pid` (a `follow`)
/// is stopped, so that it falls behind the truncation.
fn append_while_stopped(log: &Log, pid: i32, lsns: std::ops::RangeInclusive<u64>, before: u64) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for i in lsns {
        assert_eq!(log.append(format!("new {i}").as_bytes()).unwrap(), i);
    }
    log.truncate_before(before).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

/// A `follow --lsn --from 44 --idle-exit 1` of a log of entries `old 1` ..= `old 45`, which
/// printed 44 and 45 and then said that `truncate_after(40)` deleted them: its reader is back
/// at 41. Returns the log, the child, and its output and warning lines still to come.
#[allow(clippy::type_complexity)]
fn follow_from_44_after_a_truncation_to_40(
    path: &Path,
) -> (
    Log,
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let log = Log::create(path, &Options::new().capacity(1 << 20)).unwrap();
    for i in 1..=45 {
        log.append(format!("old {i}").as_bytes()).unwrap();
    }
    let mut child = Command::new(bin())
        .args([
            "follow",
            p(path),
            "--lsn",
            "--from",
            "44",
            "--idle-exit",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut errs = BufReader::new(child.stderr.take().unwrap()).lines();
    for i in 44..=45 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("{i}\told {i}"));
    }
    log.truncate_after(40).unwrap();
    // (Its warning waited for: the reader sees what comes next apart.)
    assert_eq!(
        errs.next().unwrap().unwrap(),
        format!(
            "warning: {}: entries from LSN 41 on were deleted after this reader returned or \
             passed them",
            path.display()
        )
    );
    (log, child, lines, errs)
}

/// `follow --from N` prints nothing below N, also when a suffix truncation below N sends its
/// reader back: it says that entries it printed were deleted, and prints the new ones from N.
/// A second suffix truncation below N, before anything is printed again, deletes nothing
/// printed: one warning, for the first.
#[test]
fn follow_from_prints_nothing_below_it_and_warns_once_for_two_suffix_truncations() {
    let dir = tempdir();
    let path = dir.path().join("f.dax");
    let (log, child, lines, errs) = follow_from_44_after_a_truncation_to_40(&path);
    log.truncate_after(38).unwrap();
    for i in 39..=50 {
        log.append(format!("new {i}").as_bytes()).unwrap();
    }
    let (rest, more) = follow_ends(child, lines, errs);
    assert_eq!(rest, new_lines(44..=50));
    assert!(
        more.is_empty(),
        "a warning where nothing printed was deleted: {more:?}"
    );
}

/// What a `follow` with `--idle-exit` printed on stdout and on stderr until it exited, with 0.
fn follow_ends(
    mut child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    errs: std::io::Lines<BufReader<std::process::ChildStderr>>,
) -> (Vec<String>, Vec<String>) {
    let rest = lines.map(|l| l.unwrap()).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    (rest, errs.map(|l| l.unwrap()).collect())
}

/// `follow --lsn`'s lines for entries `new N` at `lsns`.
fn new_lines(lsns: std::ops::RangeInclusive<u64>) -> Vec<String> {
    lsns.map(|i| format!("{i}\tnew {i}")).collect()
}

/// A head truncation that overtakes `follow --from N` after a suffix truncation below N sent
/// its reader back names only the LSNs from N it took: those below N were not to be printed.
#[test]
fn follow_from_names_only_truncated_entries_from_it() {
    let dir = tempdir();
    let path = dir.path().join("f.dax");
    let (log, child, lines, errs) = follow_from_44_after_a_truncation_to_40(&path);
    // Its reader is back at 41: the head truncation takes 41..=47 before it reads them.
    append_while_stopped(&log, child.id() as i32, 41..=50, 48);
    let (rest, more) = follow_ends(child, lines, errs);
    assert_eq!(rest, new_lines(48..=50));
    assert_eq!(
        more,
        [format!(
            "warning: {}: LSNs 44..=47 were truncated away before this reader read them",
            path.display()
        )]
    );
}

/// Damage to the current metadata slot of a log written in msync mode (a byte of its epoch): a
/// writable open refuses it (exit 1) and writes nothing, where it once took the last
/// session's entries for lost and wrote padding over them (exit 0). A salvage lists them as a
/// gap (exit 3); the log keeps them.
#[test]
fn a_damaged_current_slot_stops_append() {
    use std::os::unix::fs::FileExt;
    let dir = tempdir();
    let path = dir.path().join("s.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    let out = daxlog_stdin(&["append", p(&path)], b"one\ntwo\nthree\n");
    assert_eq!(text(&out.stdout), "1\n2\n3\n", "{}", text(&out.stderr));
    let (_, slot) = common::current_slot_of(&path);
    let at = daxlog::format::Slot::offset_for(slot.seq) as u64 + 32;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[!b[0]], at).unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = daxlog(&["append", p(&path), "--data", "four"]);
    assert_error(1, &out, &path, "damage took the current slot");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the refused append wrote"
    );
    let rescued = dir.path().join("r.dax");
    let out = daxlog(&["check", p(&path), "--salvage", p(&rescued)]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 LSNs lost"),
        "{}",
        text(&out.stdout)
    );
    assert!(std::fs::read(&path).unwrap() == before, "the salvage wrote");
}

/// `check --salvage` of a log file cut short: salvaged as if zeros followed (it was refused:
/// the file is shorter than the capacity), with a warning; entries past the cut are lost and
/// counted, those before it copied, and the file itself is left as it was.
#[test]
fn a_log_file_cut_short_is_salvaged() {
    let dir = tempdir();
    let path = dir.path().join("cut.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    let lines: String = (1..=10).map(|i| format!("entry {i}\n")).collect();
    let out = daxlog_stdin(&["append", p(&path)], lines.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let len = |path: &Path| std::fs::metadata(path).unwrap().len();
    let copied: String = (1..=10).map(|i| format!("{i}\tentry {i}\n")).collect();
    // Cut after the entries (32 bytes each from 4096), then inside entry 8.
    for (cut, lost) in [(6000u64, 0u64), (4096 + 7 * 32 + 5, 3)] {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(cut).unwrap();
        let before = std::fs::read(&path).unwrap();
        let rescued = dir.path().join(format!("r{cut}.dax"));
        let out = daxlog(&["check", p(&path), "--salvage", p(&rescued)]);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(if lost > 0 { 3 } else { 0 }),
            "{err}"
        );
        assert!(
            err.starts_with(&format!(
                "warning: {}: the file is {cut} bytes, shorter than its log's capacity (65536 \
                 bytes)",
                path.display()
            )),
            "{err}"
        );
        let summary = text(&out.stdout);
        let want = if lost > 0 {
            "3 LSNs lost"
        } else {
            "nothing lost"
        };
        assert!(summary.contains(want), "{summary}");
        let keep = (10 - lost) as usize;
        assert_eq!(
            ok(&["cat", p(&rescued), "--lsn"]),
            copied
                .lines()
                .take(keep)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
        assert!(std::fs::read(&path).unwrap() == before && len(&path) == cut);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".daxlog-salvage"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// A live `cat --to 2` (beside a writer) that a head truncation of entries above 2 overtakes
/// says nothing of them: they were not to be printed.
#[test]
fn live_cat_says_nothing_of_truncated_entries_above_to() {
    let dir = tempdir();
    let path = dir.path().join("c.dax");
    let log = Log::create(&path, &Options::new().capacity(16 << 20)).unwrap();
    let big = 300_000usize;
    for i in 1..=6u8 {
        log.append(&vec![b'a' + i; big]).unwrap();
    }
    let mut child = Command::new(bin())
        .args(["cat", p(&path), "--to", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    // Entry 1 and its newline, then one byte of entry 2: the reader has returned 2 and is
    // blocked writing it (more than a pipe holds) before it looks for 3.
    let mut buf = vec![0u8; big + 2];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(buf[big + 1], b'a' + 2);
    log.truncate_before(5).unwrap();
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), big);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(stderr_of(&mut child), "", "a warning of entries above --to");
}

/// `follow` whose stderr is a closed pipe: its warning (a truncation it fell behind) goes
/// nowhere, and it goes on (it once panicked writing it, exit 101).
#[test]
fn follow_goes_on_when_its_warnings_cannot_be_written() {
    let dir = tempdir();
    let path = dir.path().join("f.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    let mut child = Command::new(bin())
        .args(["follow", p(&path), "--lsn", "--from", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    log.append(b"new 1").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "1\tnew 1");
    let pid = child.id() as i32;
    append_while_stopped(&log, pid, 2..=9, 6);
    for i in 6..=9 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("{i}\tnew {i}"));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `follow --idle-exit` waits as long as asked (at least), and ends with what it printed.
#[test]
fn follow_idle_exit_waits_as_long_as_asked() {
    let dir = tempdir();
    let path = dir.path().join("idle.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    ok(&["append", p(&path), "--data", "x"]);
    // A lower bound holds however loaded the machine is.
    let t = Instant::now();
    assert_eq!(ok(&["follow", p(&path), "--idle-exit", "0.25"]), "");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // (That it ends when its time is up, not at the next tenth of a second, is checked on the
    // wait it computes, in src/cli/follow.rs: an upper bound on a process's run time here
    // would depend on the machine's load.)
    assert_eq!(
        ok(&["follow", p(&path), "--from", "1", "--idle-exit", "0.01"]),
        "x\n"
    );
    // A version-1 log has no published end: "from now on" is after its last valid entry
    // still, not from its first.
    common::mark_version_1(&path);
    assert_eq!(ok(&["follow", p(&path), "--idle-exit", "0.01"]), "");
    assert_eq!(
        ok(&["follow", p(&path), "--from", "1", "--idle-exit", "0.01"]),
        "x\n"
    );
}

/// `bench --dir` names a directory: a missing one and a file are told apart.
#[test]
fn bench_dir_must_be_a_directory() {
    let dir = tempdir();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert_error(
        4,
        &daxlog(&["bench", "--dir", p(&file)]),
        &file,
        "not a directory",
    );
    let missing = dir.path().join("missing");
    assert_error(
        4,
        &daxlog(&["bench", "--dir", p(&missing)]),
        &missing,
        "not found: no such directory",
    );
}

/// Damage seen by a live read (a writer has the log open): the message does not claim that
/// nothing lies beyond it, and says when `check` can search further.
#[test]
fn live_damage_says_the_rest_was_not_searched() {
    use std::os::unix::fs::FileExt;
    let dir = tempdir();
    let path = dir.path().join("live.dax");
    let log = Log::create(&path, &Options::new().capacity(64 << 10)).unwrap();
    for i in 1..=10 {
        log.append(format!("entry {i:02}").as_bytes()).unwrap();
    }
    // One payload byte of LSN 5 (entries of 8 bytes: 32 bytes on media each).
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"\xff", 4096 + 32 * 4 + 24).unwrap();
    let out = daxlog(&["check", p(&path)]);
    assert_error(1, &out, &path, "corrupted at LSN 5");
    let err = text(&out.stderr);
    assert!(
        err.contains("the entries beyond it were not searched"),
        "{err}"
    );
    assert!(!err.contains("no valid entry found"), "{err}");
    // Closed, the same check finds the five entries after it.
    drop(log);
    // (Another test of this process that spawns a child at this moment holds a reference to
    // the log's open file description, and so its write lock, until the child's exec closes
    // it: under load the check may still see a writer for a moment.)
    let mut out = daxlog(&["check", p(&path)]);
    for _ in 0..50 {
        if !text(&out.stderr).contains("read live") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        out = daxlog(&["check", p(&path)]);
    }
    assert_error(1, &out, &path, "5 valid entries lie beyond it");
}

/// A `DAXLOG_*` variable with a value it does not accept stops every command that reads the
/// environment with a usage error naming the variable, its value and what it accepts, before
/// the log is touched: it is never ignored. The readers that read no variable are unaffected.
#[test]
fn malformed_environment_variables_are_usage_errors() {
    let dir = tempdir();
    let path = dir.path().join("env.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    ok(&["append", p(&path), "--data", "one"]);
    let new = dir.path().join("new.dax");
    for (name, value, expected) in [
        (
            "DAXLOG_TAIL_HINT_EVERY",
            "abc",
            "a whole number of bytes, from 0 (0: no tail hint)",
        ),
        (
            "DAXLOG_FLUSH",
            "clwbb",
            "clwb, clflushopt or clflush (in any case)",
        ),
        (
            "DAXLOG_NT_THRESHOLD",
            "-1",
            "a whole number of bytes, from 0",
        ),
        (
            "DAXLOG_FORCE_MSYNC",
            "2",
            "1, true, yes or on; 0, false, no or off (in any case)",
        ),
        ("DAXLOG_MAP_ALIGN", "huge", "page (in any case)"),
        (
            "DAXLOG_YIELD_WAIT",
            "sometimes",
            "1, true, yes or on; 0, false, no or off (in any case)",
        ),
    ] {
        for args in [
            vec!["create", p(&new)],
            vec!["append", p(&path), "--data", "two"],
            vec!["truncate", p(&path), "--before", "2"],
            vec!["reset", p(&path)],
            vec!["info", p(&path)],
        ] {
            let out = daxlog_env(&args, &[(name, value)]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {name}={value}: {err}");
            assert_eq!(
                err,
                format!(
                    "error: environment variable {name}=\"{value}\" is not valid: expected \
                     {expected}\n"
                ),
                "{args:?}"
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        assert!(!new.exists());
        assert_eq!(
            text(&daxlog_env(&["dump", p(&path)], &[(name, value)]).stdout),
            "1\t6f6e65\n"
        );
    }
    // Variables that contradict each other.
    let out = daxlog_env(
        &["append", p(&path), "--data", "two"],
        &[("DAXLOG_FORCE_MSYNC", "1"), ("DAXLOG_FORCE_CPU_FLUSH", "1")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("DAXLOG_FORCE_CPU_FLUSH=\"1\""));
    assert_eq!(ok(&["dump", p(&path)]), "1\t6f6e65\n");
}

/// `create --prefill` writes every block of the new file (no unwritten extent where the file
/// system has them) and gives a log like any other.
#[test]
fn create_prefill_writes_every_block() {
    let dir = tempfile::Builder::new()
        .prefix("daxlog-cli")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let plain = dir.path().join("plain.dax");
    let filled = dir.path().join("filled.dax");
    // (16 MiB: without `--prefill` a log writes its first chunks, 4 MiB, as it opens.)
    ok(&["create", p(&plain), "--capacity", "16MiB"]);
    let out = ok(&["create", p(&filled), "--capacity", "16MiB", "--prefill"]);
    assert!(out.contains("capacity 16777216 bytes"), "{out}");
    let v = info_json(&filled);
    assert_eq!(
        (v["entries"].as_u64(), v["capacity"].as_u64()),
        (Some(0), Some(16 << 20))
    );
    match (
        common::has_unwritten_extents(&plain),
        common::has_unwritten_extents(&filled),
    ) {
        (Some(true), Some(unwritten)) => assert!(!unwritten, "unwritten extents after --prefill"),
        other => eprintln!("note: cannot tell unwritten extents here ({other:?}); not checked"),
    }
}

/// Every option of every command's `--help` is described in that command's section of
/// docs/CLI.md (as `` `--option``), so that a new flag cannot ship undocumented.
#[test]
fn every_option_is_documented() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLI.md")).unwrap();
    let section = |cmd: &str| -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in docs.lines() {
            if let Some(heading) = line.strip_prefix("## ") {
                inside = heading.split(", ").any(|h| h == cmd);
            } else if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    };
    let mut missing = Vec::new();
    for cmd in [
        "create", "append", "dump", "cat", "follow", "info", "check", "truncate", "reset", "bench",
    ] {
        let help = text(&daxlog(&[cmd, "--help"]).stdout);
        let sec = section(cmd);
        assert!(!sec.is_empty(), "docs/CLI.md has no section for {cmd}");
        for line in help.lines() {
            // Option lines: `--long ...` or `-s, --long ...` (not prose that starts with `-`).
            let t = line.trim_start();
            let t = match t.as_bytes() {
                [b'-', s, b',', b' ', ..] if s.is_ascii_alphanumeric() => &t[4..],
                _ => t,
            };
            let Some(long) = t.strip_prefix("--") else {
                continue;
            };
            let end = long
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(long.len());
            let long = &t[..end + 2];
            // (The global options are documented once, at the top.)
            if ["--help", "--verbose", "--version", "--lock-wait"].contains(&long) {
                continue;
            }
            if !sec.contains(&format!("`{long}")) {
                missing.push(format!("{cmd} {long}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/CLI.md: {missing:?}");
    assert!(docs.contains("`--lock-wait S`"), "docs/CLI.md: --lock-wait");
}

/// A read waits (with `--lock-wait`) for a replacement of the file in progress, which a
/// writer's presence does not make it do: the test holds the locks `create --force` holds
/// while it builds the new log (an exclusive `flock` and the OFD write lock on byte 1).
#[test]
fn reads_wait_for_a_replacement_in_progress() {
    let dir = tempdir();
    let path = dir.path().join("r.dax");
    ok(&["create", p(&path), "--capacity", "1MiB"]);
    ok(&["append", p(&path), "--data", "kept"]);
    let held = common::hold_replacement_locks(&path);
    // Without a wait: refused at once.
    let out = daxlog(&["cat", p(&path)]);
    assert_error(
        4,
        &out,
        &path,
        "locked by a replacement of the file in progress",
    );
    // Not taken for a writer (whose presence sends `check --strict` away, and `check` to
    // read live).
    for args in [&["check", p(&path), "--strict"][..], &["check", p(&path)]] {
        let out = daxlog(args);
        assert_error(
            4,
            &out,
            &path,
            "locked by a replacement of the file in progress",
        );
    }
    // With one: it reads once the replacement is over (here: the locks are given back).
    let waiting = Waiting::start(&["cat", p(&path), "--lock-wait", "60"]);
    let found_locked = waiting.said_it_waits();
    drop(held);
    let (status, stdout, stderr) = waiting.finish();
    assert!(found_locked, "cat never said it waited: {stderr}");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "kept\n");
}

/// A `daxlog -v ARGS` run that is expected to wait for a lock.
struct Waiting {
    child: std::process::Child,
    heard: mpsc::Receiver<()>,
    listener: std::thread::JoinHandle<String>,
}

impl Waiting {
    fn start(args: &[&str]) -> Waiting {
        let mut child = Command::new(bin())
            .arg("-v")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (said, heard) = mpsc::channel();
        let listener = std::thread::spawn(move || {
            let mut all = String::new();
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("locked, waiting") {
                    let _ = said.send(());
                }
                all += &line;
                all.push('\n');
            }
            all
        });
        Waiting {
            child,
            heard,
            listener,
        }
    }

    /// Whether it said (within 60 s) that it found the log locked and waits.
    fn said_it_waits(&self) -> bool {
        self.heard.recv_timeout(Duration::from_secs(60)).is_ok()
    }

    /// Its exit status, stdout and stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        (status, stdout, self.listener.join().unwrap())
    }
}

/// `info` says what the reader area vouches for: every entry, after a writer that flushes
/// through the CPU cache; nothing after one that syncs with msync (it withdraws what an
/// earlier writer vouched for).
#[test]
fn info_shows_what_the_writer_vouched_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.dax");
    let cpu = [("DAXLOG_FORCE_CPU_FLUSH", "1")];
    assert!(daxlog_env(&["create", p(&path)], &cpu).status.success());
    let out = daxlog_env(&["append", p(&path), "--data", "one"], &cpu);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: Value = serde_json::from_str(&ok(&["info", p(&path), "--json"])).unwrap();
    assert_eq!(
        (info["published_lsn"].clone(), info["vouched_lsn"].clone()),
        (2.into(), 2.into())
    );
    let rows = ok(&["info", p(&path)]);
    assert!(
        rows.lines().any(|l| {
            l
            == "vouched:        LSN 2 (every entry below it acknowledged: damage there is refused)"
        }),
        "{rows}"
    );
    let msync = [("DAXLOG_FORCE_MSYNC", "1")];
    let out = daxlog_env(&["append", p(&path), "--data", "two"], &msync);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: Value = serde_json::from_str(&ok(&["info", p(&path), "--json"])).unwrap();
    assert_eq!(
        (info["published_lsn"].clone(), info["vouched_lsn"].clone()),
        (3.into(), Value::Null)
    );
    assert!(ok(&["info", p(&path)])
        .contains("vouched:        none (no words on media vouch: a writer in msync mode"));
}

/// Damage that took the current metadata slot (the writer vouched for entries its older copy
/// does not lead to): `info` names the slot as where the damage is, and the tail as where the
/// readable entries end, not the tail as the place of the damage.
#[test]
fn info_names_a_damaged_slot_where_the_damage_is() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.dax");
    let cpu = [("DAXLOG_FORCE_CPU_FLUSH", "1")];
    assert!(daxlog_env(&["create", p(&path)], &cpu).status.success());
    let out = daxlog_env(&["append", p(&path), "--data", "one"], &cpu);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, slot) = common::current_slot_of(&path);
    let at = daxlog::format::Slot::offset_for(slot.seq) as u64;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0x5a; 8], at + 16).unwrap();
    drop(f);
    let out = daxlog(&["info", p(&path)]);
    assert!(!out.status.success());
    let rows = text(&out.stdout);
    let tail = rows
        .lines()
        .find(|l| l.starts_with("tail:"))
        .unwrap_or_else(|| panic!("no tail row: {rows}"));
    assert!(
        tail.ends_with(&format!(
            "damaged: the readable entries end at offset {}; the current metadata slot at \
             offset {at} is damaged (see damage)",
            daxlog::format::DATA_OFFSET
        )),
        "{tail}"
    );
    assert!(
        rows.lines()
            .any(|l| l.starts_with("damage:") && l.contains(&format!("at offset {at}"))),
        "{rows}"
    );
}

/// A log whose entries reach the end of the file is full only if nothing is free before its
/// first entry: `check` and `info` say where the next append goes otherwise.
#[test]
fn entries_at_the_end_of_the_file_are_not_a_full_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.dax");
    ok(&["create", p(&path), "--capacity", "8k"]);
    // 2024 + 2064 bytes on media: the second entry ends 8 bytes before the end of the file.
    let input = format!("{}\n{}\n", "a".repeat(2000), "b".repeat(2040));
    let out = daxlog_stdin(&["append", p(&path)], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let full = ok(&["check", p(&path)]);
    assert!(
        full.trim_end()
            .ends_with("; the entries reach the end of the file and the log is full"),
        "{full}"
    );
    ok(&["truncate", p(&path), "--before", "2"]);
    let want = "the entries reach the end of the file; the next append goes to offset 4096 \
                (2016 bytes free there in one piece)";
    let checked = ok(&["check", p(&path)]);
    assert!(
        checked.trim_end().ends_with(&format!("; {want}")),
        "{checked}"
    );
    let rows = ok(&["info", p(&path)]);
    assert!(
        rows.lines()
            .any(|l| l.starts_with("tail:") && l.ends_with(want)),
        "{rows}"
    );
    assert_eq!(ok(&["append", p(&path), "--data", "hello"]), "3\n");
    // Room for no entry before the first one (8 bytes stay free before it): full. A 4040-byte
    // payload after an empty entry fills the data area to its last 8 bytes.
    let path = dir.path().join("f.dax");
    ok(&["create", p(&path), "--capacity", "8k"]);
    ok(&["append", p(&path), "--data", ""]);
    let input = "c".repeat(4040);
    let out = daxlog_stdin(&["append", p(&path), "--format", "nul"], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    ok(&["truncate", p(&path), "--before", "2"]);
    let checked = ok(&["check", p(&path)]);
    assert!(
        checked
            .trim_end()
            .ends_with("; the entries reach the end of the file and the log is full"),
        "{checked}"
    );
    assert_error(
        4,
        &daxlog(&["append", p(&path), "--data", ""]),
        &path,
        "log full",
    );
}

/// A version-1 log has no reader area: `info` shows no published or vouched LSN, whatever the
/// bytes there hold (here a later writer's words, left when the superblocks said 1).
#[test]
fn info_reads_no_reader_area_in_a_version_1_log() {
    let dir = tempdir();
    let path = dir.path().join("v1.dax");
    let cpu = [("DAXLOG_FORCE_CPU_FLUSH", "1")];
    assert!(daxlog_env(&["create", p(&path)], &cpu).status.success());
    assert!(daxlog_env(&["append", p(&path), "--data", "x"], &cpu)
        .status
        .success());
    common::mark_version_1(&path);
    let info: Value = serde_json::from_str(&ok(&["info", p(&path), "--json"])).unwrap();
    assert_eq!(info["format_version"], 1);
    assert_eq!(
        (info["published_lsn"].clone(), info["vouched_lsn"].clone()),
        (Value::Null, Value::Null)
    );
    assert!(ok(&["info", p(&path)])
        .lines()
        .any(|l| l
            == "published:      none (no writer of format version 2 or later has opened the log)"));
}

/// Padding (left by an appender that panicked, or by a salvage) takes LSNs but is no entry:
/// `truncate` and `reset` count it apart.
#[test]
fn truncate_counts_padding_apart() {
    let dir = tempdir();
    let path = dir.path().join("pad.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    log.append(b"one").unwrap();
    assert_eq!(log.append_padding(2).unwrap(), 2..4);
    log.append(b"four").unwrap();
    log.append(b"five").unwrap();
    drop(log);
    assert_eq!(
        ok(&["truncate", p(&path), "--before", "4"]),
        format!(
            "{}: dropped 1 entry and 2 padding entries (LSN 1..=3); entries 4..=5, next LSN 6\n",
            path.display()
        )
    );
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(log.append_padding(1).unwrap(), 6..7);
    drop(log);
    assert_eq!(
        ok(&["truncate", p(&path), "--after", "5"]),
        format!(
            "{}: dropped 0 entries and 1 padding entry (LSN 6); entries 4..=5, next LSN 6\n",
            path.display()
        )
    );
    assert_eq!(
        ok(&["reset", p(&path)]),
        format!(
            "{}: dropped 2 entries (LSN 4..=5); empty, next LSN 6\n",
            path.display()
        )
    );
}

/// A command that changed the log and then could not print its report says that it was done,
/// not that it failed.
#[test]
fn a_done_change_whose_report_cannot_be_printed_says_it_was_done() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("no /dev/full here: not checked");
        return;
    };
    let dir = tempdir();
    let path = dir.path().join("d.dax");
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .stdout(full.try_clone().unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = run(&["create", p(&path), "--capacity", "64KiB"]);
    assert_error(
        4,
        &out,
        &path,
        "the log was created, but its report could not be printed",
    );
    ok(&["append", p(&path), "--data", "one"]);
    ok(&["append", p(&path), "--data", "two"]);
    let out = run(&["truncate", p(&path), "--before", "2"]);
    assert_error(
        4,
        &out,
        &path,
        "the truncation was done, but its report could not be printed",
    );
    assert_eq!(ok(&["cat", p(&path)]), "two\n");
    let out = run(&["reset", p(&path)]);
    assert_error(
        4,
        &out,
        &path,
        "the reset was done, but its report could not be printed",
    );
    assert_eq!(ok(&["cat", p(&path)]), "");
    // A reader of stdout that went away did not want the report: exit 0, quietly.
    ok(&["append", p(&path), "--data", "three"]);
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let out = Command::new(bin())
        .args(["truncate", p(&path), "--before", "4"])
        .stdout(std::fs::File::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert_eq!(ok(&["cat", p(&path)]), "");
}

/// `append --data` takes its bytes as given, UTF-8 or not.
#[test]
fn append_data_takes_any_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempdir();
    let path = dir.path().join("raw.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    let raw = std::ffi::OsStr::from_bytes(b"\xff\x01\xfe");
    let out = Command::new(bin())
        .args(["append".as_ref(), path.as_os_str(), "--data".as_ref(), raw])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1\n");
    assert_eq!(ok(&["dump", p(&path)]), "1\tff01fe\n");
}

/// `info` on a damaged log that a writer has open (read live) shows what it read before the
/// damage and where the damage is, then exits 1, as it does offline.
#[test]
fn info_shows_live_damage_in_its_rows() {
    let dir = tempdir();
    let path = dir.path().join("live.dax");
    ok(&["create", p(&path), "--capacity", "64KiB"]);
    let writer = Log::open(&path, &writer_opts()).unwrap();
    for i in 1..=4 {
        writer.append(format!("entry {i:02}").as_bytes()).unwrap(); // 32 bytes each
    }
    flip(&path, 4096 + 2 * 32 + 24 + 2); // LSN 3's payload
    let out = daxlog(&["info", p(&path)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let rows = text(&out.stdout);
    for want in [
        "writer:         has the log open",
        "entries:        2",
        "damage:         at offset 4160, LSN 3: ",
        "next LSN:       5",
        "padding:        0",
    ] {
        assert!(
            rows.lines().any(|l| l.starts_with(want)),
            "{want:?} in {rows}"
        );
    }
    assert!(text(&out.stderr).contains("LSN 3"), "{}", text(&out.stderr));
    let out = daxlog(&["info", p(&path), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        (v["entries"].clone(), v["damage"]["lsn"].clone()),
        (2.into(), 3.into())
    );
    drop(writer);
}

/// Every checksum kernel this CPU runs reads back what every other wrote, and stops at the
/// same damage: a kernel changes how fast checksums are computed, never what they are. The
/// writers store every entry with non-temporal stores, so entries from 512 bytes on are
/// checksummed by the fused copy, and `info` checks every entry as recovery does.
#[test]
fn every_checksum_kernel_reads_what_every_other_wrote() {
    let dir = tempdir();
    let probe = dir.path().join("probe.dax");
    ok(&["create", p(&probe), "--capacity", "1M"]);
    let mut kernels = Vec::new();
    for k in ["portable", "clmul128", "clmul256", "clmul512"] {
        let out = daxlog_env(&["info", p(&probe), "--json"], &[("DAXLOG_KERNEL", k)]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                (&v["crc_kernel"], &v["copy_kernel"]),
                (&json!(k), &json!(k))
            );
            kernels.push(k);
        } else {
            // A kernel this CPU does not run is refused, not ignored.
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(
                err.contains("DAXLOG_KERNEL") && err.contains("this CPU runs"),
                "{err}"
            );
        }
    }
    assert!(
        kernels.len() >= 2 && kernels[0] == "portable",
        "{kernels:?}"
    );
    // Sizes on both sides of the inline checksum (256 B), the fused copy (512 B) and the
    // vector loops' steps, up to 64 KiB.
    let sizes = [
        1usize, 200, 256, 257, 300, 511, 512, 777, 1024, 4095, 4096, 5000, 65536, 40, 3333,
    ];
    let payload = |i: usize, n: usize| -> Vec<u8> {
        (0..n)
            .map(|j| (j.wrapping_mul(131) ^ i.wrapping_mul(7919) ^ (j >> 5)) as u8)
            .collect()
    };
    let input: String = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| hex(&payload(i, n)) + "\n")
        .collect();
    // The payload of the 4096-byte entry (the 11th), a little after its start.
    let damaged_at = 4096
        + sizes[..10]
            .iter()
            .map(|n| (24 + n).next_multiple_of(8))
            .sum::<usize>()
        + 24
        + 2000;
    let writer = |k: &str| {
        [
            ("DAXLOG_KERNEL", k.to_string()),
            ("DAXLOG_FORCE_CPU_FLUSH", "1".into()),
            ("DAXLOG_NT_THRESHOLD", "0".into()),
        ]
    };
    for w in &kernels {
        let log = dir.path().join(format!("{w}.dax"));
        ok(&["create", p(&log), "--capacity", "4M"]);
        let vars = writer(w);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut c = Command::new(bin());
        c.args(["append", p(&log), "--format", "hex"])
            .envs(vars.iter().copied());
        let out = output_with_stdin(c, input.as_bytes());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lsns: Vec<u64> = text(&out.stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(lsns, (1..=sizes.len() as u64).collect::<Vec<_>>());
        let read = |r: &str| -> Value {
            let out = daxlog_env(&["info", p(&log), "--json"], &[("DAXLOG_KERNEL", r)]);
            serde_json::from_slice(&out.stdout).unwrap()
        };
        for r in &kernels {
            let v = read(r);
            assert_eq!(v["crc_kernel"], json!(r));
            assert_eq!(
                v["entries"],
                json!(sizes.len()),
                "written with {w}, read with {r}"
            );
            assert_eq!(v["tail_state"], "clean", "written with {w}, read with {r}");
        }
        // What the entries hold, byte for byte.
        let dump = ok(&["dump", p(&log)]);
        for (i, line) in dump.lines().enumerate() {
            let (lsn, data) = line.split_once('\t').unwrap();
            assert_eq!(lsn, (i + 1).to_string());
            assert_eq!(data, hex(&payload(i, sizes[i])), "entry {}", i + 1);
        }
        // One flipped bit in a payload: every kernel stops at that entry.
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[damaged_at] ^= 0x10;
        std::fs::write(&log, &bytes).unwrap();
        for r in &kernels {
            let v = read(r);
            assert_eq!(
                v["entries"],
                json!(10),
                "written with {w}, read with {r}: {v}"
            );
            assert_eq!(
                v["tail_state"], "damaged",
                "written with {w}, read with {r}"
            );
            assert_eq!(
                v["damage"]["lsn"],
                json!(11),
                "written with {w}, read with {r}"
            );
        }
    }
}
