//! The part every table shares: the endpoints, their weights and states, and the health logic.

use std::fmt;
use std::sync::Arc;

use crate::endpoint::{EndpointState, HealthGroup};
use crate::policy::BuildOptions;
use crate::rng::{Entropy, below};
use crate::selector::{FALLBACK_PROBES, Picked};

pub(crate) struct Members<E> {
    pub(crate) endpoints: Box<[E]>,
    pub(crate) weights: Box<[u32]>,
    pub(crate) states: Box<[Arc<EndpointState>]>,
    group: Arc<HealthGroup>,
    /// Members with a weight above 0: the only ones ever picked, and the base of the panic
    /// threshold.
    active: usize,
    panic_threshold: u8,
    pub(crate) entropy: Entropy,
}

impl<E> Members<E> {
    /// Members with state of their own, for a table built directly.
    pub(crate) fn standalone(
        endpoints: impl IntoIterator<Item = (E, u32)>,
        options: &BuildOptions,
    ) -> Self {
        let (endpoints, weights): (Vec<E>, Vec<u32>) = endpoints.into_iter().unzip();
        let group = Arc::new(HealthGroup::default());
        let states = weights
            .iter()
            .map(|&weight| {
                let state = Arc::new(EndpointState::new(group.clone()));
                if weight > 0 {
                    state.attach();
                }
                state
            })
            .collect();
        Self::from_parts(endpoints, weights, states, group, options)
    }

    /// Members over states an [`EndpointSet`](crate::EndpointSet) keeps across rebuilds; it has
    /// attached exactly the states with a weight above 0.
    pub(crate) fn from_parts(
        endpoints: Vec<E>,
        weights: Vec<u32>,
        states: Vec<Arc<EndpointState>>,
        group: Arc<HealthGroup>,
        options: &BuildOptions,
    ) -> Self {
        assert_eq!(endpoints.len(), weights.len());
        assert_eq!(endpoints.len(), states.len());
        assert!(
            u32::try_from(endpoints.len()).is_ok(),
            "a table holds at most u32::MAX endpoints, got {}",
            endpoints.len()
        );
        debug_assert!(states.iter().all(|s| Arc::ptr_eq(s.group(), &group)));
        let active = weights.iter().filter(|&&w| w > 0).count();
        Self {
            endpoints: endpoints.into_boxed_slice(),
            weights: weights.into_boxed_slice(),
            states: states.into_boxed_slice(),
            group,
            active,
            panic_threshold: options.panic_threshold.min(100),
            entropy: Entropy::new(options.seed),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether this pick must skip unhealthy members: some are unhealthy, and not so many that
    /// the set is in panic mode.
    #[inline]
    pub(crate) fn must_filter(&self) -> bool {
        let unhealthy = self.group.unhealthy();
        if unhealthy == 0 {
            return false;
        }
        let healthy = self.active.saturating_sub(unhealthy) as u64;
        healthy * 100 >= u64::from(self.panic_threshold) * self.active as u64
    }

    #[inline]
    pub(crate) fn is_healthy(&self, index: usize) -> bool {
        self.states[index].is_healthy()
    }

    #[inline]
    pub(crate) fn picked(&self, index: usize) -> Picked<'_, E> {
        Picked::new(&self.endpoints[index], index, &self.states[index])
    }

    /// The final choice given the algorithm's first one: it if health allows, else the first
    /// healthy of up to [`FALLBACK_PROBES`] `alternates` (called with 0, 1, ...), else the first
    /// healthy member with a weight above 0 scanning from a position drawn from `scan_key`.
    #[inline]
    pub(crate) fn settle(
        &self,
        first: usize,
        alternates: impl FnMut(usize) -> usize,
        scan_key: u64,
    ) -> Option<Picked<'_, E>> {
        if !self.must_filter() || self.is_healthy(first) {
            return Some(self.picked(first));
        }
        self.fall_back(alternates, scan_key)
            .map(|index| self.picked(index))
    }

    #[cold]
    fn fall_back(
        &self,
        mut alternates: impl FnMut(usize) -> usize,
        scan_key: u64,
    ) -> Option<usize> {
        (0..FALLBACK_PROBES)
            .map(&mut alternates)
            .find(|&index| self.is_healthy(index))
            .or_else(|| self.scan(scan_key))
    }

    /// One pass over the members from a position drawn from `key`: the first healthy one with
    /// a weight above 0.
    pub(crate) fn scan(&self, key: u64) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let start = below(key, n);
        (start..n)
            .chain(0..start)
            .find(|&i| self.weights[i] > 0 && self.is_healthy(i))
    }
}

impl<E: fmt::Debug> fmt::Debug for Members<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Members")
            .field("endpoints", &self.endpoints)
            .field("weights", &self.weights)
            .field("unhealthy", &self.group.unhealthy())
            .field("panic_threshold", &self.panic_threshold)
            .finish()
    }
}
