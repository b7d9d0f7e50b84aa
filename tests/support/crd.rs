//! The Attachment CRD, installed the way `kubectl apply -f manifests/crd-attachments.yaml`
//! would, and waited for until the API server serves the kind.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use whisperer_injector::reconciler::{crd, Attachment};

use super::{poll_until, WAIT};

pub async fn install_attachment_crd(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    match crds.create(&PostParams::default(), &crd()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create CRD: {e}"),
    }
    poll_until(WAIT, "Attachment CRD established and served", || {
        let (crds, client) = (crds.clone(), client.clone());
        async move {
            let c = crds.get("attachments.whisperer.dev").await.ok()?;
            let established = c
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            let served = Api::<Attachment>::all(client)
                .list(&ListParams::default())
                .await
                .is_ok();
            (established && served).then_some(())
        }
    })
    .await;
}
