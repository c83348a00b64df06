//! The read path assembled into one report (stub, filled by the status work).
