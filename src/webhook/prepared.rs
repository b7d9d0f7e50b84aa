//! Settings with every profile's patch fragments serialized, built once per config load.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::engine::{Placement, Settings};
use crate::render::Fragments;

/// The placements a webhook injection can have (ephemeral is the reconciler's).
const PLACEMENTS: [Placement; 3] = [
    Placement::Sidecar,
    Placement::NativeSidecar,
    Placement::FirstSidecar,
];

/// [`Settings`] and, per profile and placement, the [`Fragments`] of its base injection.
#[derive(Debug)]
pub struct Prepared {
    settings: Arc<Settings>,
    fragments: BTreeMap<String, [Fragments; 3]>,
}

impl Prepared {
    pub fn new(settings: Arc<Settings>) -> Prepared {
        let fragments = settings
            .config
            .profiles
            .iter()
            .map(|(name, profile)| {
                let f = PLACEMENTS.map(|p| Fragments::new(name, profile, &settings, p));
                (name.clone(), f)
            })
            .collect();
        Prepared {
            settings,
            fragments,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn fragments(&self, profile: &str, placement: Placement) -> Option<&Fragments> {
        let i = PLACEMENTS.iter().position(|p| *p == placement)?;
        self.fragments.get(profile).map(|f| &f[i])
    }
}

/// The [`Prepared`] of the settings in force: rebuilt on the first request after a reload
/// (compared by pointer, so a request pays one atomic load when nothing changed).
#[derive(Debug)]
pub struct PreparedCache(ArcSwap<Prepared>);

impl PreparedCache {
    pub fn new(settings: Arc<Settings>) -> PreparedCache {
        PreparedCache(ArcSwap::from_pointee(Prepared::new(settings)))
    }

    pub fn get(&self, current: &Arc<Settings>) -> Arc<Prepared> {
        let cached = self.0.load_full();
        if Arc::ptr_eq(&cached.settings, current) {
            return cached;
        }
        let fresh = Arc::new(Prepared::new(current.clone()));
        self.0.store(fresh.clone());
        fresh
    }
}
