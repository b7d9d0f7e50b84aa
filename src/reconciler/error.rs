//! The reconciler's error type: what can stop a start or fail one reconcile pass.

use super::metrics::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ReconcilerError {
    #[error("invalid reconciler flags: {0}")]
    Args(String),
    #[error(
        "the CustomResourceDefinition attachments.whisperer.dev is not installed \
         (kubectl apply -f manifests/crd-attachments.yaml)"
    )]
    CrdMissing,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the Attachment has no namespace")]
    NoNamespace,
    #[error("writing the status of Attachment {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("serializing a status: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<ReconcilerError>>),
}

impl ReconcilerError {
    /// The metric kind of a failed reconcile: adding or removing the finalizer, writing the
    /// status, or anything else the API server said no to.
    pub fn kind(&self) -> ErrorKind {
        use kube::runtime::finalizer::Error as F;
        match self {
            ReconcilerError::Status { .. } | ReconcilerError::Serialize(_) => ErrorKind::status,
            ReconcilerError::Finalizer(e) => match &**e {
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner.kind(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => ErrorKind::finalizer,
                F::UnnamedObject | F::InvalidFinalizer => ErrorKind::invalid_object,
            },
            ReconcilerError::NoNamespace => ErrorKind::invalid_object,
            ReconcilerError::Kube(_) | ReconcilerError::Args(_) | ReconcilerError::CrdMissing => {
                ErrorKind::attachment_api
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_the_failed_step() {
        let api = || {
            kube::Error::Api(
                kube::core::Status {
                    code: 409,
                    message: "conflict".into(),
                    ..Default::default()
                }
                .boxed(),
            )
        };
        let status = ReconcilerError::Status {
            name: "cap".into(),
            source: api(),
        };
        assert_eq!(status.kind(), ErrorKind::status);
        let wrapped = ReconcilerError::Finalizer(Box::new(
            kube::runtime::finalizer::Error::ApplyFailed(status),
        ));
        assert_eq!(wrapped.kind(), ErrorKind::status);
        let add = ReconcilerError::Finalizer(Box::new(
            kube::runtime::finalizer::Error::AddFinalizer(api()),
        ));
        assert_eq!(add.kind(), ErrorKind::finalizer);
        assert_eq!(
            ReconcilerError::NoNamespace.kind(),
            ErrorKind::invalid_object
        );
        assert_eq!(
            ReconcilerError::Kube(api()).kind(),
            ErrorKind::attachment_api
        );
    }
}
