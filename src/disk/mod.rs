//! Disks: opening a target and finding candidate disks.
//!
//! A target is a whole-disk image file or a block device ([`target`]). Reading never writes:
//! status opens the target read-only, so it works on a write-protected card. The
//! partition-table formats live in [`table`]; the host's view (device-tree model, disks in
//! sysfs) in [`host`].

pub mod host;
pub mod live;
pub mod lock;
pub mod mounts;
pub mod table;
pub mod target;
