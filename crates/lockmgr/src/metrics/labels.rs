//! The label sets of virtdlmd's metrics, and the fixed values some labels take.

use crate::registry::RegistryError;
use prometheus_client::encoding::EncodeLabelSet;
use proto::mode::Mode;

/// A lock mode as `virtdlm locks` shows it (`CR`, `CW`, `PR`, `EX`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: &'static str,
}

impl ModeLabel {
    pub fn of(mode: Mode) -> Self {
        ModeLabel { mode: mode.as_str() }
    }
}

/// A lock of the cluster inventory: its node and mode.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeModeLabels {
    pub node: String,
    pub mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// A lock-loss event's reason (`status`'s `reason.kind`: `quorum_lost`, `left_membership`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabels {
    pub reason: String,
}

/// What became of one VM on lock loss (`status`'s `vms[].outcome`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Every outcome of a VM on lock loss (`crate::lockloss`'s `outcome_name` and `targets`).
pub const OUTCOMES: [&str; 7] = ["ignored", "paused", "terminated", "killed", "survived", "gone", "unreachable"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: &'static str,
}

/// Why an acquire was refused, as the `reason` label of `virtdlm_acquire_refusals_total`.
pub fn refusal_reason(e: &RegistryError) -> &'static str {
    match e {
        RegistryError::Conflict { .. } => "conflict",
        RegistryError::Quarantined(_) => "quarantined",
        RegistryError::Backend(_) => "backend",
        RegistryError::Journal(_) => "journal",
        RegistryError::OwnerGone(_) => "owner_gone",
        RegistryError::OutOfOrder(_) => "out_of_order",
        RegistryError::BadRequest(_) => "bad_request",
        RegistryError::UnknownOwner(_) => "unknown_owner",
        RegistryError::Busy(_) => "busy",
        RegistryError::NodeUnreachable(_) => "node_unreachable",
    }
}

/// Every value of [`refusal_reason`].
pub const REFUSAL_REASONS: [&str; 10] = [
    "conflict",
    "quarantined",
    "backend",
    "journal",
    "owner_gone",
    "out_of_order",
    "bad_request",
    "unknown_owner",
    "busy",
    "node_unreachable",
];

/// Every lock-loss reason (`crate::lockloss::LossReason::wire`'s kinds).
pub const LOSS_REASONS: [&str; 6] =
    ["quorum_lost", "left_membership", "corosync_lost", "lockspace_failed", "unconfirmed", "controld_lost"];

/// Every value of the `verdict` label (`corosync::Verdict`, ring ids left out).
pub const VERDICTS: [&str; 6] = ["safe", "not-joined", "no-quorum-yet", "inquorate", "settling", "lost"];
