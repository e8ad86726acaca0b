//! Engine errors.

use std::fmt;

/// Everything that can go wrong inside the engine. Errors carry what was expected and what
/// was found so that a caller can print them as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Two shapes that must agree do not.
    Shape {
        op: &'static str,
        expected: String,
        found: String,
    },
    /// An operation was given tensors on different devices, or a device cannot run it.
    Device(String),
    /// A value that must be finite is not (NaN or infinite loss, for example).
    NonFinite(String),
    /// Anything else: a bad argument to an op, a misuse of the tape.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape {
                op,
                expected,
                found,
            } => write!(f, "{op}: expected shape {expected}, found {found}"),
            Error::Device(m) => write!(f, "device error: {m}"),
            Error::NonFinite(m) => write!(f, "non-finite value: {m}"),
            Error::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Engine result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a shape error.
pub(crate) fn shape_err<T>(
    op: &'static str,
    expected: impl Into<String>,
    found: &[usize],
) -> Result<T> {
    Err(Error::Shape {
        op,
        expected: expected.into(),
        found: format!("{found:?}"),
    })
}
