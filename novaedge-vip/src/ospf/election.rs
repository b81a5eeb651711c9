//! Designated Router election on a broadcast network (RFC 2328 section 9.4), as a pure
//! function of what the calculating router knows: its own priority and current DR/BDR, and
//! each bidirectional neighbour's priority and the DR/BDR its last Hello declared.

use std::net::Ipv4Addr;

/// A router taking part in the election: the calculating router itself, or a neighbour in
/// state 2-Way or higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Router ID (the tie breaker).
    pub router_id: Ipv4Addr,
    /// Interface address (DR and BDR are named by it).
    pub address: Ipv4Addr,
    /// Router priority; 0 never becomes DR or BDR.
    pub priority: u8,
    /// The DR this router declares (0.0.0.0: none). For the calculating router, the
    /// interface's current DR.
    pub dr: Ipv4Addr,
    /// The BDR this router declares (0.0.0.0: none).
    pub bdr: Ipv4Addr,
}

impl Candidate {
    fn declares_dr(&self) -> bool {
        self.dr == self.address
    }
    fn declares_bdr(&self) -> bool {
        self.bdr == self.address
    }
}

/// The highest (priority, router ID).
fn best<'a>(it: impl Iterator<Item = &'a Candidate>) -> Option<&'a Candidate> {
    it.max_by_key(|c| (c.priority, c.router_id))
}

/// Steps 2 to 4: BDR, then DR, from the declarations as they stand.
fn calculate(me: &Candidate, others: &[Candidate]) -> (Ipv4Addr, Ipv4Addr) {
    let eligible: Vec<&Candidate> = std::iter::once(me)
        .chain(others)
        .filter(|c| c.priority > 0)
        .collect();
    // Step 3: the BDR among those not declaring themselves DR; those declaring themselves
    // BDR first.
    let not_dr = || eligible.iter().copied().filter(|c| !c.declares_dr());
    let bdr = best(not_dr().filter(|c| c.declares_bdr())).or_else(|| best(not_dr()));
    // Step 4: the DR among those declaring themselves DR; else the new BDR.
    let dr = best(eligible.iter().copied().filter(|c| c.declares_dr())).or(bdr);
    let addr = |c: Option<&Candidate>| c.map_or(Ipv4Addr::UNSPECIFIED, |c| c.address);
    (addr(dr), addr(bdr))
}

/// Runs the election and returns the new (DR, BDR) as interface addresses, 0.0.0.0 for none.
/// `me` is the calculating router with the interface's current DR and BDR; `others` the
/// neighbours in state 2-Way or higher (those below are ignored by the caller).
pub fn elect(me: &Candidate, others: &[Candidate]) -> (Ipv4Addr, Ipv4Addr) {
    let (dr, bdr) = calculate(me, others);
    // Step 5: if the calculating router is newly DR or BDR, or no longer is, it repeats
    // steps 2 to 4 with its new declarations, so that it is never both, and a BDR that
    // became DR is replaced as BDR.
    let was = (me.declares_dr(), me.declares_bdr());
    let now = (dr == me.address, bdr == me.address);
    if was == now {
        return (dr, bdr);
    }
    let me = Candidate { dr, bdr, ..*me };
    calculate(&me, others)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    fn c(n: u8, priority: u8) -> Candidate {
        Candidate {
            router_id: Ipv4Addr::new(10, 255, 0, n),
            address: Ipv4Addr::new(10, 0, 0, n),
            priority,
            dr: NONE,
            bdr: NONE,
        }
    }

    fn a(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn priority_zero_never_wins_and_the_first_eligible_router_becomes_both() {
        // We (priority 0) and one neighbour that does not declare anything yet: RFC step 4
        // makes the new BDR the DR too.
        let me = c(2, 0);
        let n = c(1, 1);
        assert_eq!(elect(&me, &[n]), (a(1), a(1)));
        // Nobody eligible: no DR.
        assert_eq!(elect(&me, &[c(3, 0)]), (NONE, NONE));
    }

    #[test]
    fn an_existing_dr_is_kept_even_against_a_higher_priority() {
        // Neighbour 1 (priority 1) is DR; neighbour 3 (priority 200) arrives: it becomes BDR,
        // not DR (no pre-emption).
        let me = c(2, 0);
        let mut dr = c(1, 1);
        dr.dr = a(1);
        let newcomer = c(3, 200);
        assert_eq!(elect(&me, &[dr, newcomer]), (a(1), a(3)));
    }

    #[test]
    fn highest_priority_then_router_id_wins() {
        let me = c(1, 1);
        let others = [c(2, 5), c(3, 5), c(4, 4)];
        // Nobody declares: BDR = best (3: same priority as 2, higher ID); DR = BDR; neither is
        // us, so no second pass.
        assert_eq!(elect(&me, &others), (a(3), a(3)));
    }

    #[test]
    fn we_become_dr_and_the_second_pass_picks_a_bdr() {
        // We have the highest priority and nobody declares anything: first pass makes us
        // BDR and DR; the second pass (we now declare DR) picks the best other as BDR.
        let me = c(9, 100);
        let others = [c(2, 1), c(3, 2)];
        assert_eq!(elect(&me, &others), (a(9), a(3)));
    }

    #[test]
    fn when_the_dr_goes_away_the_bdr_takes_over() {
        // We are BDR; the DR has gone (not among the neighbours any more). We become DR and
        // the next best becomes BDR.
        let mut me = c(2, 1);
        me.dr = a(1);
        me.bdr = a(2);
        let mut other = c(3, 1);
        other.dr = a(1);
        other.bdr = a(2);
        assert_eq!(elect(&me, &[other]), (a(2), a(3)));
    }

    #[test]
    fn a_declared_bdr_is_preferred_for_bdr() {
        let me = c(1, 0);
        let mut dr = c(2, 1);
        dr.dr = a(2);
        dr.bdr = a(3);
        let mut bdr = c(3, 1);
        bdr.dr = a(2);
        bdr.bdr = a(3);
        let big = c(4, 50);
        assert_eq!(elect(&me, &[dr, bdr, big]), (a(2), a(3)));
    }

    #[test]
    fn giving_up_dr_with_priority_zero() {
        // We were DR but our priority is now 0: the neighbour becomes DR and BDR.
        let mut me = c(1, 0);
        me.dr = a(1);
        let mut n = c(2, 1);
        n.dr = a(1);
        assert_eq!(elect(&me, &[n]), (a(2), a(2)));
    }
}
