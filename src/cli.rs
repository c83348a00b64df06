//! Command-line arguments (stub).
