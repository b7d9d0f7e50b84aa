//! Deleting an Attachment (detach). The finalizer holds the deletion until this ran: no pod
//! is attached any more, the status says `Detached` (best effort) and a `Detached` Event
//! says how many Whisperers keep running. Ephemeral containers cannot be removed: each
//! Whisperer stops at its deadline, or when its control API answers `stop` (the Attachment is
//! gone or being deleted, see `control/verdict.rs`), or with its pod.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::status::{write_status, CONDITION_READY};
use crate::reconciler::context::{Context, Severity};
use crate::reconciler::crd::{Attachment, Phase};
use crate::reconciler::ReconcilerError;

/// The Attachment is being deleted: stop attaching, say so, and let the finalizer go.
#[tracing::instrument(skip_all, fields(attachment = %att.name_any(), namespace = ?att.namespace()))]
pub async fn detach(att: &Attachment, ctx: &Context) -> Result<Action, ReconcilerError> {
    let ns = att.namespace().ok_or(ReconcilerError::NoNamespace)?;
    let api: Api<Attachment> = Api::namespaced(ctx.client.clone(), &ns);
    let attached = att.status.as_ref().map_or(0, |s| s.attached_pods);
    let deadline = att
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| format!("its deadline {}", t.0))
        .unwrap_or_else(|| "the control API tells it to stop".into());
    let message = format!(
        "Attachment deleted: no further pods are attached. Ephemeral containers cannot be \
         removed, so the {attached} Whisperer(s) already attached keep running until {deadline} \
         or their pod ends."
    );
    let mut st = att.status.clone().unwrap_or_default();
    st.phase = Some(Phase::Detached);
    st.conditions = vec![Condition {
        type_: CONDITION_READY.into(),
        status: "False".into(),
        reason: "Detached".into(),
        message: message.clone(),
        last_transition_time: Time(Timestamp::now()),
        observed_generation: att.metadata.generation,
    }];
    if let Err(e) = write_status(&api, att, &st).await {
        // Recording the phase is best effort; the Event below is the durable record.
        tracing::info!(error = %e, "cannot write Detached status");
    }
    let recorder = ctx.recorder();
    ctx.publish(
        &recorder,
        &att.object_ref(&()),
        Severity::Normal,
        "Detached",
        message,
    )
    .await;
    Ok(Action::await_change())
}
