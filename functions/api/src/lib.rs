//! The api function (work in progress).
