pub mod chat;
pub mod conversations;
pub mod health;
pub mod openai;
pub mod web;
