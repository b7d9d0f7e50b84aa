//! What the proxy knows: IP -> name (pods, services) and hostAliases name -> IPs.
//!
//! Entries are keyed by object uid. An IP claimed by several objects at once (a pod deleted
//! while its IP is already reused) resolves to the claimant with the newest
//! `creationTimestamp`; removing one claimant never removes another's record.
//!
//! The table also knows which pod IPs belong to pods carrying a Whisperer (a live container
//! with a configured profile image, see [`super::whisperer`]): those sources may read names.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{HostAlias, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::{DnsError, DEFAULT_CLUSTER_DOMAIN};

/// Which kind of object claims an IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Service,
}

/// Identity of a claimant: kind + uid (or `namespace/name` when an object carries no uid).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub kind: Kind,
    pub uid: String,
}

/// One object's contribution to the table, derived from a Pod or Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRecord {
    pub key: OwnerKey,
    pub created: Option<Timestamp>,
    pub fqdn: Name,
    pub ips: Vec<IpAddr>,
    /// Keyed hashes of the images of the pod's live containers (empty for services).
    pub images: Arc<[u64]>,
}

#[derive(Clone, Debug)]
struct Claim {
    key: OwnerKey,
    created: Option<Timestamp>,
    fqdn: Name,
    images: Arc<[u64]>,
}

#[derive(Default)]
struct IpState {
    /// Owner -> the IPs it claims (to undo a claim on update or delete).
    owners: HashMap<OwnerKey, Vec<IpAddr>>,
    /// IP -> claimants, newest first.
    by_ip: HashMap<IpAddr, Vec<Claim>>,
}

/// Concurrent name table. Reads take a shared lock (IPs) or an atomic snapshot (aliases).
pub struct NameTable {
    /// `pod.<cluster-domain>.`
    pod_zone: Name,
    /// `svc.<cluster-domain>.`
    svc_zone: Name,
    ips: RwLock<IpState>,
    aliases: ArcSwap<HashMap<Name, Arc<[IpAddr]>>>,
    /// Images are kept as hashes (8 bytes per container instead of the image string). The key
    /// is random per process, so nobody can pick an image name that collides with a profile's.
    image_hasher: RandomState,
    /// Hashes of every profile's image.
    whisperer_images: ArcSwap<HashSet<u64>>,
}

impl NameTable {
    /// A table for `cluster_domain` (e.g. `cluster.local`). An invalid domain falls back to
    /// `cluster.local` with a warning; use [`NameTable::try_new`] to get the error instead.
    pub fn new(cluster_domain: &str) -> Self {
        let (pod_zone, svc_zone) = zones(cluster_domain).unwrap_or_else(|error| {
            tracing::warn!(%error, "falling back to {DEFAULT_CLUSTER_DOMAIN}");
            // The default is a constant valid name; the root fallback is never taken.
            zones(DEFAULT_CLUSTER_DOMAIN).unwrap_or((Name::root(), Name::root()))
        });
        Self::with_zones(pod_zone, svc_zone)
    }

    /// Like [`NameTable::new`], but rejects an invalid cluster domain.
    pub fn try_new(cluster_domain: &str) -> Result<Self, DnsError> {
        let (pod_zone, svc_zone) = zones(cluster_domain)?;
        Ok(Self::with_zones(pod_zone, svc_zone))
    }

    fn with_zones(pod_zone: Name, svc_zone: Name) -> Self {
        Self {
            pod_zone,
            svc_zone,
            ips: RwLock::new(IpState::default()),
            aliases: ArcSwap::from_pointee(HashMap::new()),
            image_hasher: RandomState::new(),
            whisperer_images: ArcSwap::from_pointee(HashSet::new()),
        }
    }

    /// Upsert a pod from `status.podIPs` (or `status.podIP`). Host-network pods (their IP is the
    /// node's) and finished pods (`Succeeded`/`Failed`, their IP is released) claim nothing.
    pub fn apply_pod(&self, pod: &Pod) {
        if let Some(record) = self.pod_record(pod) {
            self.upsert(record);
        }
    }

    /// Drop a pod's claims (only its own: a newer owner of the same IP keeps its record).
    pub fn delete_pod(&self, pod: &Pod) {
        self.remove(&owner_key(Kind::Pod, &pod.metadata));
    }

    /// Upsert a service from `spec.clusterIPs` (or `spec.clusterIP`), skipping `None`.
    pub fn apply_service(&self, svc: &Service) {
        if let Some(record) = self.service_record(svc) {
            self.upsert(record);
        }
    }

    /// Drop a service's claims.
    pub fn delete_service(&self, svc: &Service) {
        self.remove(&owner_key(Kind::Service, &svc.metadata));
    }

    /// Replace every record of `kind` at once (after a watch re-list): owners not in `records`
    /// vanish, the others are upserted.
    pub fn replace_kind(&self, kind: Kind, records: Vec<OwnerRecord>) {
        let keep: HashSet<&OwnerKey> = records.iter().map(|r| &r.key).collect();
        let mut state = self.write();
        let stale: Vec<OwnerKey> = state
            .owners
            .keys()
            .filter(|k| k.kind == kind && !keep.contains(k))
            .cloned()
            .collect();
        for key in &stale {
            remove_locked(&mut state, key);
        }
        for record in records.iter().filter(|r| r.key.kind == kind) {
            upsert_locked(&mut state, record.clone());
        }
    }

    /// Replace the hostAliases names (every profile's, merged). Names are case-insensitive;
    /// an IP listed twice for a name is kept once; unparsable IPs or names are skipped.
    pub fn set_host_aliases(&self, aliases: &[HostAlias]) {
        let mut merged: HashMap<Name, Vec<IpAddr>> = HashMap::new();
        for alias in aliases {
            let Ok(ip) = alias.ip.trim().parse::<IpAddr>() else {
                tracing::warn!(ip = %alias.ip, "hostAliases entry with an invalid IP skipped");
                continue;
            };
            for host in alias.hostnames.iter().flatten() {
                let Some(name) = absolute_name(host) else {
                    tracing::warn!(%host, "hostAliases entry with an invalid name skipped");
                    continue;
                };
                let ips = merged.entry(name).or_default();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        let table = merged.into_iter().map(|(n, ips)| (n, ips.into())).collect();
        self.aliases.store(Arc::new(table));
    }

    /// Replace the images that make a container a Whisperer (every profile's `image`).
    pub fn set_whisperer_images<'a>(&self, images: impl IntoIterator<Item = &'a str>) {
        let hashes = images
            .into_iter()
            .map(|image| self.image_hasher.hash_one(image))
            .collect();
        self.whisperer_images.store(Arc::new(hashes));
    }

    /// Whether `ip` is (now) the IP of a pod carrying a live Whisperer container. Host-network
    /// pods claim no IP, so a node's address is never trusted this way.
    pub fn is_whisperer_ip(&self, ip: IpAddr) -> bool {
        let wanted = self.whisperer_images.load();
        if wanted.is_empty() {
            return false;
        }
        let state = self.read();
        let Some(claim) = state.by_ip.get(&ip.to_canonical()).and_then(|c| c.first()) else {
            return false;
        };
        claim.key.kind == Kind::Pod && claim.images.iter().any(|h| wanted.contains(h))
    }

    /// `(pods, services)` currently claiming at least one IP.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.read();
        let pods = state.owners.keys().filter(|k| k.kind == Kind::Pod).count();
        (pods, state.owners.len() - pods)
    }

    /// Number of hostAliases names.
    pub fn alias_count(&self) -> usize {
        self.aliases.load().len()
    }

    /// The name for `ip`, if any object claims it (newest claimant wins).
    pub fn lookup_ip(&self, ip: IpAddr) -> Option<Name> {
        self.read()
            .by_ip
            .get(&ip)
            .and_then(|claims| claims.first())
            .map(|c| c.fqdn.clone())
    }

    /// The IPs of a hostAliases name (`name` must be fully qualified; case-insensitive).
    pub fn lookup_alias(&self, name: &Name) -> Option<Arc<[IpAddr]>> {
        self.aliases.load().get(name).cloned()
    }

    /// A pod's record (possibly with no IPs), or `None` when the pod has no name.
    pub fn pod_record(&self, pod: &Pod) -> Option<OwnerRecord> {
        let meta = &pod.metadata;
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let status = pod.status.as_ref();
        let finished = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let mut texts: Vec<&str> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .collect();
        if texts.is_empty() {
            texts.extend(status.and_then(|s| s.pod_ip.as_deref()));
        }
        let ips = if host_network || finished {
            Vec::new()
        } else {
            parse_ips(texts)
        };
        let images = super::whisperer::live_images(pod)
            .into_iter()
            .map(|image| self.image_hasher.hash_one(image))
            .collect();
        self.record(Kind::Pod, meta, &self.pod_zone, ips, images)
    }

    /// A service's record (possibly with no IPs), or `None` when the service has no name.
    pub fn service_record(&self, svc: &Service) -> Option<OwnerRecord> {
        let spec = svc.spec.as_ref();
        let mut texts: Vec<&str> = spec
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if texts.is_empty() {
            texts.extend(spec.and_then(|s| s.cluster_ip.as_deref()));
        }
        let ips = parse_ips(texts);
        self.record(
            Kind::Service,
            &svc.metadata,
            &self.svc_zone,
            ips,
            Arc::new([]),
        )
    }

    fn record(
        &self,
        kind: Kind,
        meta: &ObjectMeta,
        zone: &Name,
        ips: Vec<IpAddr>,
        images: Arc<[u64]>,
    ) -> Option<OwnerRecord> {
        let name = meta.name.as_deref()?;
        let namespace = meta.namespace.as_deref().unwrap_or("default");
        let fqdn = Name::from_ascii(format!("{name}.{namespace}"))
            .ok()?
            .append_domain(zone)
            .ok()?;
        Some(OwnerRecord {
            key: owner_key(kind, meta),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            fqdn,
            ips,
            images,
        })
    }

    fn upsert(&self, record: OwnerRecord) {
        upsert_locked(&mut self.write(), record);
    }

    fn remove(&self, key: &OwnerKey) {
        remove_locked(&mut self.write(), key);
    }

    fn read(&self) -> RwLockReadGuard<'_, IpState> {
        // A panic while holding the lock leaves consistent data (every mutation is completed
        // before the next one starts), so a poisoned lock is still usable.
        self.ips.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IpState> {
        self.ips.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// `pod.<domain>.` and `svc.<domain>.`
fn zones(cluster_domain: &str) -> Result<(Name, Name), DnsError> {
    let invalid = |reason: String| DnsError::ClusterDomain {
        domain: cluster_domain.to_owned(),
        reason,
    };
    let trimmed = cluster_domain.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(invalid("empty".to_owned()));
    }
    let zone = |prefix: &str| {
        Name::from_ascii(format!("{prefix}.{trimmed}.")).map_err(|e| invalid(e.to_string()))
    };
    Ok((zone("pod")?, zone("svc")?))
}

fn owner_key(kind: Kind, meta: &ObjectMeta) -> OwnerKey {
    let uid = match &meta.uid {
        Some(uid) if !uid.is_empty() => uid.clone(),
        _ => format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        ),
    };
    OwnerKey { kind, uid }
}

fn parse_ips(texts: Vec<&str>) -> Vec<IpAddr> {
    let mut ips = Vec::with_capacity(texts.len());
    for text in texts {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("None") {
            continue;
        }
        match text.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => tracing::debug!(ip = text, "unparsable IP ignored"),
        }
    }
    ips
}

/// `host` as a fully qualified, validated name.
fn absolute_name(host: &str) -> Option<Name> {
    let host = host.trim();
    if host.is_empty() {
        return None;
    }
    let mut name = Name::from_ascii(host).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn upsert_locked(state: &mut IpState, record: OwnerRecord) {
    remove_locked(state, &record.key);
    if record.ips.is_empty() {
        return;
    }
    for ip in &record.ips {
        let claims = state.by_ip.entry(*ip).or_default();
        claims.push(Claim {
            key: record.key.clone(),
            created: record.created,
            fqdn: record.fqdn.clone(),
            images: record.images.clone(),
        });
        // Newest first; objects without a timestamp count as oldest; uid breaks ties so the
        // order does not depend on arrival.
        claims.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.key.cmp(&a.key)));
    }
    state.owners.insert(record.key, record.ips);
}

fn remove_locked(state: &mut IpState, key: &OwnerKey) {
    let Some(ips) = state.owners.remove(key) else {
        return;
    };
    for ip in ips {
        if let Some(claims) = state.by_ip.get_mut(&ip) {
            claims.retain(|c| &c.key != key);
            if claims.is_empty() {
                state.by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests;
