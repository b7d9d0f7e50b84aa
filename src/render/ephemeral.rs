//! Plan -> `EphemeralContainer`. The API forbids ports, probes, resources and lifecycle
//! hooks on ephemeral containers (and a restart policy other than none), so they are
//! dropped here rather than rejected by the API server.

use k8s_openapi::api::core::v1::EphemeralContainer;

use crate::engine::Plan;

pub fn ephemeral_container(plan: &Plan) -> EphemeralContainer {
    let c = &plan.container;
    EphemeralContainer {
        name: c.name.clone(),
        image: c.image.clone(),
        image_pull_policy: c.image_pull_policy.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c.env.clone(),
        env_from: c.env_from.clone(),
        security_context: c.security_context.clone(),
        volume_mounts: c.volume_mounts.clone(),
        working_dir: c.working_dir.clone(),
        stdin: c.stdin,
        tty: c.tty,
        termination_message_path: c.termination_message_path.clone(),
        termination_message_policy: c.termination_message_policy.clone(),
        target_container_name: plan.target_container.clone(),
        // Deliberately absent: ports, liveness/readiness/startup probes, resources,
        // resize policy, lifecycle, restart policy (rules).
        ..Default::default()
    }
}
