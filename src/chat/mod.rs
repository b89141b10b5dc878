//! The chat itself, with no I/O: what lines mean. Sessions (login and chat
//! states), the roster of who is online. It sees only lines and time, and
//! answers with actions; which transport carried a line is not its
//! business.

pub mod session;
