//! One trait and one register macro per plugin kind.

use crate::__bindings::{embedder, extractor, policy, redactor};
use crate::Result;

/// One sensitive span found by a [`Redactor`].
pub use redactor::exports::memhost::plugin0_1_0::redactor::Finding;

/// An entity, a fact, a time and everything an [`Extractor`] returns; the
/// context it is given.
pub use extractor::exports::memhost::plugin0_2_0::extractor::{
    Context as ExtractContext, Entity, EventTime, Extraction, Fact,
};

/// The records a [`Policy`] works with.
pub use policy::exports::memhost::plugin0_1_0::policy::{
    Action, ActionKind, Actor, Decision, Outcome, Requirement, Vote,
};

/// What an [`Embedder`] says about its model.
pub use embedder::exports::memhost::plugin0_1_0::embedder::ModelInfo;

impl Finding {
    /// A finding for the byte range `start..end` of the input.
    pub fn new(
        start: usize,
        end: usize,
        label: impl Into<String>,
        replacement: impl Into<String>,
    ) -> Self {
        Finding {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
            label: label.into(),
            replacement: replacement.into(),
        }
    }
}

impl Entity {
    /// An entity called `name` of kind `kind` (`person`, `place`, ...).
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Entity {
            name: name.into(),
            kind: kind.into(),
        }
    }
}

impl Fact {
    /// The statement `subject predicate object`.
    pub fn new(
        subject: impl Into<String>,
        predicate: impl Into<String>,
        object: impl Into<String>,
    ) -> Self {
        Fact {
            subject: subject.into(),
            predicate: predicate.into(),
            object: object.into(),
        }
    }
}

// The type is generated, so it cannot carry a derive.
#[allow(clippy::derivable_impls)]
impl Default for Extraction {
    fn default() -> Self {
        Extraction {
            entities: Vec::new(),
            facts: Vec::new(),
            tags: Vec::new(),
            event_times: Vec::new(),
        }
    }
}

impl Requirement {
    /// `n` approvals from agents of any type.
    pub fn approvals(n: u32, summary: impl Into<String>) -> Self {
        Requirement {
            summary: summary.into(),
            approvals_needed: n,
            approver_types: Vec::new(),
        }
    }

    /// `n` approvals from agents of the given types only.
    pub fn approvals_from(
        n: u32,
        approver_types: impl IntoIterator<Item = impl Into<String>>,
        summary: impl Into<String>,
    ) -> Self {
        Requirement {
            summary: summary.into(),
            approvals_needed: n,
            approver_types: approver_types.into_iter().map(Into::into).collect(),
        }
    }
}

/// Finds sensitive spans (PII, secrets) in text.
///
/// The host applies the findings: it replaces each span with the finding's
/// replacement, and shows the labels (never the values) to policies and
/// callers.
pub trait Redactor: Sized + 'static {
    /// Create the plugin. Read configuration here with [`crate::config`];
    /// return [`crate::Error::Config`] naming the key when something is missing.
    fn new() -> Result<Self>;

    /// Every sensitive span in `text`, as byte offsets.
    fn redact(&self, text: &str) -> Result<Vec<Finding>>;
}

/// Extracts entities, facts, tags and times from a memory's text.
///
/// Implement [`Extractor::extract`] for what the words alone say; implement
/// [`Extractor::extract_in_context`] instead to place relative times
/// ("yesterday") from when the memory was said.
pub trait Extractor: Sized + 'static {
    /// Create the plugin.
    fn new() -> Result<Self>;

    /// Entities, facts and suggested tags in `text`. Default: nothing.
    fn extract(&self, text: &str) -> Result<Extraction> {
        let _ = text;
        Ok(Extraction::default())
    }

    /// Everything [`Extractor::extract`] finds, plus the times `text`
    /// refers to, placed from `context.observed_at`. Default: `extract`.
    fn extract_in_context(&self, text: &str, context: &ExtractContext) -> Result<Extraction> {
        let _ = context;
        self.extract(text)
    }
}

/// A governance policy.
///
/// `evaluate` decides what happens to an action; `tally` decides, after each
/// vote, whether an action that needed approval may now run. The default
/// `tally` re-evaluates the action and applies [`standard_tally`] to the
/// requirement, which is what most policies want.
pub trait Policy: Sized + 'static {
    /// Create the plugin.
    fn new() -> Result<Self>;

    /// Allow, deny, or require approval for `action`.
    fn evaluate(&self, action: &Action) -> Result<Decision>;

    /// Count `votes` on an action this policy required approval for.
    fn tally(&self, action: &Action, votes: &[Vote]) -> Result<Outcome> {
        Ok(match self.evaluate(action)? {
            // Allowed now (the policy changed since the action was held):
            // a rejection still rejects.
            Decision::Allow => match votes.iter().find(|v| !v.approve) {
                Some(no) => Outcome::Rejected(format!("rejected by {}", no.voter.agent_id)),
                None => Outcome::Approved,
            },
            Decision::Deny(reason) => Outcome::Rejected(reason),
            Decision::RequireApproval(requirement) => standard_tally(&requirement, votes),
        })
    }
}

/// The usual way to count votes against a requirement.
///
/// Only votes from eligible agents count (any type when the requirement
/// lists none). One eligible rejection rejects the action; otherwise it is
/// approved once enough eligible approvals are in.
pub fn standard_tally(requirement: &Requirement, votes: &[Vote]) -> Outcome {
    let eligible = |vote: &&Vote| {
        requirement.approver_types.is_empty()
            || requirement
                .approver_types
                .iter()
                .any(|t| t == &vote.voter.agent_type)
    };
    if let Some(no) = votes.iter().filter(eligible).find(|v| !v.approve) {
        let why = no
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        return Outcome::Rejected(format!("rejected by {}{why}", no.voter.agent_id));
    }
    let approvals = u32::try_from(votes.iter().filter(eligible).count()).unwrap_or(u32::MAX);
    if approvals >= requirement.approvals_needed {
        Outcome::Approved
    } else {
        Outcome::Pending(requirement.approvals_needed - approvals)
    }
}

/// Turns text into vectors.
///
/// The host keeps an embedder's instance warm between calls, so expensive
/// state (model weights) built in `new` is reused. Outbound HTTP is available
/// through [`crate::http`], to the hosts the operator granted.
pub trait Embedder: Sized + 'static {
    /// Create the plugin; load model weights here.
    fn new() -> Result<Self>;

    /// The model's id, dimensions and the largest batch `embed` accepts.
    fn model(&self) -> Result<ModelInfo>;

    /// One vector per text, in order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// The scaffolding every register macro shares: an export type whose
/// methods run on one lazily created instance of the plugin (`INSTANCE`),
/// exported through the world's generated export macro.
#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    ($world:ident, $package:ident, $export:ident, $ty:ty, { $($methods:tt)* }) => {
        // Exports exist only in the component; natively (unit tests) the
        // plugin is an ordinary library.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __MemhostExport;
            ::std::thread_local! {
                static INSTANCE: ::core::cell::OnceCell<$ty> =
                    const { ::core::cell::OnceCell::new() };
            }
            impl $crate::__bindings::$world::exports::memhost::$package::$world::Guest
                for __MemhostExport
            {
                $($methods)*
            }
            $crate::$export!(__MemhostExport with_types_in $crate::__bindings::$world);
        };
        $crate::__api_version_section!();
    };
}

/// Register `$ty`, which implements [`Redactor`], as this component's export.
#[macro_export]
macro_rules! register_redactor {
    ($ty:ty) => {
        $crate::__register!(redactor, plugin0_1_0, __export_redactor_plugin_impl, $ty, {
            fn redact(
                text: ::std::string::String,
            ) -> $crate::Result<::std::vec::Vec<$crate::Finding>> {
                $crate::__private::with_instance(&INSTANCE, <$ty as $crate::Redactor>::new, |p| {
                    $crate::Redactor::redact(p, &text)
                })
            }
        });
    };
}

/// Register `$ty`, which implements [`Extractor`], as this component's export.
#[macro_export]
macro_rules! register_extractor {
    ($ty:ty) => {
        $crate::__register!(
            extractor,
            plugin0_2_0,
            __export_extractor_plugin_impl,
            $ty,
            {
                fn extract(
                    text: ::std::string::String,
                    context: $crate::ExtractContext,
                ) -> $crate::Result<$crate::Extraction> {
                    $crate::__private::with_instance(
                        &INSTANCE,
                        <$ty as $crate::Extractor>::new,
                        |p| $crate::Extractor::extract_in_context(p, &text, &context),
                    )
                }
            }
        );
    };
}

/// Register `$ty`, which implements [`Policy`], as this component's export.
#[macro_export]
macro_rules! register_policy {
    ($ty:ty) => {
        $crate::__register!(policy, plugin0_1_0, __export_policy_plugin_impl, $ty, {
            fn evaluate(action: $crate::Action) -> $crate::Result<$crate::Decision> {
                $crate::__private::with_instance(&INSTANCE, <$ty as $crate::Policy>::new, |p| {
                    $crate::Policy::evaluate(p, &action)
                })
            }
            fn tally(
                action: $crate::Action,
                votes: ::std::vec::Vec<$crate::Vote>,
            ) -> $crate::Result<$crate::Outcome> {
                $crate::__private::with_instance(&INSTANCE, <$ty as $crate::Policy>::new, |p| {
                    $crate::Policy::tally(p, &action, &votes)
                })
            }
        });
    };
}

/// Register `$ty`, which implements [`Embedder`], as this component's export.
#[macro_export]
macro_rules! register_embedder {
    ($ty:ty) => {
        $crate::__register!(embedder, plugin0_1_0, __export_embedder_plugin_impl, $ty, {
            fn model() -> $crate::Result<$crate::ModelInfo> {
                $crate::__private::with_instance(&INSTANCE, <$ty as $crate::Embedder>::new, |p| {
                    $crate::Embedder::model(p)
                })
            }
            fn embed(
                texts: ::std::vec::Vec<::std::string::String>,
            ) -> $crate::Result<::std::vec::Vec<::std::vec::Vec<f32>>> {
                $crate::__private::with_instance(&INSTANCE, <$ty as $crate::Embedder>::new, |p| {
                    $crate::Embedder::embed(p, &texts)
                })
            }
        });
    };
}
