//! The `daxlog` command-line tool. Everything is in the library's [`daxlog::cli`] module;
//! see `docs/CLI.md`.

fn main() -> std::process::ExitCode {
    daxlog::cli::main()
}
