"""Example governance policy written in Python with componentize-py.

Built from the same WIT contract as the Rust plugins (world
``memhost:plugin/policy-plugin``), without the memhost SDK.

| action                                   | decision                                   |
|------------------------------------------|--------------------------------------------|
| store or update tagged ``confidential``  | one approval from an agent of type ``human`` |
| purge (deleting the namespace)           | deny                                       |
| anything else, namespace policy ``allow`` | allow                                     |
| anything else, any other namespace policy | deny, naming that policy                  |

``tally`` counts votes the usual way: only votes from eligible agent types
count; one eligible rejection rejects; enough eligible approvals approve;
otherwise the action waits for the approvals still missing.
"""

from typing import List

from wit_world import exports
from wit_world.exports.policy import (
    Action,
    ActionKind,
    Decision,
    Decision_Allow,
    Decision_Deny,
    Decision_RequireApproval,
    Outcome,
    Outcome_Approved,
    Outcome_Pending,
    Outcome_Rejected,
    Requirement,
    Vote,
)

WRITES = (ActionKind.STORE, ActionKind.UPDATE)
APPROVER_TYPE = "human"


def decide(action: Action) -> Decision:
    if action.kind in WRITES and "confidential" in (t.lower() for t in action.tags):
        return Decision_RequireApproval(
            Requirement(
                f"a memory tagged confidential needs one approval from a {APPROVER_TYPE} agent",
                1,
                [APPROVER_TYPE],
            )
        )
    if action.kind == ActionKind.PURGE:
        return Decision_Deny("policy-python never allows deleting a namespace")
    config = action.policy_config.strip()
    if config == "allow":
        return Decision_Allow()
    return Decision_Deny(
        f'policy-python runs this only when the namespace policy is "allow", not "{config}"'
    )


def count(requirement: Requirement, votes: List[Vote]) -> Outcome:
    eligible = [
        v
        for v in votes
        if not requirement.approver_types or v.voter.agent_type in requirement.approver_types
    ]
    for v in eligible:
        if not v.approve:
            why = f": {v.comment}" if v.comment else ""
            return Outcome_Rejected(f"rejected by {v.voter.agent_id}{why}")
    if len(eligible) >= requirement.approvals_needed:
        return Outcome_Approved()
    return Outcome_Pending(requirement.approvals_needed - len(eligible))


class Policy(exports.Policy):
    def evaluate(self, action: Action) -> Decision:
        return decide(action)

    def tally(self, action: Action, votes: List[Vote]) -> Outcome:
        # Decide again rather than trust what was decided when the action
        # was held: the namespace's policy may have changed since.
        decision = decide(action)
        if isinstance(decision, Decision_Allow):
            return Outcome_Approved()
        if isinstance(decision, Decision_Deny):
            return Outcome_Rejected(decision.value)
        return count(decision.value, votes)
