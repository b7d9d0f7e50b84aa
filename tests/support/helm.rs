//! The helm and kustomize binaries `tests/helm/build.sh` builds from the Go module proxy, and
//! what the chart and manifest tests do with them: render the chart (`helm template`), build
//! a kustomization (`kustomize build`), lint, and read the output as YAML documents.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::manifests::repo;

/// The chart, as `helm install` gets it.
pub const CHART: &str = "charts/whisperer-injector";
/// The release namespace every test renders for (the kustomize manifests' namespace).
pub const NAMESPACE: &str = "whisperer-system";

/// The version of `module` in `tests/helm/go.mod` (the one source of truth `build.sh` reads).
fn pinned(module: &str) -> String {
    let gomod = std::fs::read_to_string(repo("tests/helm/go.mod")).expect("tests/helm/go.mod");
    gomod
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            let (m, v) = if first == "require" {
                (words.next()?, words.next()?)
            } else {
                (first, words.next()?)
            };
            (m == module && v.starts_with('v')).then(|| v.to_string())
        })
        .next()
        .unwrap_or_else(|| panic!("tests/helm/go.mod does not require {module}"))
}

/// `${WHISPERER_HELM_CACHE:-<repo>/target/helm}/<helm version>/` (what `build.sh` writes).
pub fn binary_dir() -> PathBuf {
    let cache = std::env::var_os("WHISPERER_HELM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/helm"));
    cache.join(pinned("helm.sh/helm/v3"))
}

fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    assert!(
        path.is_file(),
        "{name} is missing at {}: run tests/helm/build.sh (builds helm {} and kustomize {} \
         from the Go module proxy, about 5 minutes once; .ci/run does it before cargo test)",
        path.display(),
        pinned("helm.sh/helm/v3"),
        pinned("sigs.k8s.io/kustomize/kustomize/v5"),
    );
    path
}

pub fn helm() -> PathBuf {
    binary("helm")
}

pub fn kustomize() -> PathBuf {
    binary("kustomize")
}

/// Runs a command to completion; its stdout, or a panic with the command and its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The documents of a multi-document YAML stream (empty ones, e.g. a template that renders
/// only comments, left out).
pub fn yaml_documents(what: &str, text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template whisperer charts/whisperer-injector -n whisperer-system --include-crds`,
/// with these values files and `--set` pairs, as documents.
pub fn template(values: &[&Path], set: &[&str]) -> Vec<serde_yaml::Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "whisperer"]).arg(repo(CHART)).args([
        "--namespace",
        NAMESPACE,
        "--include-crds",
    ]);
    for v in values {
        cmd.arg("--values").arg(v);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    yaml_documents("helm template", &run(&mut cmd))
}

/// `helm template` that must fail; its error output.
pub fn template_error(set: &[&str]) -> String {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "whisperer"])
        .arg(repo(CHART))
        .args(["--namespace", NAMESPACE]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(
        !out.status.success(),
        "helm template {set:?} should have failed, rendered:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kustomize build DIR`, as documents.
pub fn kustomize_build(dir: &Path) -> Vec<serde_yaml::Value> {
    let text = run(Command::new(kustomize()).arg("build").arg(dir));
    yaml_documents(&format!("kustomize build {}", dir.display()), &text)
}

/// A kustomization of the base `manifests/` plus `manifests/<component>` (what the README
/// tells users to write), built. Kustomize refuses an overlay inside the directory of its
/// base, and absolute paths, so it is written in a temp dir under `target/`.
pub fn kustomize_with_component(component: &str) -> Vec<serde_yaml::Value> {
    let parent = repo("target/tmp");
    std::fs::create_dir_all(&parent).expect("target/tmp");
    let dir = tempfile::tempdir_in(&parent).expect("temp dir");
    let up = "../../../";
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {up}manifests\ncomponents:\n  - {up}manifests/{component}\n"
        ),
    )
    .expect("write kustomization");
    kustomize_build(dir.path())
}

/// `kind/namespace/name` of a document, for messages and lookups.
pub fn object_key(doc: &serde_yaml::Value) -> String {
    let meta = &doc["metadata"];
    format!(
        "{}/{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or("?")
    )
}

/// The one document of this kind and name.
pub fn find<'a>(docs: &'a [serde_yaml::Value], kind: &str, name: &str) -> &'a serde_yaml::Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name}, found {}; objects: {:?}",
        found.len(),
        docs.iter().map(object_key).collect::<Vec<_>>()
    );
    found[0]
}

/// The arguments of the Deployment's injector container.
pub fn deployment_args(docs: &[serde_yaml::Value]) -> Vec<String> {
    find(docs, "Deployment", "whisperer-injector")["spec"]["template"]["spec"]["containers"][0]
        ["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The Deployment's arguments parsed by the injector's own CLI parser, as the container
/// runs them (the image's entrypoint is the binary; `$(POD_NAMESPACE)` expanded as the kubelet
/// does): the whole command line, and its `serve` arguments. A panic naming `what` and clap's
/// message when the manifest passes something `whisperer-injector` does not take.
pub fn parsed_serve_args(
    docs: &[serde_yaml::Value],
    what: &str,
) -> (
    whisperer_injector::cli::Cli,
    whisperer_injector::cli::ServeArgs,
) {
    use clap::Parser;
    let args = deployment_args(docs);
    let namespace = find(docs, "Deployment", "whisperer-injector")["metadata"]["namespace"]
        .as_str()
        .unwrap_or(NAMESPACE)
        .to_string();
    let argv = std::iter::once("whisperer-injector".to_string()).chain(
        args.iter()
            .map(|a| a.replace("$(POD_NAMESPACE)", &namespace)),
    );
    let cli = whisperer_injector::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| {
        panic!("{what}: whisperer-injector refuses the Deployment's arguments {args:?}:\n{e}")
    });
    match &cli.command {
        whisperer_injector::cli::Command::Serve(serve) => {
            let serve = serve.clone();
            (cli, serve)
        }
        _ => panic!("{what}: the Deployment does not run serve: {args:?}"),
    }
}
