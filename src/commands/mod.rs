//! Commands, one file per verb (stub).
