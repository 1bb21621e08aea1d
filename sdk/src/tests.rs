use crate::{Actor, Outcome, Requirement, Vote, standard_tally};

fn vote(id: &str, agent_type: &str, approve: bool) -> Vote {
    Vote {
        voter: Actor {
            agent_id: id.into(),
            agent_type: agent_type.into(),
        },
        approve,
        comment: None,
    }
}

#[test]
fn consensus_needs_enough_distinct_approvals() {
    let req = Requirement::approvals(2, "two approvals");
    assert_eq!(standard_tally(&req, &[]), Outcome::Pending(2));
    assert_eq!(
        standard_tally(&req, &[vote("a", "assistant", true)]),
        Outcome::Pending(1)
    );
    assert_eq!(
        standard_tally(
            &req,
            &[vote("a", "assistant", true), vote("b", "human", true)]
        ),
        Outcome::Approved
    );
}

#[test]
fn only_eligible_types_count_and_one_rejection_rejects() {
    let req = Requirement::approvals_from(1, ["reviewer"], "one reviewer");
    assert_eq!(
        standard_tally(&req, &[vote("a", "assistant", true)]),
        Outcome::Pending(1)
    );
    // An ineligible rejection does not sink the action.
    assert_eq!(
        standard_tally(
            &req,
            &[vote("a", "assistant", false), vote("r", "reviewer", true)]
        ),
        Outcome::Approved
    );
    assert_eq!(
        standard_tally(&req, &[vote("r", "reviewer", false)]),
        Outcome::Rejected("rejected by r".into())
    );
}
