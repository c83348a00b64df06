//! `pifw partition hybrid|mbr`: GPT plus a hybrid MBR the Pi 3's boot ROM reads, and back.

use super::Exit;
use crate::cli::{Cli, PartitionCommand};
use crate::manifest::Manifests;

pub fn run(_cli: &Cli, _manifests: &Manifests, cmd: &PartitionCommand) -> anyhow::Result<Exit> {
    match cmd {
        PartitionCommand::Hybrid { .. } | PartitionCommand::Mbr { .. } => {
            anyhow::bail!("pifw partition is not implemented in this build (nothing was written)")
        }
    }
}
