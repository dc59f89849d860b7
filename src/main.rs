//! The `cf-allowlist` binary: everything happens in the library's [`cf_allowlist::run`].

fn main() {
    std::process::exit(cf_allowlist::run(std::env::args_os()).code());
}
