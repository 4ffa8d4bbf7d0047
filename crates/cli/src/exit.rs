//! Exit codes and the one-line failures the CLI prints.

use proto::{ErrorCode, ErrorReply};
use std::process::ExitCode;

/// Exit codes (also in `--help` and docs/CLI.md).
pub const HELP: &str = "\
Exit codes:
  0  done (also: `inspect` of a free disk)
  1  virtdlmd refused or failed the request (VM still running, unknown VM, owning node
     unreachable, ...)
  2  bad usage or bad input (unknown option, path that cannot be resolved, overlong name)
  3  virtdlmd cannot be reached (not running, socket missing, other protocol version)
  4  not allowed: the request needs the control socket (run as root)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Refused = 1,
    BadInput = 2,
    Unreachable = 3,
    NotAllowed = 4,
}

/// A failure: one line for a person, its exit code, and its class for `--json`.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, kind: &'static str, message: impl Into<String>) -> Self {
        Failure { code, kind, message: message.into() }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Failure::new(Code::BadInput, "bad_input", message)
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Failure::new(Code::Refused, "refused", message)
    }

    /// The daemon's error answer.
    pub fn from_reply(e: ErrorReply) -> Self {
        let (code, kind) = match e.code {
            ErrorCode::BadRequest | ErrorCode::FrameTooLarge => (Code::BadInput, "bad_input"),
            ErrorCode::Version => (Code::Unreachable, "version"),
            ErrorCode::Unauthorized => (Code::NotAllowed, "unauthorized"),
            ErrorCode::Busy => (Code::Refused, "busy"),
            ErrorCode::UnknownOwner => (Code::Refused, "unknown_vm"),
            ErrorCode::Conflict => (Code::Refused, "conflict"),
            ErrorCode::NodeUnreachable => (Code::Refused, "node_unreachable"),
            _ => (Code::Refused, "failed"),
        };
        Failure { code, kind, message: e.message }
    }

    pub fn exit(&self, json: bool) -> ExitCode {
        eprintln!("virtdlm: {}", self.message);
        if json {
            let v =
                serde_json::json!({ "error": { "kind": self.kind, "message": self.message, "exit": self.code as u8 } });
            out!("{v}");
        }
        ExitCode::from(self.code as u8)
    }
}
