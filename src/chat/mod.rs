//! The chat itself, with no I/O: what lines mean. Sessions (login and chat
//! states), the hub of who is online where (rooms, their rings of history,
//! catch-up, offline messages), the table of chat commands, and the rules
//! of text. It sees only lines and time, and
//! answers with actions; which transport carried a line is not its
//! business.

pub mod commands;
pub mod history;
pub mod hub;
pub mod moderation;
pub mod rooms;
pub mod session;
pub mod text;
pub mod token;
pub mod uploads;

#[cfg(test)]
mod account_tests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
