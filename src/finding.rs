//! Findings: what a read of the card found worth telling the user.
//!
//! Every domain layer reports problems as [`Finding`] values instead of printing. A finding has a
//! stable machine-readable `code` (part of the `--json` schema; never renamed once shipped), a
//! severity, a one-line message with the evidence, and advice saying what to do.

use serde::Serialize;

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, nothing to fix.
    Info,
    /// The card boots, but something is risky or stale.
    Warning,
    /// The card will not boot as intended, or pifw cannot trust what it read.
    Error,
}

/// One thing found on the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier, kebab-case, e.g. `gpt-primary-crc`, `uboot-too-old`.
    pub code: String,
    /// What was found, with the evidence (numbers, names).
    pub message: String,
    /// What the user should do about it, when there is something to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

impl Finding {
    pub fn new(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        Finding {
            severity,
            code: code.to_string(),
            message: message.into(),
            advice: None,
        }
    }

    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn warning(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    pub fn info(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Info, code, message)
    }

    /// Attaches advice: what the user should do.
    pub fn advice(mut self, advice: impl Into<String>) -> Self {
        self.advice = Some(advice.into());
        self
    }
}
