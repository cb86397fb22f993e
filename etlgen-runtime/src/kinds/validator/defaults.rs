//! Which of the client's row hooks are the trait's defaults.
//!
//! The validator can check and batch CSV rows without building a JSON map per row only
//! when nothing but the defaults sees the rows. Rust cannot ask whether a trait method is
//! overridden, so each default body of [`super::Hooks`] notes that it ran, for its own
//! implementing type and hook; the validator calls a hook once on a real row, as it always
//! would, and reads the note. An override never runs that body (it can call the public free
//! function, which notes nothing, or another type's default, which notes the other type),
//! so the answer is exact and holds for every later row.

use std::any::TypeId;
use std::cell::Cell;

/// A row hook of [`super::Hooks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    ValidateRow,
    Map,
    ChooseOutput,
}

thread_local! {
    static RAN: Cell<Option<(TypeId, Hook)>> = const { Cell::new(None) };
}

/// Called by the default body of `hook` in `H`'s implementation.
pub(super) fn ran<H: ?Sized + 'static>(hook: Hook) {
    RAN.set(Some((TypeId::of::<H>(), hook)));
}

/// Runs `call` (one call of `hook` on `H`) and says whether it ran `H`'s default body.
/// Hooks are synchronous, so the note is made on this thread.
pub(super) fn probe<H: ?Sized + 'static, R>(hook: Hook, call: impl FnOnce() -> R) -> (R, bool) {
    RAN.set(None);
    let out = call();
    (out, RAN.take() == Some((TypeId::of::<H>(), hook)))
}

/// What the validator has learnt about a run's hooks: `None` until a hook has been called.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Known {
    pub(super) validate_row: Option<bool>,
    pub(super) map: Option<bool>,
    pub(super) choose_output: Option<bool>,
}

impl Known {
    /// Whether every hook that sees single rows is known to be a default.
    pub(super) fn row_hooks_default(&self) -> bool {
        self.validate_row == Some(true) && self.map == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Record;
    use crate::kinds::validator::{Hooks, Settings};

    #[derive(Default)]
    struct Plain;
    impl Hooks for Plain {}

    #[derive(Default)]
    struct Custom;
    impl Hooks for Custom {
        fn validate_row(&self, row: &mut Record, settings: &Settings) -> Result<(), String> {
            crate::kinds::validator::validate_row(row, settings)
        }
        fn map(&self, row: Record) -> Result<Record, String> {
            Plain.map(row)
        }
    }

    #[test]
    fn a_default_body_is_told_from_an_override() {
        let settings = Settings::default();
        let mut row = Record::new();
        let (_, default) = probe::<Plain, _>(Hook::ValidateRow, || {
            Plain.validate_row(&mut row, &settings)
        });
        assert!(default);
        let (_, default) = probe::<Custom, _>(Hook::ValidateRow, || {
            Custom.validate_row(&mut row, &settings)
        });
        assert!(!default, "an override calling the free function");
        let (_, default) = probe::<Custom, _>(Hook::Map, || Custom.map(Record::new()));
        assert!(!default, "an override delegating to another type's default");
        let (_, default) = probe::<Plain, _>(Hook::Map, || Plain.validate_row(&mut row, &settings));
        assert!(!default, "another hook's default");
    }

    #[test]
    fn row_hooks_are_default_only_once_both_are_known() {
        let mut known = Known {
            validate_row: Some(true),
            ..Known::default()
        };
        assert!(!known.row_hooks_default());
        known.map = Some(true);
        assert!(known.row_hooks_default());
        known.validate_row = Some(false);
        assert!(!known.row_hooks_default());
    }
}
