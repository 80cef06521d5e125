//! [`Secret`]: a value that must not reach logs, panics or `{:?}` of the struct holding it
//! (database URLs with passwords, tokens). Reading it takes a deliberate [`Secret::expose`].

use std::fmt;

/// What [`Secret`]'s `Debug` and `Display` print instead of the value.
pub const REDACTED: &str = "(redacted)";

/// A value that prints as `(redacted)`, so the settings holding it can `#[derive(Debug)]`.
#[derive(Clone, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that uses it (a connection, a header).
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Settings {
        database_url: Secret<String>,
    }

    #[test]
    fn a_secret_prints_as_redacted_and_is_read_only_through_expose() {
        let settings = Settings { database_url: Secret::new("postgres://app:hunter2@db/shop".to_owned()) };
        let url = &settings.database_url;
        assert_eq!(format!("{url} {url:?}"), "(redacted) (redacted)");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2") && printed.contains(REDACTED), "{printed}");
        assert_eq!(url.expose(), "postgres://app:hunter2@db/shop");
        assert_eq!(Secret::from(7).into_inner(), 7);
    }
}
