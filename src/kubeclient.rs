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
    #[error("no usable kubeconfig or in-cluster credentials: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot reach the cluster: {0}")]
    Kube(#[from] kube::Error),
}

/// How a user-facing command reaches the cluster, as kubectl's own flags say it.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions<'a> {
    pub kubeconfig: Option<&'a Path>,
    /// Kubeconfig context (`--context`); the current one when unset.
    pub context: Option<&'a str>,
    /// Act as this user (`--as`), with these groups (`--as-group`).
    pub impersonate: Option<&'a str>,
    pub impersonate_groups: &'a [String],
}

pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let opts = ClientOptions {
        kubeconfig,
        ..Default::default()
    };
    Ok(kube::Client::try_from(config(&opts).await?)?)
}

/// The `kube::Config` for `opts`; its `default_namespace` is the context's namespace.
pub async fn config(opts: &ClientOptions<'_>) -> Result<kube::Config, ClientError> {
    let kc_opts = kube::config::KubeConfigOptions {
        context: opts.context.map(str::to_string),
        ..Default::default()
    };
    let mut config =
        match opts.kubeconfig {
            Some(path) => {
                let bad = |source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                };
                let kc = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
                kube::Config::from_custom_kubeconfig(kc, &kc_opts)
                    .await
                    .map_err(bad)?
            }
            None if opts.context.is_some() => kube::Config::from_kubeconfig(&kc_opts)
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: "$KUBECONFIG or ~/.kube/config".into(),
                    source,
                })?,
            None => kube::Config::infer().await?,
        };
    if let Some(user) = opts.impersonate {
        config.auth_info.impersonate = Some(user.to_string());
    }
    if !opts.impersonate_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(opts.impersonate_groups.to_vec());
    }
    Ok(config)
}
