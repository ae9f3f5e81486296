//! The enrich function (work in progress).
