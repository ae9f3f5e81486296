//! The email function (work in progress).
