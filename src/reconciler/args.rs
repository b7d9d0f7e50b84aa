use std::time::Duration;

use clap::{ArgAction, Args};

/// Flags of the reconciler, flattened into `serve`.
#[derive(Debug, Clone, Args)]
pub struct ReconcilerArgs {
    /// Attachments reconciled at once, and ephemeral-container patches in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: u16,
    /// Client-side limit on ephemeral-container patches (dry runs included), per second.
    #[arg(long, default_value_t = 200.0)]
    pub patch_qps: f64,
    /// Whisperers attached to one pod by one Attachment at most: when one terminates
    /// without a detach, the next generation replaces it until this many were used.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub max_generations: u32,
    /// Every Attachment is reconciled at least this often, repairing any drift.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// Attach opted-in pods that missed the webhook at runtime (ephemeral container
    /// `whisperer-backstop`); without it they are only reported.
    #[arg(long)]
    pub backstop_attach: bool,
    /// How often the backstop looks for opted-in pods without the webhook's marker.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub backstop_interval: Duration,
    /// Only the holder of the `whisperer-injector` Lease reconciles (`--leader-election=false`
    /// for a single replica).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the Lease; the injector's own namespace when unset.
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// This replica's identity in the Lease; `$POD_NAME` (or the host name) plus a random
    /// suffix when unset.
    #[arg(long)]
    pub leader_election_identity: Option<String>,
    /// How long a Lease stays valid without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,
    /// A leader that could not renew for this long stops reconciling (less than the lease
    /// duration).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_election_renew_deadline: Duration,
    /// How often the Lease is renewed, or tried by a standby.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_election_retry_period: Duration,
}

impl Default for ReconcilerArgs {
    /// The same values as the flags' defaults (a unit test keeps them equal).
    fn default() -> Self {
        ReconcilerArgs {
            reconcile_concurrency: 8,
            patch_qps: 200.0,
            max_generations: 3,
            resync_interval: Duration::from_secs(300),
            backstop_attach: false,
            backstop_interval: Duration::from_secs(30),
            leader_election: true,
            leader_election_namespace: None,
            leader_election_identity: None,
            leader_election_lease_duration: Duration::from_secs(15),
            leader_election_renew_deadline: Duration::from_secs(10),
            leader_election_retry_period: Duration::from_secs(2),
        }
    }
}

impl ReconcilerArgs {
    /// Checks what clap cannot: relations between flags.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.patch_qps.is_finite() && self.patch_qps > 0.0) {
            return Err(format!(
                "--patch-qps must be a positive number, not {}",
                self.patch_qps
            ));
        }
        if self.resync_interval.is_zero() || self.backstop_interval.is_zero() {
            return Err("--resync-interval and --backstop-interval must be above zero".into());
        }
        if self.leader_election {
            let (lease, renew, retry) = (
                self.leader_election_lease_duration,
                self.leader_election_renew_deadline,
                self.leader_election_retry_period,
            );
            if retry.is_zero() || !(retry < renew && renew < lease) {
                return Err(format!(
                    "leader election needs 0 < retry period ({retry:?}) < renew deadline \
                     ({renew:?}) < lease duration ({lease:?})"
                ));
            }
            if lease < Duration::from_secs(1) {
                return Err("--leader-election-lease-duration must be at least 1s".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ReconcilerArgs,
    }

    #[test]
    fn default_matches_flag_defaults() {
        let parsed = Wrap::parse_from(["x"]).args;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", ReconcilerArgs::default())
        );
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn flags_parse_and_validate() {
        let a = Wrap::parse_from([
            "x",
            "--leader-election=false",
            "--patch-qps",
            "75",
            "--backstop-attach",
        ])
        .args;
        assert!(!a.leader_election && a.backstop_attach);
        assert_eq!(a.patch_qps, 75.0);
        let bad = ReconcilerArgs {
            patch_qps: 0.0,
            ..ReconcilerArgs::default()
        };
        assert!(bad.validate().is_err());
        let bad = ReconcilerArgs {
            leader_election_renew_deadline: Duration::from_secs(20),
            ..ReconcilerArgs::default()
        };
        assert!(bad.validate().is_err());
        assert!(Wrap::try_parse_from(["x", "--reconcile-concurrency", "0"]).is_err());
    }
}
