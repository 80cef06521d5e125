//! Terminal output of the CLI. Progress and errors go to stderr, results to stdout, so
//! `TOKEN=$(observastack token)` captures only the token.

use std::io::Write;

pub fn stdout_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

pub fn progress(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "  {text}");
}

pub fn step(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "• {text} … ");
    let _ = err.flush();
}

pub fn done(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

pub fn error(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {text}");
}
