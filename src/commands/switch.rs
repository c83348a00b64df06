//! `pifw switch uefi|uboot`: move the boot chain to the pftf UEFI firmware and back.

use super::Exit;
use crate::cli::{Cli, SwitchCommand};
use crate::manifest::Manifests;

pub fn run(_cli: &Cli, _manifests: &Manifests, cmd: &SwitchCommand) -> anyhow::Result<Exit> {
    match cmd {
        SwitchCommand::Uefi { .. } | SwitchCommand::Uboot { .. } => {
            anyhow::bail!("pifw switch is not implemented in this build (nothing was written)")
        }
    }
}
