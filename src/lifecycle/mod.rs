//! Changing a repository etlgen generated, without losing what its users
//! wrote: `update`, `add` and `remove` re-render and 3-way merge; `check`
//! compares the working tree with the record of the last render.
//!
//! Pure parts (the lock record and the merges) live here; reading and
//! writing the repository go through [`crate::git`] and [`crate::write`].

pub mod check;
pub mod lock;
pub mod merge;
pub mod repo;
mod tomlmerge;
