//! One way to reach the cluster for every command: a named kubeconfig must work; without one,
//! kube's own search ($KUBECONFIG, ~/.kube/config, the in-cluster service account).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot reach the cluster: {0}")]
    Kube(#[from] kube::Error),
}

pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let Some(path) = kubeconfig else {
        return Ok(kube::Client::try_default().await?);
    };
    let bad = |source| ClientError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(bad)?;
    Ok(kube::Client::try_from(config)?)
}
