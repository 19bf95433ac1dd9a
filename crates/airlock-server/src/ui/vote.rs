//! Voting from the review UI: who may vote before trying ([`vote_eligibility`]), the form, and
//! casting the vote through [`Engine::vote`](crate::engine::Engine::vote), which enforces every
//! rule again and whose refusals are shown on the detail page as they are.

use airlock_core::{Approval, Session, Verdict, vote};
use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::Ui;
use super::approvals::{Detail, Flash, detail_page, load_detail};
use super::respond::{error_status, error_text, failure_page, page, see_other};
use super::session::{Viewer, checked};
use crate::config::HumanConfig;
use crate::engine::{self, VoteRequest};

/// The vote form as sent.
#[derive(Deserialize)]
pub(super) struct VoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    totp: String,
}

/// Whether `human` may vote on the pending `approval`, as far as that is known before trying:
/// `Err` says why not, in words for the detail page, which then shows it instead of the form.
///
/// The decision is `airlock_core::vote::eligibility`, the rule the engine checks the vote
/// against (role, one vote each, groups, maker-checker, MFA possible); only the wording is the
/// page's.
pub(super) fn vote_eligibility(
    human: &HumanConfig,
    approval: &Approval,
    session: Option<&Session>,
    allow_requester: bool,
) -> Result<(), String> {
    let h = &human.human;
    let Some(session) = session else {
        return Err(format!(
            "The session {} of this approval is missing from the journal; nobody can vote.",
            approval.session_id
        ));
    };
    let Err(refusal) = vote::eligibility(h, approval, session, allow_requester) else { return Ok(()) };
    Err(match refusal.rule {
        vote::RULE_ROLE => {
            format!("You can read this approval but can't vote: `{}` does not have the `approve` role.", h.id)
        }
        vote::RULE_VOTE_ONCE => {
            let verdict = match approval.votes.iter().find(|v| v.human == h.id).map(|v| v.verdict) {
                Some(Verdict::Deny) => "denied",
                _ => "approved",
            };
            format!("You already {verdict} this; each approver votes once.")
        }
        vote::RULE_GROUP => {
            let groups = &approval.requirements.groups;
            format!(
                "This approval needs an approver from {}; you are in {}.",
                groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(" or "),
                if h.groups.is_empty() {
                    "no group".to_string()
                } else {
                    h.groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", ")
                }
            )
        }
        vote::RULE_MAKER_CHECKER => {
            format!("`{}` requested the work of this session, so another approver must decide (maker-checker).", h.id)
        }
        vote::RULE_MFA => format!("This approval needs a TOTP code and `{}` has no TOTP secret configured.", h.id),
        _ => refusal.msg,
    })
}

/// The vote form: a comment, a TOTP code when the approval needs one, Approve or Deny.
pub(super) fn vote_form(viewer: &Viewer, d: &Detail, comment: &str) -> Markup {
    let mfa = d.approval.requirements.mfa;
    html! {
        form.vote method="post" action={ "/ui/approvals/" (d.approval.id) } {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="comment" { "Comment" }
            textarea #comment name="comment" required maxlength="4000"
                placeholder="What you checked, and why you decide this way" { (comment) }
            @if mfa {
                label for="totp" { "TOTP code" }
                input #totp .totp type="text" name="totp" inputmode="numeric" autocomplete="one-time-code"
                    pattern="[0-9]{6}" maxlength="6" required placeholder="123456";
                p.hint { "This approval needs step-up confirmation: the 6-digit code from your authenticator." }
            }
            div.buttons {
                button.approve type="submit" name="verdict" value="approve" { "Approve" }
                button.deny type="submit" name="verdict" value="deny" { "Deny" }
            }
        }
    }
}

pub(super) async fn vote(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<VoteForm>,
) -> Response {
    let viewer = match checked(&ui, &headers, &form.csrf) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let verdict = match form.verdict.as_str() {
        "approve" => Some(Verdict::Approve),
        "deny" => Some(Verdict::Deny),
        _ => None,
    };
    let result = match verdict {
        Some(verdict) => {
            let totp = Some(form.totp.trim().to_string()).filter(|t| !t.is_empty());
            let request = VoteRequest { verdict, comment: form.comment.clone(), totp };
            ui.engine().vote(&viewer.human, &id, request).await.map(|_| verdict)
        }
        None => Err(engine::Error::Invalid("choose Approve or Deny".to_string())),
    };
    match result {
        Ok(verdict) => {
            let v = match verdict {
                Verdict::Approve => "approve",
                Verdict::Deny => "deny",
            };
            tracing::info!(human = %viewer.human.human.id, approval = %id, verdict = v, "vote cast in the review UI");
            see_other(&format!("/ui/approvals/{id}?voted={v}"))
        }
        Err(e) => {
            let status = error_status(&e);
            let message = error_text(&e);
            match load_detail(&ui, &id).await {
                Ok(d) => {
                    let pending = ui.pending_count().await;
                    page(status, detail_page(&viewer, &d, pending, Some(Flash::Error(message)), &form.comment))
                }
                Err(e) => failure_page(Some(&viewer), &e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use airlock_core::{ApprovalRequirements, ApprovalStatus, Human, Role, Vote};
    use chrono::Utc;

    use super::*;

    fn human(groups: &[&str], roles: Vec<Role>, totp: bool) -> HumanConfig {
        HumanConfig {
            human: Human {
                id: "alice".into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                roles,
                has_totp: totp,
            },
            token_hash: None,
            totp_secret: totp.then(|| "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".to_string()),
        }
    }

    fn approval(groups: &[&str], mfa: bool, voters: &[&str]) -> Approval {
        let now = Utc::now();
        Approval {
            id: "apr_1".into(),
            action_id: "act_1".into(),
            session_id: "ses_1".into(),
            agent_id: "bot".into(),
            digest: "sha256:0".into(),
            requirements: ApprovalRequirements {
                quorum: 2,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                mfa,
                ttl_seconds: 3600,
                rules: Vec::new(),
            },
            status: ApprovalStatus::Pending,
            votes: voters
                .iter()
                .map(|h| Vote {
                    human: h.to_string(),
                    verdict: Verdict::Deny,
                    comment: "no".into(),
                    mfa: false,
                    totp_step: None,
                    groups: Vec::new(),
                    at: now,
                })
                .collect(),
            created_at: now,
            expires_at: now,
            resolved_at: None,
        }
    }

    fn session(on_behalf_of: Option<&str>) -> Session {
        Session {
            on_behalf_of: on_behalf_of.map(str::to_string),
            actions: 1,
            ..Session::opened("ses_1".into(), "bot".into(), "t".into(), Utc::now())
        }
    }

    /// The page's wording of each of the engine's vote rules.
    #[test]
    fn vote_eligibility_checks_role_vote_once_groups_maker_checker_and_mfa() {
        let approver = human(&["sre"], vec![Role::Approve], false);
        let s = session(None);
        let eligible = |h: &HumanConfig, a: &Approval| vote_eligibility(h, a, Some(&s), false);
        assert_eq!(eligible(&approver, &approval(&[], false, &["bob"])), Ok(()));
        assert_eq!(eligible(&approver, &approval(&["ops", "sre"], false, &[])), Ok(()));
        let refused = |h: &HumanConfig, a: &Approval| eligible(h, a).unwrap_err();
        assert_eq!(
            refused(&human(&["sre"], vec![Role::Admin], false), &approval(&[], false, &[])),
            "You can read this approval but can't vote: `alice` does not have the `approve` role."
        );
        assert_eq!(
            refused(&approver, &approval(&[], false, &["alice"])),
            "You already denied this; each approver votes once."
        );
        assert_eq!(
            refused(&approver, &approval(&["ops", "db"], false, &[])),
            "This approval needs an approver from `ops` or `db`; you are in `sre`."
        );
        assert_eq!(
            refused(&human(&[], vec![Role::Approve], false), &approval(&["ops"], false, &[])),
            "This approval needs an approver from `ops`; you are in no group."
        );
        assert_eq!(
            refused(&approver, &approval(&[], true, &[])),
            "This approval needs a TOTP code and `alice` has no TOTP secret configured."
        );
        assert_eq!(eligible(&human(&[], vec![Role::Approve], true), &approval(&[], true, &[])), Ok(()));
        // Maker-checker: the requester is refused, unless the configuration allows it.
        let mine = session(Some("alice"));
        assert_eq!(
            vote_eligibility(&approver, &approval(&[], false, &[]), Some(&mine), false).unwrap_err(),
            "`alice` requested the work of this session, so another approver must decide (maker-checker)."
        );
        assert_eq!(vote_eligibility(&approver, &approval(&[], false, &[]), Some(&mine), true), Ok(()));
    }
}
